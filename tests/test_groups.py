"""Groups (groups.csv, near-duplicate clusters), grouped splits, and the leakage report of check-data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.data import REAL_DATA
from helpers.groups import near_copy, patient_rows, write_groups

from covid_sweep.cli import main
from covid_sweep.data.groups import (
    GROUPS_CSV,
    Groups,
    near_duplicate_groups,
    near_duplicate_pairs,
    read_groups_csv,
    train_groups,
)
from covid_sweep.data.layout import DataError, load_split
from covid_sweep.data.splits import grouped_folds, holdout_folds, shared_groups, split_kind, trial_splits

needs_real = pytest.mark.skipif(not (REAL_DATA / GROUPS_CSV).is_file(), reason="no ../shared data")


# ------------------------------------------------------------------ groups.csv validation


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[:-1], r"groups.csv: 1 train image\(s\) have no group, e.g. '23.png'"),
    (lambda rows: rows + [("nope.png", "p1")], r"groups.csv: row 26: file_name 'nope.png' is not in train.csv"),
    (lambda rows: rows + [rows[0]], r"groups.csv: row 26: duplicate file_name '0.png' \(first at row 2\)"),
    (lambda rows: [(rows[0][0], " ")] + rows[1:], r"groups.csv: row 2: empty group for '0.png'"),
])
def test_groups_csv_problems_are_one_line_errors_naming_the_row(tiny_data, edit, message):
    train = load_split(tiny_data, "train")
    write_groups(tiny_data, edit(patient_rows(train)))
    with pytest.raises(DataError, match=message):
        read_groups_csv(tiny_data / GROUPS_CSV, train)


def test_groups_csv_needs_its_columns_and_utf8(tiny_data):
    train = load_split(tiny_data, "train")
    write_groups(tiny_data, patient_rows(train), header="file_name,patient")
    with pytest.raises(DataError, match=r"groups.csv: missing column 'group' \(found \['file_name', 'patient'\]\)"):
        read_groups_csv(tiny_data / GROUPS_CSV, train)
    (tiny_data / GROUPS_CSV).write_bytes(b"file_name,group\n0.png,\xff\xfe\n")
    with pytest.raises(DataError, match="groups.csv: row 2: not UTF-8 text"):
        read_groups_csv(tiny_data / GROUPS_CSV, train)


def test_check_data_reports_a_bad_groups_csv_in_one_line(tiny_data):
    write_groups(tiny_data, [("0.png", "p0")])
    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert "groups.csv: 23 train image(s) have no group" in result.output


def test_groups_csv_order_does_not_matter(tiny_data):
    train = load_split(tiny_data, "train")
    rows = patient_rows(train)
    write_groups(tiny_data, rows[::-1])
    assert read_groups_csv(tiny_data / GROUPS_CSV, train) == tuple(group for _, group in rows)


def test_grouping_groups_csv_without_the_file_is_an_error(tiny_data):
    with pytest.raises(DataError, match="groups.csv: not found"):
        train_groups(tiny_data, load_split(tiny_data, "train"), "groups_csv")


# ------------------------------------------------------------------ grouped splits


def _synthetic(n_groups=60, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, n_groups)
    groups = np.repeat([f"p{i}" for i in range(n_groups)], sizes)
    labels = np.repeat(rng.integers(0, 2, n_groups), sizes)  # one patient, one label
    return labels, groups


@pytest.mark.parametrize("folds", [1, 3, 5])
def test_no_group_is_on_both_sides_of_any_split(folds):
    labels, groups = _synthetic()
    pairs = trial_splits(labels, Groups("groups.csv", tuple(groups)), folds, 0.2, seed=3)
    assert len(pairs) == folds and shared_groups(pairs, groups) == set()
    for train, val in pairs:
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
        # class balance of val stays close to the data's
        assert abs(labels[val].mean() - labels.mean()) < 0.15
    if folds > 1:  # every image validated exactly once
        assert sorted(np.concatenate([v for _, v in pairs]).tolist()) == list(range(len(labels)))
    else:
        assert 0.12 < len(pairs[0][1]) / len(labels) < 0.3


def test_grouped_splits_are_deterministic_from_the_seed():
    labels, groups = _synthetic()
    grouping = Groups("groups.csv", tuple(groups))
    first, again = (trial_splits(labels, grouping, 3, 0.2, seed=1) for _ in range(2))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    other = trial_splits(labels, grouping, 3, 0.2, seed=2)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other))


def test_an_ungrouped_split_does_share_groups():
    """The check above is not vacuous: the old random split puts one patient on both sides."""
    labels, groups = _synthetic()
    pairs = trial_splits(labels, Groups("none", tuple(groups)), 1, 0.2, seed=3)
    assert shared_groups(pairs, groups)


def test_too_few_groups_for_the_folds_is_an_error_naming_the_class():
    labels = np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(DataError, match="3 grouped folds need at least 3 groups holding class 0 \\(has 2\\)"):
        grouped_folds(labels, ["a", "a", "b", "c", "d", "e"], 3, 0)


@needs_real
def test_real_set_no_patient_on_both_sides_of_any_split(monkeypatch, tmp_path):
    train = load_split(REAL_DATA, "train")
    patients = read_groups_csv(REAL_DATA / GROUPS_CSV, train)
    groups = train_groups(REAL_DATA, train, "auto")
    assert groups.source == "groups.csv" and groups.count <= len(set(patients))
    for folds in (1, 3, 5):
        for seed in (0, 1):
            pairs = trial_splits(train.labels, groups, folds, 0.2, seed)
            assert shared_groups(pairs, patients) == set(), (folds, seed)
    # and the product's default split used to leak: 67 of 109 val images shared a patient with train
    old = trial_splits(train.labels, Groups("none", train.ids), 1, 0.2, 0)
    leaked = shared_groups(old, patients)
    assert sum(patients[i] in leaked for i in old[0][1]) == 67


# ------------------------------------------------------------------ near-duplicate groups


def test_two_near_copies_land_in_one_group_and_others_do_not(tiny_data):
    near_copy(tiny_data, "3.png", "copy.png")
    with (tiny_data / "train.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(["copy.png", 1])
    train = load_split(tiny_data, "train")
    groups = train_groups(tiny_data, train, "auto")
    assert groups.source == "near-duplicates"
    by_name = dict(zip(train.ids, groups.labels))
    assert by_name["copy.png"] == by_name["3.png"]
    assert groups.count == len(train.ids) - 1  # nothing else was merged


def test_groups_csv_groups_are_merged_with_near_duplicates(tiny_data):
    near_copy(tiny_data, "3.png", "copy.png")
    with (tiny_data / "train.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(["copy.png", 1])
    train = load_split(tiny_data, "train")
    rows = patient_rows(train)  # copy.png gets a patient of its own: the picture says otherwise
    write_groups(tiny_data, rows)
    groups = train_groups(tiny_data, train, "auto")
    by_name = dict(zip(train.ids, groups.labels))
    assert train.ids[:4] == ("0.png", "1.png", "2.jpg", "3.png")  # patients p0: 0, 1; p1: 2, 3
    assert groups.source == "groups.csv" and by_name["copy.png"] == by_name["3.png"] == by_name["2.jpg"]
    assert by_name["0.png"] == by_name["1.png"] != by_name["2.jpg"]


def test_flat_images_are_not_duplicates_of_each_other():
    flat = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    flat[1] += 10
    thumbs = split_thumbnails_of(flat)
    assert np.array_equal(thumbs, np.zeros_like(thumbs))  # zero, not NaN: a flat slice has no pattern to match
    assert len(set(near_duplicate_groups(thumbs))) == 3


def split_thumbnails_of(images):
    from covid_sweep.data.groups import thumbnails

    return thumbnails(images)


# ------------------------------------------------------------------ leakage report and the artifact's record


def test_check_data_reports_groups_and_a_conflicting_duplicate_across_train_and_test(tiny_data):
    near_copy(tiny_data, "3.png", "0.png", folder="test")  # test/0.png: COVID=0, train/3.png: COVID=1
    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("groups: 24 groups from near-duplicate clusters") for line in lines)
    assert any("no groups.csv: near-duplicate clusters are a safety net" in line for line in lines)
    assert "near-duplicates across train and test (32x32 thumbnail r > 0.85): 1 pair(s), 1 with conflicting labels:" in lines
    pair = [line for line in lines if "train/3.png" in line]
    assert len(pair) == 1 and "test/0.png (COVID=0)" in pair[0] and "CONFLICTING LABELS" in pair[0]


def test_without_test_labels_the_pair_is_listed_with_an_unknown_label(tiny_data):
    near_copy(tiny_data, "3.png", "0.png", folder="test")
    (tiny_data / "test_labels.csv").unlink()
    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])
    assert "train/3.png (COVID=1) ~ test/0.png (COVID=?)" in result.output and "CONFLICTING" not in result.output


def test_artifact_records_every_folds_files_and_the_split_kind(tiny_data, tmp_path):
    from covid_sweep.core.config import build_config
    from covid_sweep.training.trial import run_trial

    train = load_split(tiny_data, "train")
    write_groups(tiny_data, patient_rows(train, per_patient=3))
    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 1, "batch_size": 8, "folds": 2,
                           "device": "cpu", "data_dir": str(tiny_data)})
    result = run_trial(config, tmp_path / "model", progress=False)
    validation = json.loads((result.artifact / "metadata.json").read_text())["validation"]
    assert validation["split"] == "grouped 2-fold CV (patients + near-duplicates)"
    assert validation["grouping"] == "groups.csv" and validation["n_groups"] == 8
    folds = validation["val_files"]
    assert sorted(sum(folds, [])) == sorted(train.ids)  # each image validated once
    patient = dict(patient_rows(train, per_patient=3))
    assert not {patient[n] for n in folds[0]} & {patient[n] for n in folds[1]}


def test_a_row_without_its_group_cell_and_many_missing_images_are_named(tiny_data):
    train = load_split(tiny_data, "train")
    rows = patient_rows(train)
    (tiny_data / GROUPS_CSV).write_text("file_name,group\n" + "".join(f"{a},{b}\n" for a, b in rows[:-1]) + f"{rows[-1][0]}\n")
    with pytest.raises(DataError, match=rf"groups.csv: row {len(rows) + 1}: empty group for '{rows[-1][0]}'$"):
        read_groups_csv(tiny_data / GROUPS_CSV, train)
    write_groups(tiny_data, rows[5:])
    with pytest.raises(DataError, match=r"groups.csv: 5 train image\(s\) have no group, e.g. '0.png', '1.png', '2.jpg'$"):
        read_groups_csv(tiny_data / GROUPS_CSV, train)


def test_a_grouped_holdout_is_the_first_of_about_one_over_the_fraction_folds():
    assert [holdout_folds(f) for f in (0.5, 0.25, 0.2, 0.9)] == [2, 4, 5, 2]


@pytest.mark.parametrize("source, folds, kind", [
    ("none", 1, "ungrouped holdout"), ("none", 5, "ungrouped 5-fold CV"),
    ("groups.csv", 1, "grouped holdout (patients + near-duplicates)"),
    ("near-duplicates", 3, "grouped 3-fold CV (near-duplicates only)"),
])
def test_every_score_says_what_split_it_was_measured_on(source, folds, kind):
    assert split_kind(source, folds) == kind


def test_groups_describe_their_sizes_largest_first():
    groups = Groups("groups.csv", ("a", "a", "a", "b", "c", "c", "d"))
    assert groups.sizes() == [3, 2, 1, 1]
    assert groups.describe() == ("4 groups from groups.csv merged with near-duplicate clusters; images per group: max 3, "
                                 "median 1, 2 single images")
    assert Groups("none", ("a", "b")).describe() == "none (ungrouped: slices of one patient can sit on both sides)"


def test_grouped_folds_need_exactly_as_many_groups_per_class_as_folds_and_refuse_a_one_class_fold():
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert len(grouped_folds(labels, ["a", "b", "c", "d", "e", "f"], 3, 0)) == 3  # three groups of each: enough
    with pytest.raises(DataError, match=r"^train.csv: grouped fold 1 of 2 holds one class only; use fewer folds "
                                        r"or a larger val_fraction$"):
        grouped_folds(np.array([0, 1, 0, 0, 1, 1]), ["g0", "g1", "g3", "g1", "g2", "g1"], 2, 0)


@pytest.mark.parametrize("grouping", ["none", "groups.csv"])
def test_a_holdout_follows_its_fraction_and_seed(grouping):
    labels, groups = _synthetic()
    split = Groups(grouping, tuple(groups))
    [(train, val)] = trial_splits(labels, split, 1, 0.2, seed=4)
    assert abs(len(val) / len(labels) - 0.2) < 0.04  # not sklearn's default of 0.25
    assert len(train) + len(val) == len(labels) and set(train).isdisjoint(val)
    [(_, again)] = trial_splits(labels, split, 1, 0.2, seed=4)
    [(_, other)] = trial_splits(labels, split, 1, 0.2, seed=5)
    assert np.array_equal(val, again) and not np.array_equal(val, other)
    assert len(trial_splits(labels, split, 2, 0.2, seed=4)) == 2  # two folds are folds, not a holdout


def test_neighbouring_slices_pair_once_and_no_image_pairs_with_itself():
    # slices 0-1 and 3-4 are consecutive near-copies (the common real case); 2 is unlike both
    thumbs = np.array([[1.0, 0.0, 0.0], [0.99, 0.141, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.99, 0.141]])
    assert near_duplicate_pairs(thumbs).tolist() == [[0, 1], [3, 4]]


def test_a_pair_exactly_at_the_threshold_is_not_a_near_duplicate():
    thumbs = np.array([[1.0, 0.0], [0.5, 0.75 ** 0.5]])  # r = 0.5 exactly: 1 * 0.5 + 0 * x
    assert near_duplicate_pairs(thumbs, threshold=0.5).tolist() == []
    assert near_duplicate_pairs(thumbs, threshold=0.49).tolist() == [[0, 1]]
    assert len(set(near_duplicate_groups(thumbs, threshold=0.49))) == 1  # the threshold reaches the grouping
    assert len(set(near_duplicate_groups(thumbs))) == 2


def test_a_short_row_with_the_file_name_column_last_is_named(tiny_data):
    train = load_split(tiny_data, "train")
    (tiny_data / GROUPS_CSV).write_text("group,file_name\np0,0.png\np1\n")
    with pytest.raises(DataError, match=r"groups.csv: row 3: file_name '' is not in train.csv$"):
        read_groups_csv(tiny_data / GROUPS_CSV, train)


def test_the_grouping_mode_picks_the_source(tiny_data):
    train = load_split(tiny_data, "train")
    assert train_groups(tiny_data, train, "none") == Groups("none", tuple(train.ids))
    assert train_groups(tiny_data, train).source == "near-duplicates"  # auto, without groups.csv
    write_groups(tiny_data, patient_rows(train))
    assert train_groups(tiny_data, train).source == "groups.csv"
    assert train_groups(tiny_data, train, "groups_csv").source == "groups.csv"
    assert train_groups(tiny_data, train, "near_duplicates").source == "near-duplicates"
