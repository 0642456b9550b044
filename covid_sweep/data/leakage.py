"""The leakage report of check-data: near-identical images across train and test, and near-identical
train images that groups.csv files under different groups (the splits merge those).

Test labels, where DATA/test_labels.csv exists, are only shown beside a pair (a duplicate with two
labels is label noise worth knowing); nothing here chooses anything with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covid_sweep.data.groups import (
    GROUPS_CSV,
    NEAR_DUPLICATE_R,
    Groups,
    near_duplicate_pairs,
    read_groups_csv,
    split_thumbnails,
    train_groups,
)
from covid_sweep.data.layout import Split, fingerprint, labels_for

WORST = 5  # pairs listed by name


@dataclass(frozen=True)
class Pair:
    left: str
    right: str
    r: float
    left_label: int | None
    right_label: int | None

    @property
    def conflicting(self) -> bool:
        return None not in (self.left_label, self.right_label) and self.left_label != self.right_label


@dataclass(frozen=True)
class LeakageReport:
    groups: Groups
    cross_split: list[Pair]  # train ~ test, worst first
    across_groups: list[Pair]  # train ~ train in different groups.csv groups, worst first


def cross_split_pairs(train: Split, train_thumbs: np.ndarray, test: Split, test_thumbs: np.ndarray,
                      test_labels: np.ndarray | None, threshold: float = NEAR_DUPLICATE_R) -> list[Pair]:
    r = train_thumbs @ test_thumbs.T
    rows, cols = np.nonzero(r > threshold)
    pairs = [Pair(f"train/{train.ids[i]}", f"test/{test.ids[j]}", float(r[i, j]), train.labels[i],
                  None if test_labels is None else int(test_labels[j])) for i, j in zip(rows, cols)]
    return sorted(pairs, key=lambda p: -p.r)


def pairs_across_groups(train: Split, thumbs: np.ndarray, csv_groups: tuple[str, ...]) -> list[Pair]:
    pairs = [Pair(f"train/{train.ids[i]}", f"train/{train.ids[j]}", float(thumbs[i] @ thumbs[j]),
                  train.labels[i], train.labels[j])
             for i, j in near_duplicate_pairs(thumbs) if csv_groups[i] != csv_groups[j]]
    return sorted(pairs, key=lambda p: -p.r)


def leakage_report(data_dir: Path, train: Split, test: Split) -> LeakageReport:
    key = fingerprint(train)
    groups = train_groups(data_dir, train, "auto", key=key)
    train_thumbs, test_thumbs = split_thumbnails(train, key), split_thumbnails(test)
    labels_csv = Path(data_dir) / "test_labels.csv"
    test_labels = labels_for(test, labels_csv) if labels_csv.is_file() else None
    groups_csv = Path(data_dir) / GROUPS_CSV
    across = pairs_across_groups(train, train_thumbs, read_groups_csv(groups_csv, train)) if groups_csv.is_file() else []
    return LeakageReport(groups, cross_split_pairs(train, train_thumbs, test, test_thumbs, test_labels), across)


def _label(value: int | None) -> str:
    return "?" if value is None else str(value)


def _pair_line(pair: Pair) -> str:
    flag = "  CONFLICTING LABELS" if pair.conflicting else ""
    return (f"  {pair.left} (COVID={_label(pair.left_label)}) ~ {pair.right} (COVID={_label(pair.right_label)}): "
            f"r={pair.r:.3f}{flag}")


def report_lines(report: LeakageReport) -> list[str]:
    """What check-data prints about groups and leakage."""
    lines = [f"groups: {report.groups.describe()}",
             "  every train/val split and K-fold keeps each group on one side"]
    if report.groups.source == "near-duplicates":
        lines.append(f"  no {GROUPS_CSV}: near-duplicate clusters are a safety net; they miss most slices of one "
                     f"patient that do not look alike. Add {GROUPS_CSV} (file_name,group) with patient ids.")
    if report.across_groups:
        lines.append(f"  {len(report.across_groups)} near-duplicate pair(s) in train/ sit in different groups of "
                     f"{GROUPS_CSV}; the splits merge them:")
        lines += [_pair_line(p) for p in report.across_groups[:WORST]]
    cross = report.cross_split
    conflicting = sum(p.conflicting for p in cross)
    lines.append(f"near-duplicates across train and test (32x32 thumbnail r > {NEAR_DUPLICATE_R}): {len(cross)} pair(s)"
                 + (f", {conflicting} with conflicting labels" if conflicting else "")
                 + (":" if cross else ""))
    lines += [_pair_line(p) for p in cross[:WORST]]
    return lines
