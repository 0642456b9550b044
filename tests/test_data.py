import os

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from covid_sweep.cli import main
from covid_sweep.data.groups import Groups
from covid_sweep.data.layout import DataError, cached_images, check_readable, fingerprint, load_split, read_image
from covid_sweep.data.splits import stratified_folds, stratified_split, trial_splits


def _rewrite_csv(path, text):
    path.write_text(text)


def test_loads_mixed_formats_as_three_channels(tiny_data):
    train = load_split(tiny_data, "train")
    assert len(train.ids) == 24 and train.class_counts() == {0: 12, 1: 12}
    for path in train.paths[:4]:  # gray png, rgb png, jpg, rgba png
        image = read_image(path)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_sixteen_bit_image_is_rescaled(tmp_path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3) and image.max() == 255


@pytest.mark.parametrize("csv_text, message", [
    ("file_name,label\n0.png,1\n", "missing column 'COVID'"),
    ("name,COVID\n0.png,1\n", "missing column 'file_name'"),
    ("file_name,COVID\n0.png,2\n", "row 2: COVID must be 0 or 1, got '2'"),
    ("file_name,COVID\n0.png,\n", "row 2: COVID must be 0 or 1"),
    ("file_name,COVID\n0.png,1\n1.png,0\n0.png,0\n", "row 4: duplicate file_name '0.png' (first at row 2)"),
    ("file_name,COVID\n../x.png,1\n", "'../x.png' escapes its image folder"),
    ("file_name,COVID\n/etc/passwd,1\n", "'/etc/passwd' escapes its image folder"),
    ("file_name,COVID\n,1\n", "row 2: empty file_name"),
    ("file_name,COVID\n", "no rows"),
])
def test_csv_problems_are_named(tiny_data, csv_text, message):
    _rewrite_csv(tiny_data / "train.csv", csv_text)
    with pytest.raises(DataError) as err:
        load_split(tiny_data, "train")
    assert message in str(err.value) and "train.csv" in str(err.value)


def test_missing_files_and_folders(tiny_data):
    (tiny_data / "train" / "3.png").unlink()
    with pytest.raises(DataError, match=r"3.png: image listed in train.csv not found"):
        load_split(tiny_data, "train")
    with pytest.raises(DataError, match="train.csv: file not found"):
        load_split(tiny_data.parent, "train")
    with pytest.raises(DataError, match="data directory not found"):
        load_split(tiny_data / "nowhere", "train")
    (tiny_data / "sample_submission.csv").unlink()
    with pytest.raises(DataError, match="sample_submission.csv: file not found"):
        load_split(tiny_data, "test")


def test_symlink_escaping_the_folder_is_rejected(tiny_data, tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes((tiny_data / "train" / "0.png").read_bytes())
    os.symlink(outside, tiny_data / "train" / "link.png")
    _rewrite_csv(tiny_data / "train.csv", "file_name,COVID\nlink.png,1\n")
    with pytest.raises(DataError, match="escapes"):
        load_split(tiny_data, "train")


def test_empty_and_unreadable_images(tiny_data):
    (tiny_data / "train" / "1.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"1.png: image file is empty"):
        load_split(tiny_data, "train")
    (tiny_data / "train" / "1.png").write_bytes(b"not a png at all")
    split = load_split(tiny_data, "train")
    with pytest.raises(DataError, match=r"1.png: unreadable image"):
        check_readable(split)


def test_stratified_split_is_reproducible_and_balanced():
    labels = [0] * 30 + [1] * 20
    train_a, val_a = stratified_split(labels, 0.2, seed=3)
    train_b, val_b = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(val_a, val_b) and np.array_equal(train_a, train_b)
    assert set(train_a).isdisjoint(val_a) and len(val_a) == 10
    assert sum(labels[i] for i in val_a) == 4  # same class ratio as the whole
    assert not np.array_equal(val_a, stratified_split(labels, 0.2, seed=4)[1])


@pytest.mark.parametrize("labels", [[0, 0, 0, 1], [0, 1, 1, 1]])
def test_split_needs_two_of_each_class(labels):
    with pytest.raises(DataError, match="^train.csv: each class needs at least 2 images for a stratified validation split$"):
        stratified_split(labels, 0.25, 0)
    train, val = stratified_split([0, 0, 1, 1, 1, 1], 0.5, 0)  # two of each is enough
    assert sorted(val.tolist() + train.tolist()) == list(range(6)) and len(val) == 3


def test_a_fraction_too_small_to_hold_both_classes_names_itself():
    with pytest.raises(DataError, match=r"^train.csv: cannot split 10 images with val_fraction=0.05: "):
        stratified_split([0] * 5 + [1] * 5, 0.05, 0)


def test_ungrouped_folds_validate_every_image_once_with_the_class_balance_kept():
    labels = [0] * 12 + [1] * 6
    pairs = trial_splits(labels, Groups("none", tuple(map(str, range(18)))), 3, 0.2, seed=5)
    assert len(pairs) == 3
    assert sorted(np.concatenate([val for _, val in pairs]).tolist()) == list(range(18))
    for train, val in pairs:
        assert set(train).isdisjoint(val) and len(train) + len(val) == 18
        assert sorted(labels[i] for i in val) == [0, 0, 0, 0, 1, 1]
    again = stratified_folds(labels, 3, seed=5)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(pairs, again))
    other = stratified_folds(labels, 3, seed=6)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(pairs, other))


def test_ungrouped_folds_need_as_many_images_of_each_class_as_folds():
    with pytest.raises(DataError, match=r"^train.csv: 3-fold cross-validation needs at least 3 images of each class "
                                        r"\(has \[2, 6\]\)$"):
        stratified_folds([0] * 2 + [1] * 6, 3, 0)
    assert len(stratified_folds([0] * 3 + [1] * 6, 3, 0)) == 3


def test_decoded_cache_is_reused_and_rebuilt_on_change(tiny_data, tmp_path):
    split = load_split(tiny_data, "train")
    before = fingerprint(split)
    first = cached_images(split, 32, tmp_path / "c")
    assert first.shape == (24, 32, 32, 3) and first.dtype == np.uint8
    files = sorted((tmp_path / "c").glob("*.npy"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    cached_images(split, 32, tmp_path / "c")
    assert files[0].stat().st_mtime_ns == mtime  # reused, not rebuilt
    cv2.imwrite(str(tiny_data / "train" / "0.png"), np.full((50, 50), 200, np.uint8))
    changed = load_split(tiny_data, "train")
    assert fingerprint(changed) != before
    rebuilt = cached_images(changed, 32, tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.npy"))) == 2
    assert rebuilt[0].mean() == pytest.approx(200, abs=1)


def test_check_data_cli_prints_counts(tiny_data):
    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])
    assert result.exit_code == 0, result.output
    assert "train: 24 images (non-covid 12, covid 12)" in result.output
    assert "test:  8 images" in result.output


def test_check_data_cli_error_is_one_line(tiny_data):
    (tiny_data / "train.csv").write_text("file_name,COVID\n0.png,yes\n")
    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {tiny_data / 'train.csv'}: row 2: COVID must be 0 or 1, got 'yes'"]
