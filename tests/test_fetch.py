"""fetch-data / resolve_data against a local replica of UCSD-AI4H/COVID-CT served over HTTP on 127.0.0.1."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
import threading
import urllib.parse
import zipfile
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest
from click.testing import CliRunner
from PIL import Image

from covid_sweep.data import fetch as fetch_mod
from covid_sweep.data.fetch import MARKER, UCSD, FetchError, convert, download, fetch, repository, resolve_data, write

# name -> (width, height, kind, official split); sizes are all different, so an output's size names its source
COVID = {
    "2020.03.16 p19 (1).png": (60, 40, "gray-png", "train"),
    "71%0.jpg": (50, 30, "rgb-jpg", "train"),
    "big scan (2).png": (500, 420, "gray-png", "train"),
    "kjr-21-e24-p5-29.png": (44, 52, "colour-png", "val"),
    "alpha %.png": (36, 48, "rgba-png", "test"),
    "p-6.jpg": (70, 34, "rgb-jpg", "test"),
}
NONCOVID = {
    "12%1.png": (62, 41, "gray-png", "train"),
    "n (2).jpg": (53, 31, "rgb-jpg", "train"),
    "26.png": (45, 55, "gray-png", "val"),
    "22%0.jpg": (66, 39, "rgb-jpg", "val"),
    "578.png": (38, 47, "colour-png", "test"),
    "60 .jpg": (71, 35, "rgb-jpg", "test"),  # a space before the dot: only .strip() of the whole line may trim
}
CLASSES = (("CT_COVID", "COVID", COVID, 200), ("CT_NonCOVID", "NonCOVID", NONCOVID, 50))

# meta rows: image -> (name cell, patient cell), written as the repository's meta files have them
COVID_META = {
    "2020.03.16 p19 (1).png": ("2020.03.16 p19 (1)", "Patient 1"),  # no extension: the image is its .png
    "71%0.jpg": ("71%0.jpg", " Patient 1 "),
    "big scan (2).png": ("  big scan (2).png ", "Patient 2"),
    "kjr-21-e24-p5-29.png": ("kjr-21-e24-p5-29.png", "Patient 3"),
    "p-6.jpg": ("p-6.jpg", "Patient 4"),
}  # "alpha %.png" (test) has no row: only train images need one
NONCOVID_META = {
    "12%1.png": ("12%1.png", "medpix_patient_1"),
    "n (2).jpg": (" n (2).jpg", " medpix_patient_1 "),
    "26.png": ("26.png", "crawled_patient_2"),
    "22%0.jpg": ("22%0.jpg", "crawled_patient_3"),
    "578.png": ("578.png", "p578"),
    "60 .jpg": ("60 .jpg ", "p60"),
}
GROUPS = {
    "CT_COVID/2020.03.16 p19 (1).png": "covid:Patient 1", "CT_COVID/71%0.jpg": "covid:Patient 1",
    "CT_COVID/big scan (2).png": "covid:Patient 2", "CT_COVID/kjr-21-e24-p5-29.png": "covid:Patient 3",
    "CT_COVID/p-6.jpg": "covid:Patient 4",
    "CT_NonCOVID/12%1.png": "noncovid:medpix_patient_1", "CT_NonCOVID/n (2).jpg": "noncovid:medpix_patient_1",
    "CT_NonCOVID/26.png": "noncovid:crawled_patient_2", "CT_NonCOVID/22%0.jpg": "noncovid:crawled_patient_3",
    "CT_NonCOVID/578.png": "noncovid:p578", "CT_NonCOVID/60 .jpg": "noncovid:p60",
}


def _image_bytes(width: int, height: int, kind: str, level: int, seed: int) -> bytes:
    """COVID images are bright (level 200) and non-COVID dark (50), so a label can be checked from pixels."""
    rng = np.random.default_rng(seed)
    gray = np.clip(rng.normal(level, 5, (height, width)), 0, 255).astype(np.uint8)
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if kind == "gray-png":
        ok, buf = cv2.imencode(".png", gray)
    elif kind == "rgb-jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    elif kind == "colour-png":
        bgr[:4, :4] = (0, 0, 255)  # a red mark, as the papers' figures have
        ok, buf = cv2.imencode(".png", bgr)
    elif kind == "rgba-png":
        bgra = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)
        bgra[:, :5, 3] = 0  # a transparent strip
        ok, buf = cv2.imencode(".png", bgra)
    else:
        raise ValueError(kind)
    assert ok
    return buf.tobytes()


def _split_list(names: list[str]) -> bytes:
    # CRLF, blank lines and blanks around names, as hand-edited lists have
    return ("\r\n" + "\r\n".join(f"  {n}\t" for n in names) + "\r\n\r\n").encode()


def write_covid_meta(path: Path, rows: list[tuple], decoy: bool = True) -> None:
    """First sheet as the repository's: File name, Patient ID, more columns, blank and id-less rows."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["File name", "Patient ID", "DOI"])
    for name, patient in rows:
        sheet.append([name, patient, "10.1000/x"])
    sheet.append([])
    sheet.append(["unlisted.png", None, "no id"])
    if decoy:  # only the first sheet counts
        workbook.create_sheet("other").append(["File name", "Patient ID"])
        workbook["other"].append(["p-6.jpg", "Patient 99"])
    workbook.save(path)


def write_noncovid_meta(path: Path, rows: list[tuple]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)  # CRLF, as Excel-written csv files have
        writer.writerow(["image name", "patient id", "caption"])
        writer.writerows((name, patient, "axial CT, lower lobes") for name, patient in rows)


def make_replica(root: Path) -> Path:
    """The repository's data files: Images-processed/CT_*.zip (top folder inside), Data-split lists, meta."""
    (root / "Images-processed").mkdir(parents=True)
    for seed, (folder, split_dir, images, level) in enumerate(CLASSES):
        with zipfile.ZipFile(root / "Images-processed" / f"{folder}.zip", "w") as archive:
            archive.writestr(f"{folder}/", b"")
            for i, (name, (w, h, kind, _)) in enumerate(images.items()):
                archive.writestr(f"{folder}/{name}", _image_bytes(w, h, kind, level, seed * 100 + i))
            archive.writestr(f"__MACOSX/{folder}/._{next(iter(images))}", b"not an image")
            archive.writestr(f"{folder}/unlisted.png", _image_bytes(10, 10, "gray-png", level, 999))
        (root / "Data-split" / split_dir).mkdir(parents=True)
        for split in ("train", "val", "test"):
            names = [n for n, spec in images.items() if spec[3] == split]
            (root / "Data-split" / split_dir / f"{split}CT_{split_dir}.txt").write_bytes(_split_list(names))
    write_covid_meta(root / "COVID-CT-MetaInfo.xlsx", list(COVID_META.values()))
    write_noncovid_meta(root / "NonCOVID-CT-MetaInfo.csv", list(NONCOVID_META.values()))
    return root


class _Handler(BaseHTTPRequestHandler):
    """Static files with Range support; the server's knobs can cut a response short or ignore Range."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        asked = self.headers.get("Range")
        srv.log.append((rel, asked))
        path = srv.root / rel
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(asked.removeprefix("bytes=").split("-")[0]) if asked and not srv.ignore_range else 0
        if start >= len(data) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cuts = srv.cut_after.get(rel)
        cut = cuts.pop(0) if cuts else None
        self.wfile.write(data[start:] if cut is None else data[start:start + cut])

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    monkeypatch.delenv(fetch_mod.BASE_URL_ENV, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(download, "TIMEOUT_S", 5)


@pytest.fixture
def replica(tmp_path) -> Path:
    return make_replica(tmp_path / "repo")


@pytest.fixture
def server(replica):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.root, srv.log, srv.cut_after, srv.ignore_range = replica, [], {}, False
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _download_cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "downloads" / UCSD  # conftest points COVID_SWEEP_CACHE at tmp_path/cache


def _expected_size(width: int, height: int) -> tuple[int, int]:
    probe = Image.new("L", (width, height))
    probe.thumbnail((384, 384))
    return probe.size


ZIP = "Images-processed/CT_COVID.zip"


# ------------------------------------------------------------------ layout, split, labels, images


def test_fetch_writes_the_competition_layout_with_the_official_split(server, tmp_path):
    dest = fetch(UCSD, tmp_path / "out", base_url=server.url)

    train, test = _rows(dest / "train.csv"), _rows(dest / "test_labels.csv")
    assert [r["file_name"] for r in train] == [f"{i}.png" for i in range(8)]
    assert [r["file_name"] for r in test] == [f"{i}.png" for i in range(4)]
    assert sorted(p.name for p in (dest / "train").iterdir()) == sorted(r["file_name"] for r in train)
    assert sorted(p.name for p in (dest / "test").iterdir()) == sorted(r["file_name"] for r in test)
    assert [int(r["COVID"]) for r in train].count(1) == 4 and [int(r["COVID"]) for r in test].count(1) == 2
    assert _rows(dest / "sample_submission.csv") == [{"file_name": r["file_name"], "COVID": "0"} for r in test]
    assert (dest / "train.csv").read_bytes().count(b"\r") == 0

    manifest = _rows(dest / "manifest.csv")
    assert list(manifest[0]) == ["file_name", "split", "COVID", "official_split", "patient_id", "source_file"]
    labels = {(split, r["file_name"]): r["COVID"] for split, rows in (("train", train), ("test", test)) for r in rows}
    specs = {f"{folder}/{n}": (int(level > 128), spec) for folder, _, images, level in CLASSES
             for n, spec in images.items()}
    assert sorted(r["source_file"] for r in manifest) == sorted(specs)  # every listed image once, unlisted ones not
    for row in manifest:
        label, (w, h, kind, official) = specs[row["source_file"]]
        assert row["official_split"] == official and row["split"] == ("test" if official == "test" else "train")
        assert row["patient_id"] == GROUPS.get(row["source_file"], "")
        assert int(row["COVID"]) == label and labels[(row["split"], row["file_name"])] == str(label)
        with Image.open(dest / row["split"] / row["file_name"]) as image:
            assert image.format == "PNG" and image.size == _expected_size(w, h)
            assert max(image.size) <= 384
            assert image.mode == ("RGB" if kind == "colour-png" else "L")
            pixels = np.asarray(image.convert("L"), dtype=float)
        # the pixels (bright = COVID in the replica) agree with the label written for that file
        bright = np.median(pixels) > 128
        assert bright == bool(label)
        assert cv2.imread(str(dest / row["split"] / row["file_name"]), cv2.IMREAD_UNCHANGED) is not None

    # groups.csv: the patient of every train image, in train.csv order
    source_of = {r["file_name"]: r["source_file"] for r in manifest if r["split"] == "train"}
    groups = _rows(dest / "groups.csv")
    assert [r["file_name"] for r in groups] == [r["file_name"] for r in train]
    assert [r["group"] for r in groups] == [GROUPS[source_of[r["file_name"]]] for r in train]
    assert (dest / "groups.csv").read_bytes().startswith(b"file_name,group\n")
    assert (dest / "groups.csv").read_bytes().count(b"\r") == 0

    source_md = (dest / "SOURCE.md").read_text()
    for needle in ("github.com/UCSD-AI4H/COVID-CT", "arXiv:2003.13865", "Yang", "copyrights", "research", server.url,
                   "`groups.csv`", "COVID-CT-MetaInfo.xlsx", "NonCOVID-CT-MetaInfo.csv"):
        assert needle in source_md
    assert (dest / MARKER).is_file()
    assert not list(tmp_path.glob(".out.*"))  # no build folder left beside DEST


def test_numbering_is_a_seeded_shuffle(replica, tmp_path):
    def labels(seed, name):
        dest = fetch(UCSD, tmp_path / name, from_dir=replica, seed=seed)
        return (dest / "train.csv").read_text(), (dest / "manifest.csv").read_text()

    first, again, other = labels(0, "a"), labels(0, "b"), labels(1, "c")
    assert first == again  # same seed, same files
    assert first != other
    train_labels = [int(line.split(",")[1]) for line in first[0].splitlines()[1:]]
    assert train_labels != sorted(train_labels) and train_labels != sorted(train_labels, reverse=True)


def test_from_dir_reads_a_folder_laid_out_like_the_repository(replica, tmp_path):
    dest = fetch(UCSD, tmp_path / "out", from_dir=replica)
    assert len(_rows(dest / "manifest.csv")) == 12
    assert str(replica) in (dest / "SOURCE.md").read_text()
    assert not _download_cache(tmp_path).exists()


@pytest.mark.parametrize("rel", ["Data-split/NonCOVID/valCT_NonCOVID.txt", "COVID-CT-MetaInfo.xlsx",
                                 "NonCOVID-CT-MetaInfo.csv"])
def test_from_dir_missing_files_are_named(replica, tmp_path, rel):
    (replica / rel).unlink()
    with pytest.raises(FetchError, match=f"missing {rel}"):
        fetch(UCSD, tmp_path / "out", from_dir=replica)


def test_a_listed_image_missing_from_the_zip_is_an_error_naming_it(replica, tmp_path):
    lst = replica / "Data-split" / "COVID" / "testCT_COVID.txt"
    lst.write_text(lst.read_text() + "ghost (1).png\n")
    with pytest.raises(FetchError, match=r"CT_COVID.zip: 1 image.*'ghost \(1\).png'"):
        fetch(UCSD, tmp_path / "out", from_dir=replica)


def test_a_train_image_without_a_patient_id_is_an_error_naming_it(replica, tmp_path):
    rows = [v for k, v in NONCOVID_META.items() if k != "n (2).jpg"]
    write_noncovid_meta(replica / "NonCOVID-CT-MetaInfo.csv", rows)
    with pytest.raises(FetchError, match=r"NonCOVID-CT-MetaInfo.csv: no patient id for train image "
                                         r"'CT_NonCOVID/n \(2\).jpg'") as caught:
        fetch(UCSD, tmp_path / "out", from_dir=replica)
    assert "\n" not in str(caught.value)


def test_a_test_image_without_a_patient_id_is_fine(replica, tmp_path):
    rows = [v for k, v in NONCOVID_META.items() if k != "578.png"]  # official test
    write_noncovid_meta(replica / "NonCOVID-CT-MetaInfo.csv", rows)
    manifest = _rows(fetch(UCSD, tmp_path / "out", from_dir=replica) / "manifest.csv")
    assert [r["patient_id"] for r in manifest if r["source_file"] == "CT_NonCOVID/578.png"] == [""]


def test_an_image_with_two_patient_ids_is_an_error_naming_the_rows(replica, tmp_path):
    rows = list(COVID_META.values()) + [("p-6.jpg", "Patient 7")]
    write_covid_meta(replica / "COVID-CT-MetaInfo.xlsx", rows, decoy=False)
    with pytest.raises(FetchError, match=r"COVID-CT-MetaInfo.xlsx: 'p-6.jpg' has patient id 'Patient 4' in row 6 "
                                         r"and 'Patient 7' in row 7"):
        fetch(UCSD, tmp_path / "out", from_dir=replica)


def test_meta_without_its_columns_or_unreadable_is_an_error_naming_the_file(replica, tmp_path):
    (replica / "NonCOVID-CT-MetaInfo.csv").write_text("image,patient\n26.png,x\n")
    with pytest.raises(FetchError, match=r"NonCOVID-CT-MetaInfo.csv: no header row with columns 'image name' and "
                                         r"'patient id'"):
        fetch(UCSD, tmp_path / "out", from_dir=replica)
    (replica / "COVID-CT-MetaInfo.xlsx").write_text("File name,Patient ID\n")
    with pytest.raises(FetchError, match=r"COVID-CT-MetaInfo.xlsx: cannot read the spreadsheet"):
        fetch(UCSD, tmp_path / "out", from_dir=replica)


def test_a_name_in_two_splits_is_refused(replica, tmp_path):
    lst = replica / "Data-split" / "COVID" / "valCT_COVID.txt"
    lst.write_text(lst.read_text() + "p-6.jpg\n")  # also in test
    with pytest.raises(FetchError, match="more than once.*p-6.jpg"):
        fetch(UCSD, tmp_path / "out", from_dir=replica)


# ------------------------------------------------------------------ DEST handling


def test_non_empty_dest_is_refused_without_force(replica, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(FetchError, match="not empty.*--force"):
        fetch(UCSD, dest, from_dir=replica)
    assert (dest / "mine.txt").read_text() == "keep"

    fetch(UCSD, dest, from_dir=replica, force=True)
    assert not (dest / "mine.txt").exists() and (dest / "train.csv").is_file()
    assert not list(tmp_path.glob(".*"))  # nothing left aside


def test_empty_existing_dest_is_fine(replica, tmp_path):
    (tmp_path / "out").mkdir()
    assert (fetch(UCSD, tmp_path / "out", from_dir=replica) / "train.csv").is_file()


def test_a_failed_build_leaves_dest_untouched(replica, tmp_path, monkeypatch):
    dest = tmp_path / "out"
    fetch(UCSD, dest, from_dir=replica)
    before = (dest / "train.csv").read_text()
    monkeypatch.setattr(write, "_write_source_md", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        fetch(UCSD, dest, from_dir=replica, seed=5, force=True)
    assert (dest / "train.csv").read_text() == before and (dest / MARKER).is_file()
    assert not list(tmp_path.glob(".*"))


# ------------------------------------------------------------------ downloading


def test_downloads_are_recorded_and_checked_on_later_use(server, tmp_path, capsys):
    fetch(UCSD, tmp_path / "a", base_url=server.url)
    cache = _download_cache(tmp_path)
    record = json.loads((cache / "downloads.json").read_text())
    assert len(record) == 10  # 2 zips, 6 split lists, 2 meta files
    zip_bytes = (server.root / ZIP).read_bytes()
    assert record[ZIP]["size"] == len(zip_bytes)
    assert record[ZIP]["sha256"] == hashlib.sha256(zip_bytes).hexdigest()
    assert record[ZIP]["url"] == f"{server.url}/{ZIP}"

    server.log.clear()
    fetch(UCSD, tmp_path / "b", base_url=server.url)
    assert server.log == []  # verified cache reused

    damaged = bytearray((cache / ZIP).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same size, other bytes
    (cache / ZIP).write_bytes(bytes(damaged))
    fetch(UCSD, tmp_path / "c", base_url=server.url)
    assert server.log == [(ZIP, None)]
    assert "does not match" in capsys.readouterr().err
    assert (cache / ZIP).read_bytes() == zip_bytes


def test_an_interrupted_download_resumes_with_range(server, tmp_path):
    size = (server.root / ZIP).stat().st_size
    server.cut_after[ZIP] = [1000, 1500]  # two broken responses, then a whole one
    fetch(UCSD, tmp_path / "out", base_url=server.url)
    assert [r for p, r in server.log if p == ZIP] == [None, "bytes=1000-", "bytes=2500-"]
    assert (_download_cache(tmp_path) / ZIP).read_bytes() == (server.root / ZIP).read_bytes()
    assert size > 2500


def test_a_part_file_from_an_earlier_run_is_resumed(server, tmp_path):
    cache = _download_cache(tmp_path)
    (cache / "Images-processed").mkdir(parents=True)
    data = (server.root / ZIP).read_bytes()
    (cache / f"{ZIP}.part").write_bytes(data[:777])
    fetch(UCSD, tmp_path / "out", base_url=server.url)
    assert [r for p, r in server.log if p == ZIP] == ["bytes=777-"]
    assert (cache / ZIP).read_bytes() == data and not (cache / f"{ZIP}.part").exists()


@pytest.mark.parametrize("extra", [0, 50], ids=["whole-part", "stale-longer-part"])
def test_a_part_the_server_cannot_extend_is_kept_if_whole_else_fetched_afresh(server, tmp_path, extra):
    cache = _download_cache(tmp_path)
    (cache / "Images-processed").mkdir(parents=True)
    data = (server.root / ZIP).read_bytes()
    (cache / f"{ZIP}.part").write_bytes(data + b"x" * extra)
    fetch(UCSD, tmp_path / "out", base_url=server.url)
    asked = [r for p, r in server.log if p == ZIP]
    assert asked == ([f"bytes={len(data)}-"] if not extra else [f"bytes={len(data) + extra}-", None])  # 416 first
    assert (cache / ZIP).read_bytes() == data


def test_a_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.ignore_range = True
    server.cut_after[ZIP] = [1000]
    fetch(UCSD, tmp_path / "out", base_url=server.url)
    assert [r for p, r in server.log if p == ZIP] == [None, "bytes=1000-"]  # asked to resume, got all (200)
    assert (_download_cache(tmp_path) / ZIP).read_bytes() == (server.root / ZIP).read_bytes()


def test_a_download_that_keeps_breaking_says_how_to_resume(server, tmp_path):
    server.cut_after[ZIP] = [100] * 10
    with pytest.raises(FetchError, match=r"interrupted 4 times.*resume.*--from-dir"):
        fetch(UCSD, tmp_path / "out", base_url=server.url)
    assert (_download_cache(tmp_path) / f"{ZIP}.part").stat().st_size == 400


def test_a_corrupt_zip_is_rejected_deleted_and_fetched_again_next_time(server, tmp_path):
    good = (server.root / ZIP).read_bytes()
    (server.root / ZIP).write_bytes(b"PK\x03\x04 this is not really a zip" * 10)
    with pytest.raises(FetchError, match=r"CT_COVID.zip.*not a valid zip.*deleted") as caught:
        fetch(UCSD, tmp_path / "out", base_url=server.url)
    assert "\n" not in str(caught.value)
    cache = _download_cache(tmp_path)
    assert not (cache / ZIP).exists() and not (cache / f"{ZIP}.part").exists()
    assert not (tmp_path / "out").exists()

    (server.root / ZIP).write_bytes(good)
    fetch(UCSD, tmp_path / "out", base_url=server.url)
    assert (cache / ZIP).read_bytes() == good


def test_a_zip_with_a_bad_crc_is_rejected(replica, tmp_path):
    path = replica / ZIP
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("CT_COVID/p-6.jpg")
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 10
    data[offset] ^= 0xFF  # stored member: flips a byte of the image itself
    path.write_bytes(bytes(data))
    with pytest.raises(FetchError, match=r"CT_COVID.zip: corrupt zip file.*p-6.jpg"):
        fetch(UCSD, tmp_path / "out", from_dir=replica)


def test_a_git_lfs_pointer_is_explained(replica, tmp_path):
    (replica / ZIP).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(FetchError, match="Git LFS pointer"):
        fetch(UCSD, tmp_path / "out", from_dir=replica)


def test_offline_error_names_the_url_and_the_manual_route(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    base = f"http://127.0.0.1:{port}/UCSD-AI4H/COVID-CT/master"
    with pytest.raises(FetchError) as caught:
        fetch(UCSD, tmp_path / "out", base_url=base)
    message = str(caught.value)
    assert f"cannot reach {base}/{ZIP}" in message
    assert "--from-dir" in message and "git clone https://github.com/UCSD-AI4H/COVID-CT" in message
    assert "Images-processed/CT_NonCOVID.zip" in message and "Data-split" in message


def test_http_404_is_reported_with_the_url(server, tmp_path):
    with pytest.raises(FetchError, match=rf"cannot reach {server.url}/nope/{ZIP} \(HTTP 404.*--from-dir"):
        fetch(UCSD, tmp_path / "out", base_url=f"{server.url}/nope")


# ------------------------------------------------------------------ resolve_data


def test_resolve_data_fetches_once_then_reuses_the_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv(fetch_mod.BASE_URL_ENV, server.url)
    first = resolve_data(UCSD)
    assert first == tmp_path / "cache" / "datasets" / UCSD
    assert (first / MARKER).is_file() and (first / "train.csv").is_file()
    assert server.log
    server.log.clear()
    assert resolve_data(UCSD) == first
    assert server.log == []


def test_concurrent_first_uses_fetch_once(server, tmp_path, monkeypatch):
    monkeypatch.setenv(fetch_mod.BASE_URL_ENV, server.url)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: resolve_data(UCSD), range(3)))
    assert len(set(results)) == 1 and (results[0] / MARKER).is_file()
    assert sorted(p for p, _ in server.log) == sorted(fetch_mod.SOURCE_FILES)  # each file downloaded once


def test_resolve_data_replaces_an_unfinished_cache_folder(server, tmp_path, monkeypatch):
    monkeypatch.setenv(fetch_mod.BASE_URL_ENV, server.url)
    stale = tmp_path / "cache" / "datasets" / UCSD
    stale.mkdir(parents=True)
    (stale / "train.csv").write_text("half written")
    assert (resolve_data(UCSD) / MARKER).is_file()


def test_resolve_data_fetches_again_a_cache_from_before_groups_csv(server, tmp_path, monkeypatch):
    monkeypatch.setenv(fetch_mod.BASE_URL_ENV, server.url)
    first = resolve_data(UCSD)
    (first / "groups.csv").unlink()
    assert (resolve_data(UCSD) / "groups.csv").is_file()


def test_resolve_data_passes_folders_through_and_rejects_the_unknown(tmp_path):
    assert resolve_data(tmp_path) == tmp_path
    assert resolve_data(str(tmp_path)) == tmp_path
    with pytest.raises(FetchError, match=r"nope: no such data folder.*known: ucsd-covid-ct"):
        resolve_data(str(tmp_path / "nope"))


# ------------------------------------------------------------------ the command line


def test_cli_fetch_data(server, replica, tmp_path):
    from covid_sweep.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["fetch-data", UCSD, str(tmp_path / "out"), "--base-url", server.url, "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "train: 8 images (4 COVID, 4 non-COVID)" in result.output
    assert "test: 4 images (2 COVID, 2 non-COVID)" in result.output

    result = runner.invoke(main, ["fetch-data", UCSD, str(tmp_path / "out"), "--from-dir", str(replica)])
    assert result.exit_code == 1
    assert "Error:" in result.output and "--force" in result.output and "Traceback" not in result.output

    result = runner.invoke(main, ["fetch-data", UCSD, str(tmp_path / "out"), "--from-dir", str(replica), "--force"])
    assert result.exit_code == 0, result.output

    result = runner.invoke(main, ["fetch-data", "other-set", str(tmp_path / "x")])
    assert result.exit_code == 2 and "ucsd-covid-ct" in result.output


def test_fetched_data_passes_check_data(server, monkeypatch):
    from covid_sweep.cli import main

    monkeypatch.setenv(fetch_mod.BASE_URL_ENV, server.url)
    result = CliRunner().invoke(main, ["check-data", UCSD])  # through the --data name lookup
    assert result.exit_code == 0, result.output
    assert "train: 8 images" in result.output


# ------------------------------------------------------------------ against the real set in ../shared (if present)

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-ct"
needs_real = pytest.mark.skipif(not (REAL_DATA / "manifest.csv").is_file(), reason="no ../shared data")


def _names_only_replica(root: Path, manifest: list[dict]) -> Path:
    """Empty zip members, split lists and meta files with the shared set's names and patient ids."""
    (root / "Images-processed").mkdir(parents=True)
    for folder, split_dir, _, _ in CLASSES:
        mine = [r for r in manifest if r["source_file"].startswith(f"{folder}/")]
        with zipfile.ZipFile(root / "Images-processed" / f"{folder}.zip", "w") as archive:
            for row in mine:
                archive.writestr(row["source_file"], b"")  # names only: numbering does not read pixels
        (root / "Data-split" / split_dir).mkdir(parents=True)
        for split in ("train", "val", "test"):
            names = [r["source_file"].split("/", 1)[1] for r in mine if r["official_split"] == split]
            (root / "Data-split" / split_dir / f"{split}CT_{split_dir}.txt").write_bytes(_split_list(names))
    covid = [(r["source_file"].split("/", 1)[1], r["patient_id"].removeprefix("covid:")) for r in manifest
             if r["source_file"].startswith("CT_COVID/")]
    # the real xlsx leaves .png off some names (SOURCE.md's rule): both forms
    write_covid_meta(root / "COVID-CT-MetaInfo.xlsx",
                     [(name.removesuffix(".png") if i % 2 else name, pid) for i, (name, pid) in enumerate(covid)])
    write_noncovid_meta(root / "NonCOVID-CT-MetaInfo.csv",
                        [(r["source_file"].split("/", 1)[1], r["patient_id"].removeprefix("noncovid:"))
                         for r in manifest if r["source_file"].startswith("CT_NonCOVID/")])
    return root


@needs_real
def test_real_file_names_and_split_reproduce_the_shared_numbering(tmp_path):
    """The shared copy was built from the same split lists with seed 42: names and numbers must agree."""
    manifest = _rows(REAL_DATA / "manifest.csv")
    root = _names_only_replica(tmp_path / "names-only", manifest)
    numbered = write.number_items(repository.collect_items(root), seed=42)
    got = {(split, f"{n}.png"): (item.source_file, str(item.label), item.official_split)
           for split, items in numbered.items() for n, item in enumerate(items)}
    want = {(r["split"], r["file_name"]): (r["source_file"], r["COVID"], r["official_split"]) for r in manifest}
    assert got == want


@needs_real
def test_real_meta_reproduces_the_shared_groups_csv_byte_for_byte(tmp_path):
    manifest = _rows(REAL_DATA / "manifest.csv")
    root = _names_only_replica(tmp_path / "names-only", manifest)
    numbered = write.number_items(repository.with_patient_ids(repository.collect_items(root), root), seed=42)
    out = tmp_path / "out"
    out.mkdir()
    write._write_tables(numbered, out)
    assert (out / "groups.csv").read_bytes() == (REAL_DATA / "groups.csv").read_bytes()
    assert (out / "manifest.csv").read_bytes() == (REAL_DATA / "manifest.csv").read_bytes()


@needs_real
def test_real_images_convert_to_the_shared_pixels_and_modes(tmp_path):
    manifest = _rows(REAL_DATA / "manifest.csv")
    for row in manifest[::37]:  # a spread of gray and colour images, 21 of them
        source = REAL_DATA / row["split"] / row["file_name"]
        out = tmp_path / row["file_name"]
        convert.convert_image(source.read_bytes(), out)
        with Image.open(source) as want, Image.open(out) as got:
            assert got.mode == want.mode and got.size == want.size
            assert np.array_equal(np.asarray(got), np.asarray(want))
