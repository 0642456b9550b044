"""Reading a copy of the repository: its zips, the official split lists, and the patient ids of its meta files."""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter
from dataclasses import replace
from pathlib import Path, PurePosixPath

from covid_sweep.data.fetch.source import (
    CLASSES,
    COVID_META,
    IMAGE_SUFFIXES,
    MANUAL_HELP,
    NONCOVID_META,
    OFFICIAL_SPLITS,
    REPO_URL,
    SOURCE_FILES,
    ZIP_FILES,
    FetchError,
    Item,
)


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


def checked_from_dir(root: Path) -> Path:
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
    # imported here, not at the top: every `covid-sweep` command imports this module (cli -> fetch), and a
    # machine that only trains (the lent GPU box, a trial image) may not have openpyxl; only fetch-data needs it
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

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
