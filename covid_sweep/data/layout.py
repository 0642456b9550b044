"""The competition layout: validation and a decoded-image cache.

DATA/train.csv (file_name,COVID), DATA/train/<file_name>, DATA/test/<file_name>,
DATA/sample_submission.csv (file_name,COVID).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import cv2
import numpy as np

from covid_sweep.core.files import write_file_atomically
from covid_sweep.core.paths import cache_root
from covid_sweep.data.decoded_cache import FORMAT_VERSION, cached_array
from covid_sweep.data.errors import DataError
from covid_sweep.data.images import DECODING_VERSION, read_image

LABEL_COLUMN = "COVID"
ID_COLUMN = "file_name"
CLASS_NAMES = ("non-covid", "covid")
FINGERPRINT_FORM = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Split:
    """One folder of images with its ids (and labels, where the CSV has true ones)."""

    name: str
    folder: Path
    ids: tuple[str, ...]
    labels: tuple[int, ...]

    @property
    def paths(self) -> list[Path]:
        return [self.folder / i for i in self.ids]

    def class_counts(self) -> dict[int, int]:
        return {c: self.labels.count(c) for c in (0, 1)}


def _check_file_name(name: str, csv_path: Path, row: int) -> str:
    if not name:
        raise DataError(f"{csv_path}: row {row}: empty {ID_COLUMN}")
    pure = PurePosixPath(name)
    if pure.is_absolute() or PureWindowsPath(name).is_absolute() or ".." in pure.parts or "\\" in name:
        raise DataError(f"{csv_path}: row {row}: {ID_COLUMN} {name!r} escapes its image folder")
    return name


def _read_text(csv_path: Path) -> str:
    try:
        return csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = csv_path.read_bytes()[:err.start].count(b"\n") + 1
        raise DataError(f"{csv_path}: row {line}: not UTF-8 text (byte {err.object[err.start]:#04x}); "
                        "save it as UTF-8") from None


def read_csv_rows(csv_path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(row number, row) of a UTF-8 CSV with a header holding `columns` (names stripped of blanks)."""
    with io.StringIO(_read_text(csv_path), newline="") as fh:
        reader = csv.DictReader(fh)
        found = [c.strip() for c in (reader.fieldnames or [])]
        for column in columns:
            if column not in found:
                raise DataError(f"{csv_path}: missing column {column!r} (found {found or 'no header'})")
        reader.fieldnames = found
        return list(enumerate(reader, start=2))


def read_label_csv(csv_path: Path, require_labels: bool = True) -> tuple[list[str], list[int]]:
    """Read `file_name,COVID`; with require_labels the label must be 0 or 1 (a submission template may hold anything)."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: file not found")
    ids, labels, seen = [], [], {}
    for row_number, row in read_csv_rows(csv_path, (ID_COLUMN, LABEL_COLUMN)):
        name = _check_file_name((row[ID_COLUMN] or "").strip(), csv_path, row_number)
        if name in seen:
            raise DataError(f"{csv_path}: row {row_number}: duplicate {ID_COLUMN} {name!r} (first at row {seen[name]})")
        seen[name] = row_number
        raw = (row[LABEL_COLUMN] or "").strip()
        if raw not in ("0", "1"):
            if require_labels:
                raise DataError(f"{csv_path}: row {row_number}: {LABEL_COLUMN} must be 0 or 1, got {raw!r}")
            raw = "0"
        ids.append(name)
        labels.append(int(raw))
    if not ids:
        raise DataError(f"{csv_path}: no rows")
    return ids, labels


def _check_images(folder: Path, ids: list[str], csv_path: Path) -> None:
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    root = folder.resolve()
    for name in ids:
        path = folder / name
        if root not in path.resolve().parents:
            raise DataError(f"{csv_path}: {ID_COLUMN} {name!r} escapes {folder}")
        if not path.is_file():
            raise DataError(f"{path}: image listed in {csv_path.name} not found")
        if path.stat().st_size == 0:
            raise DataError(f"{path}: image file is empty")


def load_split(data_dir: Path, name: str) -> Split:
    """name is 'train' (train.csv, labels required) or 'test' (sample_submission.csv, ids only)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    csv_name = "train.csv" if name == "train" else "sample_submission.csv"
    csv_path = data_dir / csv_name
    ids, labels = read_label_csv(csv_path, require_labels=name == "train")
    folder = data_dir / name
    _check_images(folder, ids, csv_path)
    return Split(name=name, folder=folder, ids=tuple(ids), labels=tuple(labels))


def check_two_classes(split: Split) -> None:
    """A train set every trial would fail on: refuse it up front, not once per trial."""
    counts = split.class_counts()
    if min(counts.values()) < 2:
        raise DataError(f"{split.folder.parent / 'train.csv'}: each class needs at least 2 images "
                        f"(has {', '.join(f'{CLASS_NAMES[c]} {n}' for c, n in counts.items())})")


def check_readable(split: Split) -> None:
    for path in split.paths:
        read_image(path)


def labels_for(split: Split, labels_csv: Path) -> np.ndarray:
    """The label of every image of split, in its order, from a file_name,COVID file (e.g. test_labels.csv)."""
    ids, labels = read_label_csv(labels_csv)
    known = dict(zip(ids, labels))
    missing = [i for i in split.ids if i not in known]
    if missing:
        raise DataError(f"{labels_csv}: no label for {len(missing)} image(s) of {split.folder}, e.g. {missing[0]!r}")
    return np.array([known[i] for i in split.ids])


def fingerprint(split: Split) -> str:
    """Content hash of the ids and image bytes: any changed, added or removed image changes it.

    Hashing every image costs seconds on a large set, once per trial; so the hash is remembered under
    the cache, keyed by what a change of content also changes: the folder, and every file's name, size
    and modification time (ns). A file rewritten in place with the same size within the same mtime tick
    would be missed; nothing that writes a data set does that."""
    memo = cache_root() / "fingerprints" / f"{_stat_key(split)}.txt"
    try:
        remembered = memo.read_text().strip()
    except (OSError, UnicodeDecodeError):
        remembered = ""
    if FINGERPRINT_FORM.fullmatch(remembered):  # a cut-off or zeroed memo is recomputed, never used as a file name
        return remembered
    value = content_fingerprint(split)
    write_file_atomically(memo, lambda fh: fh.write(value))
    return value


def _stat_key(split: Split) -> str:
    digest = hashlib.sha256(str(split.folder.resolve()).encode() + b"\0")
    for name, path in zip(split.ids, split.paths):
        stat = path.stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:32]


def content_fingerprint(split: Split) -> str:
    digest = hashlib.sha256()
    for name, path in zip(split.ids, split.paths):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def decode_resized(split: Split, size: int) -> np.ndarray:
    out = np.empty((len(split.ids), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(split.paths):
        out[i] = cv2.resize(read_image(path), (size, size), interpolation=cv2.INTER_AREA)
    return out


def cached_images(split: Split, size: int, cache_dir: Path | None = None, key: str | None = None) -> np.ndarray:
    """Decoded, resized uint8 images (N, size, size, 3), memory-mapped from an on-disk cache.

    Keyed by (content fingerprint, size, decoding, file format): reused across trials and agents, rebuilt when the
    data or the decoding changes, and when the file fails its checks (decoded_cache.py). `key` is the split's
    fingerprint when the caller has it.
    """
    cache_dir = Path(cache_dir) if cache_dir else cache_root() / "decoded"
    name = f"{split.name}-{key or fingerprint(split)}-{size}-decode{DECODING_VERSION}-format{FORMAT_VERSION}.npy"
    return cached_array(cache_dir / name, (len(split.ids), size, size, 3), lambda: decode_resized(split, size))
