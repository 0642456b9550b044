"""Writing the competition layout: numbered images, the label tables and SOURCE.md, built beside dest and swapped in."""

from __future__ import annotations

import contextlib
import csv
import datetime
import random
import sys
import zipfile
from pathlib import Path

from tqdm import tqdm

from covid_sweep.core.files import publish_dir, staged_dir
from covid_sweep.data.fetch.convert import MAX_SIDE, convert_image
from covid_sweep.data.fetch.source import (
    CITATION,
    COVID_META,
    NONCOVID_META,
    REPO_URL,
    UCSD,
    FetchError,
    Item,
)

MARKER = ".covid-sweep-complete"  # written last: its presence means the folder is whole


def refuse_non_empty(dest: Path, force: bool) -> None:
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


def write_dataset(items: list[Item], dest: Path, *, seed: int, origin: str, force: bool) -> None:
    """Build beside dest, then swap it in: dest is either the old state or the whole new data set."""
    numbered = number_items(items, seed)
    with staged_dir(dest, "partial") as tmp:
        _write_images(numbered, tmp)
        _write_tables(numbered, tmp)
        _write_source_md(numbered, tmp, seed=seed, origin=origin)
        (tmp / MARKER).write_text(f"{datetime.datetime.now(datetime.timezone.utc).isoformat()}\n")
        _swap_in(tmp, dest, force)


def _swap_in(tmp: Path, dest: Path, force: bool) -> None:
    refuse_non_empty(dest, force)  # again: something may have appeared while we worked
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
