"""Fault injection on image decoding (issue 26, item 13), one test per fault, named after it.

What is guaranteed: an image whose header declares more pixels than $COVID_SWEEP_MAX_PIXELS is refused from its
header, before any decode, in one line naming the file and its declared size; a file's EXIF orientation is applied
the same way for training (the decoded cache) and prediction, and images cached before it was applied are not reused.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from covid_sweep.cli import main
from covid_sweep.data.layout import DataError, cached_images, decode_resized, fingerprint, load_split, read_image

ORIENTATION = 0x0112  # the EXIF tag


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG file whose header declares width x height 8-bit gray pixels (its data stops early)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * (width + 1) * 64, 9)  # the first 64 rows, all black
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) is rewritten to declare width x height."""
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16), 128, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture
def decoded_paths(monkeypatch):
    """Every path OpenCV is asked to decode (the spy decodes nothing: a test never allocates a bomb's pixels)."""
    seen, real_imread = [], cv2.imread

    def imread(path, *args):
        seen.append(Path(path).name)
        return None if Path(path).name.startswith("bomb") else real_imread(path, *args)

    monkeypatch.setattr(cv2, "imread", imread)
    return seen


def _as_train_image(data_dir: Path, name: str, content: bytes) -> Path:
    """Put `content` in train/ as `name`, in place of train.csv's first row."""
    path = data_dir / "train" / name
    path.write_bytes(content)
    csv = data_dir / "train.csv"
    rows = csv.read_text().splitlines()
    first = rows[1].split(",")[0]
    csv.write_text("\n".join([rows[0], rows[1].replace(first, name, 1), *rows[2:]]) + "\n")
    return path


# ---- a decompression bomb: 30000x30000 declared in a small file -------------------------------------------

@pytest.mark.parametrize("name, content", [("bomb.png", _png_declaring(30000, 30000)),
                                           ("bomb.jpg", _jpeg_declaring(30000, 30000))], ids=["png", "jpeg"])
def test_image_declaring_30000x30000_pixels_is_refused_from_its_header_before_any_decode(tiny_data, decoded_paths,
                                                                                         name, content):
    bomb = _as_train_image(tiny_data, name, content)
    assert bomb.stat().st_size < 1_000_000

    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])

    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.strip().splitlines() == [
        f"Error: {bomb}: declares 30000x30000 pixels (900.0 M), over the limit of 50 M; "
        "set COVID_SWEEP_MAX_PIXELS to a larger number of pixels to read it"]
    assert name not in decoded_paths  # refused before OpenCV (or Pillow) decoded a pixel of it


def test_pixel_limit_is_set_by_covid_sweep_max_pixels_for_very_large_scans(tiny_data, monkeypatch, decoded_paths):
    bomb = _as_train_image(tiny_data, "bomb.png", _png_declaring(30000, 30000))
    monkeypatch.setenv("COVID_SWEEP_MAX_PIXELS", "1_000_000_000")
    with pytest.raises(DataError, match="unreadable image"):  # past the header check; the spy decodes nothing
        read_image(bomb)
    assert decoded_paths == ["bomb.png"]
    small = tiny_data / "train" / "1.png"
    with Image.open(small) as image:
        width, height = image.size
    monkeypatch.setenv("COVID_SWEEP_MAX_PIXELS", str(width * height - 1))
    with pytest.raises(DataError, match=rf"1.png: declares {width}x{height} pixels"):
        read_image(small)
    monkeypatch.setenv("COVID_SWEEP_MAX_PIXELS", "lots")
    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: $COVID_SWEEP_MAX_PIXELS='lots': expected a positive whole number of pixels (default 50_000_000)"]


# ---- a JPEG turned by its EXIF orientation ---------------------------------------------------------------------

def _jpeg_with_orientation_6(path: Path) -> np.ndarray:
    """A 40x20 (wide) JPEG, bright on its left, tagged 'turn 90 degrees clockwise to view'; returns what viewers show."""
    pixels = np.full((20, 40), 30, np.uint8)
    pixels[:, :10] = 230
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def test_jpeg_with_exif_orientation_6_is_decoded_turned_as_viewers_show_it_for_training_and_prediction(tiny_data):
    turned = _jpeg_with_orientation_6(tiny_data / "train" / "2.jpg")
    image = read_image(tiny_data / "train" / "2.jpg")
    assert image.shape == (40, 20, 3) == turned.shape  # tall: turned, as Pillow's exif_transpose turns it
    assert np.abs(image.astype(int) - turned).mean() < 2  # the bright band is on top, as every viewer shows it
    split = load_split(tiny_data, "train")
    assert np.array_equal(cached_images(split, 32), decode_resized(split, 32))  # training's pixels = prediction's
    assert CliRunner().invoke(main, ["check-data", str(tiny_data)]).exit_code == 0


def test_images_cached_before_exif_orientation_was_applied_are_not_reused(tiny_data, tmp_path):
    _jpeg_with_orientation_6(tiny_data / "train" / "2.jpg")
    split = load_split(tiny_data, "train")
    decoded = tmp_path / "cache" / "decoded"
    decoded.mkdir(parents=True)
    np.save(decoded / f"train-{fingerprint(split)}-32.npy", np.full((24, 32, 32, 3), 7, np.uint8))  # the old name

    images = cached_images(split, 32)

    assert np.array_equal(images, decode_resized(split, 32)) and not (np.asarray(images) == 7).all()
