import os

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from covid_sweep.cli import main
from covid_sweep.data.layout import DataError, cached_images, check_readable, fingerprint, load_split, read_image
from covid_sweep.data.splits import stratified_split


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


def test_split_needs_two_of_each_class():
    with pytest.raises(DataError, match="each class needs at least 2"):
        stratified_split([0, 0, 0, 1], 0.25, 0)


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
