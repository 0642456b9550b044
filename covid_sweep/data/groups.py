"""Which train images belong together, so that no split puts one patient (or one scan) on both sides.

Slices of one patient, and neighbouring slices of one scan, are near-copies: a split that separates
them measures memory, not generalisation. Groups come from, in order of trust:

- DATA/groups.csv (`file_name,group`, e.g. the patient id of every train image), merged with
  near-duplicate clusters (the same slice can be filed under two patient ids);
- without it, near-duplicate clusters alone: connected components of the pairs of images whose
  small normalised thumbnails correlate above NEAR_DUPLICATE_R. This is a safety net: on the shared
  UCSD set it finds about 1 in 10 of the same-patient pairs that patient ids give
  (benchmarks/near_duplicates.py measures it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from covid_sweep.data.layout import ID_COLUMN, DataError, Split, cached_images, read_csv_rows

GROUPS_CSV = "groups.csv"
GROUP_COLUMN = "group"
THUMB_SIZE = 32
# Pearson r of 32x32 gray thumbnails. Measured on ../shared/data/covid-ct against its patient ids
# (benchmarks/near_duplicates.py): r > 0.85 catches 14 % of same-patient pairs at 90 % precision, r > 0.9
# only 7 % (98 %). A false merge only makes one group larger, a missed pair leaks: the lower cut wins.
NEAR_DUPLICATE_R = 0.85

Grouping = Literal["auto", "groups_csv", "near_duplicates", "none"]
SOURCE_TEXT = {
    "groups.csv": "groups.csv merged with near-duplicate clusters",
    "near-duplicates": "near-duplicate clusters (no groups.csv: a safety net, known patient ids are better)",
    "none": "none (ungrouped: slices of one patient can sit on both sides)",
}


@dataclass(frozen=True)
class Groups:
    """One group label per train image (train.csv order) and where the labels came from."""

    source: Literal["groups.csv", "near-duplicates", "none"]
    labels: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(set(self.labels))

    def sizes(self) -> list[int]:
        return sorted(Counter(self.labels).values(), reverse=True)

    def describe(self) -> str:
        """One line: how many groups, from what, how big."""
        if self.source == "none":
            return SOURCE_TEXT["none"]
        sizes = self.sizes()
        return (f"{self.count} groups from {SOURCE_TEXT[self.source]}; images per group: max {sizes[0]}, "
                f"median {int(np.median(sizes))}, {sum(s == 1 for s in sizes)} single images")


def read_groups_csv(path: Path, train: Split) -> tuple[str, ...]:
    """The group of every train image, in train.csv order; every train file exactly once, nothing else."""
    known, found = set(train.ids), {}
    for row_number, row in read_csv_rows(path, (ID_COLUMN, GROUP_COLUMN)):
        name, group = (row[ID_COLUMN] or "").strip(), (row[GROUP_COLUMN] or "").strip()
        if name not in known:
            raise DataError(f"{path}: row {row_number}: {ID_COLUMN} {name!r} is not in train.csv")
        if name in found:
            raise DataError(f"{path}: row {row_number}: duplicate {ID_COLUMN} {name!r} (first at row {found[name][0]})")
        if not group:
            raise DataError(f"{path}: row {row_number}: empty {GROUP_COLUMN} for {name!r}")
        found[name] = (row_number, group)
    missing = [name for name in train.ids if name not in found]
    if missing:
        raise DataError(f"{path}: {len(missing)} train image(s) have no group, e.g. {', '.join(map(repr, missing[:3]))}")
    return tuple(found[name][1] for name in train.ids)


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H*W) gray vectors with zero mean and unit norm: a dot product is Pearson r."""
    gray = images.astype(np.float32).mean(axis=-1).reshape(len(images), -1)
    gray -= gray.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(gray, axis=1, keepdims=True)
    return gray / np.where(norm == 0, 1, norm)  # a flat image correlates with nothing


def split_thumbnails(split: Split, key: str | None = None) -> np.ndarray:
    return thumbnails(cached_images(split, THUMB_SIZE, key=key))


def near_duplicate_pairs(thumbs: np.ndarray, threshold: float = NEAR_DUPLICATE_R) -> np.ndarray:
    """(i, j) with i < j of every pair of one set whose thumbnails correlate above threshold."""
    r = thumbs @ thumbs.T
    i, j = np.nonzero(np.triu(r > threshold, k=1))
    return np.stack([i, j], axis=1)


def components(n: int, pairs: np.ndarray, labels: Sequence[str] | None = None) -> np.ndarray:
    """Connected components of images joined by a pair or (when labels are given) by an equal label."""
    rows, cols = list(pairs[:, 0]), list(pairs[:, 1])
    if labels is not None:
        first: dict[str, int] = {}
        for index, label in enumerate(labels):
            rows.append(first.setdefault(label, index))
            cols.append(index)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def near_duplicate_groups(thumbs: np.ndarray, labels: Sequence[str] | None = None,
                          threshold: float = NEAR_DUPLICATE_R) -> tuple[str, ...]:
    """Group names ("g0", "g1", ...) of the components; equal labels always share one."""
    component = components(len(thumbs), near_duplicate_pairs(thumbs, threshold), labels)
    return tuple(f"g{c}" for c in component)


def train_groups(data_dir: Path, train: Split, mode: Grouping = "auto", key: str | None = None) -> Groups:
    """The groups a trial's splits honour. `auto`: groups.csv when DATA has one, else near-duplicates."""
    if mode == "none":
        return Groups("none", tuple(train.ids))
    path = Path(data_dir) / GROUPS_CSV
    if mode == "groups_csv" and not path.is_file():
        raise DataError(f"{path}: not found (grouping 'groups_csv' needs it; 'auto' falls back to near-duplicates)")
    thumbs = split_thumbnails(train, key)
    if mode in ("auto", "groups_csv") and path.is_file():
        return Groups("groups.csv", near_duplicate_groups(thumbs, read_groups_csv(path, train)))
    return Groups("near-duplicates", near_duplicate_groups(thumbs))
