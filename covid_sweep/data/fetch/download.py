"""Public data sets, fetched once and written in the competition layout.

ucsd-covid-ct: https://github.com/UCSD-AI4H/COVID-CT (Yang et al. 2020). The repository publishes the
images as Images-processed/CT_{COVID,NonCOVID}.zip (one top folder per zip; file names with spaces, %,
parentheses, .png and .jpg) and the official patient-level split as Data-split/*/{train,val,test}CT_*.txt.
Official train + val become train/, official test becomes test/ (with its labels in test_labels.csv).
The patient ids of COVID-CT-MetaInfo.xlsx and NonCOVID-CT-MetaInfo.csv become groups.csv, so that no
validation split puts one patient on both sides.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import http.client
import io
import json
import os
import random
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import openpyxl
from openpyxl.utils.exceptions import InvalidFileException
from PIL import Image, ImageChops
from tqdm import tqdm

from covid_sweep.core.errors import UserError
from covid_sweep.core.files import publish_dir, staged_dir, write_text_atomically
from covid_sweep.core.paths import cache_root

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first fetches there are the user's problem
    fcntl = None

UCSD = "ucsd-covid-ct"
DATASETS = {UCSD: "UCSD COVID-CT (Yang et al. 2020): 746 chest-CT slices from papers, official split"}
REPO_URL = "https://github.com/UCSD-AI4H/COVID-CT"
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/UCSD-AI4H/COVID-CT/master"
BASE_URL_ENV = "COVID_SWEEP_UCSD_BASE_URL"

# (folder inside Images-processed and name of its zip, Data-split folder, label)
CLASSES = (("CT_COVID", "COVID", 1), ("CT_NonCOVID", "NonCOVID", 0))
OFFICIAL_SPLITS = ("train", "val", "test")
OUT_SPLIT = {"train": "train", "val": "train", "test": "test"}
ZIP_FILES = tuple(f"Images-processed/{folder}.zip" for folder, _, _ in CLASSES)
SPLIT_FILES = tuple(f"Data-split/{d}/{s}CT_{d}.txt" for _, d, _ in CLASSES for s in OFFICIAL_SPLITS)
COVID_META = "COVID-CT-MetaInfo.xlsx"  # first sheet: `File name`, `Patient ID`
NONCOVID_META = "NonCOVID-CT-MetaInfo.csv"  # `image name`, `patient id`
META_FILES = (COVID_META, NONCOVID_META)
SOURCE_FILES = ZIP_FILES + SPLIT_FILES + META_FILES
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

MAX_SIDE = 384  # the competition's images were 384 x 384
MARKER = ".covid-sweep-complete"  # written last: its presence means the folder is whole
RECORD = "downloads.json"
TIMEOUT_S = 60
ATTEMPTS = 4
CHUNK = 1 << 20
USER_AGENT = "covid-sweep (+https://github.com/UCSD-AI4H/COVID-CT data fetcher)"

CITATION = ('Xingyi Yang, Xuehai He, Jinyu Zhao, Yichen Zhang, Shanghang Zhang, Pengtao Xie. '
            '"COVID-CT-Dataset: A CT Scan Dataset about COVID-19." arXiv:2003.13865 (2020).')

MANUAL_HELP = (f"To fetch by hand, get the repository ({REPO_URL}: `git clone {REPO_URL}`, or download "
               f"Images-processed/CT_COVID.zip, Images-processed/CT_NonCOVID.zip, the Data-split folder, {COVID_META} "
               f"and {NONCOVID_META}) and run `covid-sweep fetch-data {UCSD} DEST --from-dir DIR`, where DIR is laid "
               "out like the repository (DIR/Images-processed/CT_COVID.zip, DIR/Images-processed/CT_NonCOVID.zip, "
               "DIR/Data-split/COVID/trainCT_COVID.txt ... DIR/Data-split/NonCOVID/testCT_NonCOVID.txt, "
               f"DIR/{COVID_META}, DIR/{NONCOVID_META}).")


class FetchError(UserError):
    """A data set could not be fetched or written; the message names the URL or file and what to do."""


class _Interrupted(Exception):
    """A transfer stopped part-way; the .part file keeps what arrived so the next try resumes."""


@dataclass(frozen=True)
class Item:
    """One image of the source: where it is and where the official split puts it."""

    label: int
    source_file: str  # "<class folder>/<basename>", whatever the zip's own top folder is called
    official_split: str
    zip_path: Path
    member: str
    patient_id: str = ""  # "covid:<Patient ID>" / "noncovid:<patient id>"; "" where the meta has none

    @property
    def split(self) -> str:
        return OUT_SPLIT[self.official_split]


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # keeps a running progress bar intact


@contextlib.contextmanager
def _locked(lock_file: Path):
    """Serialise fetches of one data set across processes (sweep agents may all start at once)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------- public entry points


def resolve_data(value: str | os.PathLike) -> Path:
    """An existing folder as is; a known data set name fetched once into the cache; anything else an error."""
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    name = str(value)
    if name not in DATASETS:
        raise FetchError(f"{value}: no such data folder, and not a known data set name "
                         f"(known: {', '.join(DATASETS)})")
    target = cache_root() / "datasets" / name
    with _locked(target.parent / f".{name}.lock"):
        # a cache fetched before groups.csv existed would silently split patients: fetch it again
        if not (target / MARKER).is_file() or not (target / "groups.csv").is_file():
            # force: a folder without the marker is debris of something else, never a finished fetch
            fetch(name, target, force=True)
    return target


def fetch(name: str, dest: str | os.PathLike, *, base_url: str | None = None,
          from_dir: str | os.PathLike | None = None, seed: int = 0, force: bool = False) -> Path:
    """Download (or read from from_dir) data set `name` and write it to dest in the competition layout."""
    if name not in DATASETS:
        raise FetchError(f"{name}: unknown data set (known: {', '.join(DATASETS)})")
    if base_url and from_dir:
        raise FetchError("--base-url and --from-dir exclude each other: --from-dir downloads nothing")
    dest = Path(dest).expanduser().absolute()
    _refuse_non_empty(dest, force)  # before a long download, not after it
    if from_dir is not None:
        source = _checked_from_dir(Path(from_dir).expanduser().absolute())
        origin = f"local copy at {source} of {REPO_URL}"
    else:
        base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        source = download_repo(base_url, cache_root() / "downloads" / name)
        origin = base_url
    items = with_patient_ids(collect_items(source), source)
    _write_dataset(items, dest, seed=seed, origin=origin, force=force)
    return dest


def summary(dest: Path) -> str:
    """One line per output split with class counts, from the manifest fetch wrote."""
    with (dest / "manifest.csv").open(newline="") as fh:
        counts = Counter((row["split"], int(row["COVID"])) for row in csv.DictReader(fh))
    lines = [f"wrote {dest}"]
    for split in ("train", "test"):
        pos, neg = counts[(split, 1)], counts[(split, 0)]
        lines.append(f"  {split}: {pos + neg} images ({pos} COVID, {neg} non-COVID)")
    return "\n".join(lines)


# ---------------------------------------------------------------- downloading


def download_repo(base_url: str, cache: Path) -> Path:
    """Mirror the source files into cache (laid out like the repository), verified against downloads.json."""
    with _locked(cache / ".lock"):
        record = _read_record(cache)
        for rel in SOURCE_FILES:
            target = cache / rel
            if _cached_ok(target, record.get(rel)):
                continue
            url = f"{base_url}/{urllib.parse.quote(rel)}"
            _download_verified(url, target)
            # No checksums are published upstream, so the first good download is the reference that
            # later uses are checked against (catches a truncated or damaged cache, not a changed upstream).
            record[rel] = {"url": url, "size": target.stat().st_size, "sha256": _sha256(target)}
            _write_record(cache, record)
    return cache


def _read_record(cache: Path) -> dict:
    try:
        return json.loads((cache / RECORD).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        _say(f"warning: {cache / RECORD} is unreadable; cached downloads will be fetched again")
        return {}


def _write_record(cache: Path, record: dict) -> None:
    write_text_atomically(cache / RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n", force=True)


def _cached_ok(target: Path, entry: dict | None) -> bool:
    if not target.is_file():
        return False
    if entry and entry.get("size") == target.stat().st_size and entry.get("sha256") == _sha256(target):
        return True
    # unrecorded files come from a crash between download and record: not trusted either
    _say(f"warning: cached {target} does not match the size/sha256 recorded at its first download; "
         "downloading it again")
    target.unlink()
    return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_verified(url: str, target: Path) -> None:
    """Download url to target via target.part (resumable); a zip is tested before it takes target's name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _download_once(url, part)
            break
        except _Interrupted as err:
            _say(f"{url}: {err}; retrying ({attempt}/{ATTEMPTS})")
    else:
        raise FetchError(f"{url}: the download was interrupted {ATTEMPTS} times; run the same command again "
                         f"to resume from {part}. {MANUAL_HELP}")
    if target.suffix == ".zip":
        try:
            check_zip(part, label=url)
        except FetchError as err:
            part.unlink()
            raise FetchError(f"{err} The corrupt download was deleted; run again to download it afresh.") from None
    os.replace(part, target)


def _download_once(url: str, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            _restart_after_416(err, part, have)
            return
        raise FetchError(f"cannot reach {url} (HTTP {err.code} {err.reason}). {MANUAL_HELP}") from None
    except (OSError, http.client.HTTPException) as err:  # URLError, refused, timeout, reset
        reason = getattr(err, "reason", None) or err
        raise FetchError(f"cannot reach {url} ({reason}). {MANUAL_HELP}") from None
    with response:
        resumed = bool(have) and response.status == 206 and _range_start(response) == have
        if response.status == 206 and not resumed:
            part.unlink(missing_ok=True)  # a range we did not ask for cannot be appended to what we have
            raise _Interrupted("the server sent an unexpected byte range")
        start = have if resumed else 0  # a server that ignores Range sends it all (200): start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        _stream(response, part, "ab" if resumed else "wb", start, total)
    size = part.stat().st_size
    if total is not None and size < total:
        # http.client's read(n) returns short data, not an error, when the peer closes early
        raise _Interrupted(f"connection closed after {size} of {total} bytes")


def _stream(response, part: Path, mode: str, start: int, total: int | None) -> None:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(response.url).path)).name
    try:
        with part.open(mode) as fh, tqdm(total=total, initial=start, desc=name, unit="B", unit_scale=True,
                                         unit_divisor=1024, file=sys.stderr, leave=False) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                fh.write(block)
                bar.update(len(block))
    except (OSError, http.client.HTTPException) as err:
        raise _Interrupted(f"transfer failed ({err})") from err


def _range_start(response) -> int | None:
    value = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _restart_after_416(err: urllib.error.HTTPError, part: Path, have: int) -> None:
    """Range not satisfiable: the .part is already whole (crash before rename) or stale; else start over."""
    if err.headers.get("Content-Range", "") == f"bytes */{have}":
        return
    part.unlink()
    raise _Interrupted("the server cannot resume this partial file")


# ---------------------------------------------------------------- reading the repository layout


def check_zip(path: Path, label: str | None = None) -> None:
    """Raise FetchError unless path is a readable zip whose members all pass their CRC check."""
    label = label or str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as err:
        with path.open("rb") as fh:
            head = fh.read(64)
        if head.startswith(b"version https://git-lfs"):
            raise FetchError(f"{label}: got a Git LFS pointer instead of the zip; download the real file "
                             f"(`git lfs pull` in a clone) and use --from-dir.") from None
        raise FetchError(f"{label}: not a valid zip file ({err}).") from None
    if bad is not None:
        raise FetchError(f"{label}: corrupt zip file (member {bad!r} fails its CRC check).")


def _checked_from_dir(root: Path) -> Path:
    missing = [rel for rel in SOURCE_FILES if not (root / rel).is_file()]
    if missing:
        raise FetchError(f"{root}: not laid out like {REPO_URL}; missing {', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''}. {MANUAL_HELP}")
    for rel in ZIP_FILES:
        check_zip(root / rel)
    return root


def read_split_list(path: Path) -> list[str]:
    """One file name a line; blank lines, CR/LF, a BOM and surrounding blanks are tolerated."""
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def _zip_index(archive: zipfile.ZipFile) -> dict[str, list[str]]:
    """Basename -> members; macOS resource forks (__MACOSX/, ._name) are not images."""
    index: dict[str, list[str]] = {}
    for info in archive.infolist():
        member = PurePosixPath(info.filename)
        if info.is_dir() or "__MACOSX" in member.parts or member.name.startswith("._"):
            continue
        index.setdefault(member.name, []).append(info.filename)
    return index


def collect_items(source: Path) -> list[Item]:
    """Match every name in the split lists to its zip member (by basename) and label it."""
    items: list[Item] = []
    for folder, split_dir, label in CLASSES:
        zip_path = source / "Images-processed" / f"{folder}.zip"
        listed = {s: read_split_list(source / "Data-split" / split_dir / f"{s}CT_{split_dir}.txt")
                  for s in OFFICIAL_SPLITS}
        _refuse_listed_twice(listed, split_dir)
        with zipfile.ZipFile(zip_path) as archive:
            index = _zip_index(archive)
        missing = [n for names in listed.values() for n in names if n not in index]
        if missing:
            raise FetchError(f"{zip_path}: {len(missing)} image(s) named in Data-split/{split_dir} are not in "
                             f"the zip, e.g. {', '.join(map(repr, missing[:5]))}")
        ambiguous = [n for names in listed.values() for n in names if len(index[n]) > 1]
        if ambiguous:
            raise FetchError(f"{zip_path}: several members share the name {ambiguous[0]!r}: "
                             f"{', '.join(index[ambiguous[0]])}")
        items += [Item(label, f"{folder}/{n}", s, zip_path, index[n][0]) for s, names in listed.items()
                  for n in names]
    return items


def _refuse_listed_twice(listed: dict[str, list[str]], split_dir: str) -> None:
    # a name in two splits would put the same image in train and test
    counts = Counter(n for names in listed.values() for n in names)
    twice = [n for n, c in counts.items() if c > 1]
    if twice:
        raise FetchError(f"Data-split/{split_dir}: {len(twice)} name(s) listed more than once, "
                         f"e.g. {', '.join(map(repr, twice[:5]))}")


# ---------------------------------------------------------------- patient ids from the meta files


def with_patient_ids(items: list[Item], source: Path) -> list[Item]:
    """Items with their meta patient id; a train image without one is an error (groups.csv needs them all)."""
    covid, noncovid = read_covid_meta(source / COVID_META), read_noncovid_meta(source / NONCOVID_META)
    ids = {f"CT_COVID/{name}": f"covid:{pid}" for name, pid in covid.items()}
    ids |= {f"CT_NonCOVID/{name}": f"noncovid:{pid}" for name, pid in noncovid.items()}
    for item in items:
        if item.split == "train" and item.source_file not in ids:
            meta = COVID_META if item.label else NONCOVID_META
            raise FetchError(f"{source / meta}: no patient id for train image {item.source_file!r}; "
                             "groups.csv needs one for every train image")
    return [replace(item, patient_id=ids.get(item.source_file, "")) for item in items]


def read_covid_meta(path: Path) -> dict[str, str]:
    """File name -> Patient ID from the first sheet; a name without an image extension is a .png."""
    try:
        # not read_only: that mode trusts the sheet's stored dimensions, which some writers get wrong
        workbook = openpyxl.load_workbook(path, data_only=True)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, InvalidFileException) as err:  # damaged or not xlsx
        raise FetchError(f"{path}: cannot read the spreadsheet ({err})") from None
    rows = [[_cell(v) for v in row] for row in workbook.worksheets[0].iter_rows(values_only=True)]
    pairs = [(n if n.lower().endswith(IMAGE_SUFFIXES) else f"{n}.png", pid, row)
             for n, pid, row in _meta_pairs(rows, "File name", "Patient ID", path)]
    return _unique_ids(pairs, path)


def read_noncovid_meta(path: Path) -> dict[str, str]:
    """image name -> patient id."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # a legacy-encoded caption column must not cost the (ASCII) ids
    rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text))]
    return _unique_ids(list(_meta_pairs(rows, "image name", "patient id", path)), path)


def _cell(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a number typed into a name or id cell: 12, not 12.0
    return "" if value is None else str(value).strip()


def _meta_pairs(rows: list[list[str]], name_col: str, id_col: str, path: Path):
    """(name, id, 1-based row) under the first row that has both columns; rows missing either are skipped."""
    for number, header in enumerate(rows[:10]):
        if name_col in header and id_col in header:
            at_name, at_id = header.index(name_col), header.index(id_col)
            break
    else:
        raise FetchError(f"{path}: no header row with columns {name_col!r} and {id_col!r} in its first 10 rows")
    for row_number, row in enumerate(rows[number + 1:], start=number + 2):
        name = row[at_name] if at_name < len(row) else ""
        pid = row[at_id] if at_id < len(row) else ""
        if name and pid:
            yield name, pid, row_number


def _unique_ids(pairs: list[tuple[str, str, int]], path: Path) -> dict[str, str]:
    """name -> id; a name listed again with another id is refused: picking one could merge two patients."""
    ids: dict[str, tuple[str, int]] = {}
    for name, pid, row in pairs:
        if name in ids and ids[name][0] != pid:
            first_id, first_row = ids[name]
            raise FetchError(f"{path}: {name!r} has patient id {first_id!r} in row {first_row} "
                             f"and {pid!r} in row {row}")
        ids.setdefault(name, (pid, row))
    return {name: pid for name, (pid, _) in ids.items()}


# ---------------------------------------------------------------- writing the competition layout


def _refuse_non_empty(dest: Path, force: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise FetchError(f"{dest}: exists and is not a folder")
    if not force and dest.is_dir() and any(dest.iterdir()):
        raise FetchError(f"{dest}: folder exists and is not empty; pick another or pass --force to replace it")


def number_items(items: list[Item], seed: int) -> dict[str, list[Item]]:
    """Per output split, a seeded shuffle of a fixed order: position = file number, so it says nothing of the class."""
    rng = random.Random(seed)  # one generator, train first: the same seed always gives the same files
    numbered = {}
    for split in ("train", "test"):
        chosen = sorted((i for i in items if i.split == split), key=lambda i: (i.label, i.source_file))
        rng.shuffle(chosen)
        numbered[split] = chosen
    return numbered


def _write_dataset(items: list[Item], dest: Path, *, seed: int, origin: str, force: bool) -> None:
    """Build beside dest, then swap it in: dest is either the old state or the whole new data set."""
    numbered = number_items(items, seed)
    with staged_dir(dest, "partial") as tmp:
        _write_images(numbered, tmp)
        _write_tables(numbered, tmp)
        _write_source_md(numbered, tmp, seed=seed, origin=origin)
        (tmp / MARKER).write_text(f"{datetime.datetime.now(datetime.timezone.utc).isoformat()}\n")
        _swap_in(tmp, dest, force)


def _swap_in(tmp: Path, dest: Path, force: bool) -> None:
    _refuse_non_empty(dest, force)  # again: something may have appeared while we worked
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    publish_dir(tmp, dest, replace=force)


def _write_images(numbered: dict[str, list[Item]], root: Path) -> None:
    archives: dict[Path, zipfile.ZipFile] = {}
    total = sum(map(len, numbered.values()))
    with contextlib.ExitStack() as stack, tqdm(total=total, desc="converting", unit="img", file=sys.stderr,
                                               leave=False) as bar:
        for split, items in numbered.items():
            (root / split).mkdir()
            for number, item in enumerate(items):
                if item.zip_path not in archives:
                    archives[item.zip_path] = stack.enter_context(zipfile.ZipFile(item.zip_path))
                data = archives[item.zip_path].read(item.member)
                convert_image(data, root / split / f"{number}.png", label=f"{item.zip_path.name}:{item.member}")
                bar.update()


def convert_image(data: bytes, out: Path, label: str = "image") -> None:
    """PNG, alpha composited onto black, downscaled to fit MAX_SIDE; 8-bit gray when there is no colour."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now: errors belong to this source file, and thumbnail may not load a small one
            image = _flatten(image)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise FetchError(f"{label}: cannot read the image ({err})") from None
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS, reducing_gap=None)
    if image.mode == "RGB" and _is_gray(image):
        image = image.convert("L")
    image.save(out, format="PNG", optimize=True)


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # transparent areas of a CT figure are background, which is black in CT
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def _is_gray(image: Image.Image) -> bool:
    red, green, blue = image.split()
    return ImageChops.difference(red, green).getbbox() is None and ImageChops.difference(green, blue).getbbox() is None


def _csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(numbered: dict[str, list[Item]], root: Path) -> None:
    train, test = numbered["train"], numbered["test"]
    _csv(root / "train.csv", ["file_name", "COVID"], [(f"{n}.png", i.label) for n, i in enumerate(train)])
    _csv(root / "sample_submission.csv", ["file_name", "COVID"], [(f"{n}.png", 0) for n in range(len(test))])
    _csv(root / "test_labels.csv", ["file_name", "COVID"], [(f"{n}.png", i.label) for n, i in enumerate(test)])
    _csv(root / "groups.csv", ["file_name", "group"], [(f"{n}.png", i.patient_id) for n, i in enumerate(train)])
    _csv(root / "manifest.csv", ["file_name", "split", "COVID", "official_split", "patient_id", "source_file"],
         [(f"{n}.png", split, i.label, i.official_split, i.patient_id, i.source_file)
          for split, items in numbered.items() for n, i in enumerate(items)])


def _write_source_md(numbered: dict[str, list[Item]], root: Path, *, seed: int, origin: str) -> None:
    def count(split: str, label: int) -> int:
        return sum(i.label == label for i in numbered[split])

    table = "\n".join(
        f"| {split} ({what}) | {count(split, 1)} | {count(split, 0)} | {len(numbered[split])} |"
        for split, what in (("train", "official train + val"), ("test", "official test")))
    today = datetime.date.today().isoformat()
    (root / "SOURCE.md").write_text(f"""\
# {UCSD}: UCSD COVID-CT in the competition layout

Written by `covid-sweep fetch-data {UCSD}` on {today} (shuffle seed {seed}).
Label `COVID`: 1 = COVID-19 positive, 0 = not.

## Origin

- Data set: COVID-CT-Dataset (UCSD-AI4H), {REPO_URL}
- Read from: {origin}
  (`Images-processed/CT_COVID.zip`, `Images-processed/CT_NonCOVID.zip`,
  `Data-split/{{COVID,NonCOVID}}/{{train,val,test}}CT_{{COVID,NonCOVID}}.txt`,
  `{COVID_META}`, `{NONCOVID_META}`)
- Citation: {CITATION}

## Licence

No open licence. The images were collected from COVID-19 papers (medRxiv, bioRxiv, NEJM, JAMA,
Lancet, ...); all copyrights stay with the authors and publishers of those papers. For research
use only; do not redistribute.

## Split

Official (patient-level) split of the repository.

| split | COVID=1 | COVID=0 | total |
|-------|--------:|--------:|------:|
{table}

## Files

- `train/N.png`, `test/N.png`: N = 0..n-1 after a shuffle seeded with {seed}, so N does not reveal the class.
- `train.csv`, `sample_submission.csv` (all 0), `test_labels.csv` (true labels): `file_name,COVID`.
- `groups.csv`: `file_name,group` for every train image, in `train.csv` order; `group` is the patient:
  `covid:` + the `Patient ID` of the image's row in `{COVID_META}` (first sheet, matched on
  `File name`, `.png` appended where the name has no image extension), or `noncovid:` + the
  `patient id` of its row in `{NONCOVID_META}` (matched on `image name`); cells stripped of
  surrounding spaces. Splits that honour it never put one patient on both sides.
- `manifest.csv`: `file_name,split,COVID,official_split,patient_id,source_file` for every image
  (`patient_id` empty where the meta has none).
- Images: PNG, alpha composited onto black, Lanczos-downscaled (never upscaled) to fit
  {MAX_SIDE} x {MAX_SIDE} keeping the aspect ratio; 8-bit gray where the source has no colour, else RGB.
""")
