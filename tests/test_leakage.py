"""The leakage report of check-data: near-duplicates across train and test, and across groups.csv groups."""

from __future__ import annotations

import csv

import numpy as np
from helpers.groups import near_copy, patient_rows, write_groups

from covid_sweep.data.groups import Groups
from covid_sweep.data.layout import Split, load_split
from covid_sweep.data.leakage import LeakageReport, Pair, cross_split_pairs, leakage_report, pairs_across_groups, report_lines


def _split(name: str, n: int, labels=None) -> Split:
    return Split(name, None, tuple(f"{i}.png" for i in range(n)), tuple(labels or [0] * n))


def test_cross_split_pairs_are_listed_worst_first_with_both_labels_and_none_at_the_threshold():
    train = _split("train", 3, [0, 1, 1])
    test = _split("test", 2)
    train_thumbs = np.eye(3)
    test_thumbs = np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])  # r: train/0 0.6, train/1 0.8; train/2 1.0
    pairs = cross_split_pairs(train, train_thumbs, test, test_thumbs, np.array([1, 0]), threshold=0.6)
    assert pairs == [Pair("train/2.png", "test/1.png", 1.0, 1, 0), Pair("train/1.png", "test/0.png", 0.8, 1, 1)]
    assert [p.conflicting for p in pairs] == [True, False]
    unlabelled = cross_split_pairs(train, train_thumbs, test, test_thumbs, None, threshold=0.5)
    assert [(p.left, p.r, p.right_label) for p in unlabelled] == [("train/2.png", 1.0, None), ("train/1.png", 0.8, None),
                                                                   ("train/0.png", 0.6, None)]
    assert not any(p.conflicting for p in unlabelled)  # an unknown label conflicts with nothing


def _unit(*rows) -> np.ndarray:
    vectors = np.array(rows, dtype=float)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_only_near_duplicates_in_different_groups_are_listed_worst_first():
    train = _split("train", 6, [0, 1, 0, 0, 1, 1])
    thumbs = _unit([1, 0.48, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0],   # r 0.90: groups a, b
                   [0, 1, 0.33, 0, 0, 0], [0, 1, 0, 0, 0, 0],   # r 0.95: groups c, d
                   [0, 0, 0, 1, 0.1, 0], [0, 0, 0, 1, 0, 0])    # r 0.99: one group e
    pairs = pairs_across_groups(train, thumbs, ("a", "b", "c", "d", "e", "e"))
    assert [(p.left, p.right, p.left_label, p.right_label) for p in pairs] == [
        ("train/2.png", "train/3.png", 0, 0), ("train/0.png", "train/1.png", 0, 1)]
    assert [round(p.r, 2) for p in pairs] == [0.95, 0.90]


def test_the_report_lines_name_groups_merged_pairs_and_cross_pairs_with_their_conflicts():
    groups = Groups("groups.csv", ("p0", "p0", "p1"))
    across = [Pair("train/2.png", "train/3.png", 0.95, 0, 1)]
    cross = [Pair("train/1.png", "test/0.png", 0.97, 1, 0), Pair("train/0.png", "test/1.png", 0.9, 0, None)]
    assert report_lines(LeakageReport(groups, cross, across)) == [
        f"groups: {groups.describe()}",
        "  every train/val split and K-fold keeps each group on one side",
        "  1 near-duplicate pair(s) in train/ sit in different groups of groups.csv; the splits merge them:",
        "  train/2.png (COVID=0) ~ train/3.png (COVID=1): r=0.950  CONFLICTING LABELS",
        "near-duplicates across train and test (32x32 thumbnail r > 0.85): 2 pair(s), 1 with conflicting labels:",
        "  train/1.png (COVID=1) ~ test/0.png (COVID=0): r=0.970  CONFLICTING LABELS",
        "  train/0.png (COVID=0) ~ test/1.png (COVID=?): r=0.900",
    ]


def test_a_clean_report_says_so_without_a_dangling_colon():
    lines = report_lines(LeakageReport(Groups("groups.csv", ("p0", "p1")), [], []))
    assert lines[-1] == "near-duplicates across train and test (32x32 thumbnail r > 0.85): 0 pair(s)"
    assert len(lines) == 3


def test_the_report_finds_a_near_copy_filed_under_another_patient(tiny_data):
    near_copy(tiny_data, "3.png", "copy.png")
    with (tiny_data / "train.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(["copy.png", 1])
    train, test = load_split(tiny_data, "train"), load_split(tiny_data, "test")
    rows = patient_rows(train)  # copy.png gets a patient of its own
    write_groups(tiny_data, rows)
    report = leakage_report(tiny_data, train, test)
    assert report.groups.source == "groups.csv"
    assert [(p.left, p.right) for p in report.across_groups] == [("train/3.png", "train/copy.png")]
    assert report.cross_split == []
    (tiny_data / "groups.csv").unlink()
    assert leakage_report(tiny_data, train, test).across_groups == []
