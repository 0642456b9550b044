"""One image file -> the HxWx3 uint8 RGB every model sees; files that would decode wrong, or into gigabytes, are
refused with one line naming them.

Training (through the decoded cache), prediction, TTA and Grad-CAM all decode through read_image, so they see the
same pixels. DECODING_VERSION is part of the decoded cache's file names: a change here never reuses images that
were decoded the old way.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin

from covid_sweep.core.errors import UserError
from covid_sweep.data.errors import DataError

# Bump whenever read_image can return other pixels for the same file. 2: EXIF orientation applied.
DECODING_VERSION = 2

MAX_PIXELS_ENV = "COVID_SWEEP_MAX_PIXELS"
# Far above any CT slice (512x512; 4096x4096 = 16.8 M for the finest scanners) and a 48 MP phone photo of a film,
# while one decode stays small: a 50 M-pixel PNG peaked at +240 MB (16-bit gray) and +290 MB (8-bit RGB), so agents
# decoding side by side fit in a small box's RAM. A 30000x30000 PNG (875 KB of zeros on disk) took check-data to
# 3.6 GB before this limit; refused from its header, it peaks at 88 MB.
DEFAULT_MAX_PIXELS = 50_000_000

# EXIF orientation is applied rather than reported: the tag is how the file says it is to be seen, every viewer
# (and so whoever labelled the slice) shows it turned, and a turned file is not a mistake for the user to fix.
# OpenCV applies it for every flag but IMREAD_UNCHANGED; these flags keep what UNCHANGED kept (16-bit depth, gray
# or colour) and drop only alpha, which read_image dropped anyway.
DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def max_pixels() -> int:
    """$COVID_SWEEP_MAX_PIXELS (a whole number; `_` allowed), else DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise UserError(f"${MAX_PIXELS_ENV}={raw!r}: expected a positive whole number of pixels "
                        f"(default {DEFAULT_MAX_PIXELS:_})")
    return value


def _open_header(path: Path) -> Image.Image:
    """The file as Pillow opens it: header read, no pixel decoded. PNG and JPEG go to their readers directly because
    Image.open refuses a file past twice Pillow's own limit (179 M pixels) without telling its size, and the limit
    that applies here is ours."""
    with open(path, "rb") as fh:
        signature = fh.read(len(PNG_SIGNATURE))
    if signature.startswith(PNG_SIGNATURE):
        return PngImagePlugin.PngImageFile(path)
    if signature.startswith(JPEG_SIGNATURE):
        return JpegImagePlugin.JpegImageFile(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides, and names the file
        return Image.open(path)


def declared_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the file's header declares it; None where Pillow reads no header (OpenCV's decode then
    says what is wrong with the file)."""
    try:
        with _open_header(path) as image:
            return image.size
    except Image.DecompressionBombError as err:  # a format other than PNG/JPEG, past Pillow's limit
        raise DataError(f"{path}: {err}") from None
    except (OSError, SyntaxError, ValueError):
        return None


def refuse_oversized(path: Path) -> None:
    """Refuse, from the header alone, an image whose decode would exceed max_pixels()."""
    size, limit = declared_size(path), max_pixels()
    if size and size[0] * size[1] > limit:
        width, height = size
        raise DataError(f"{path}: declares {width}x{height} pixels ({width * height / 1e6:.1f} M), over the limit of "
                        f"{limit / 1e6:g} M; set {MAX_PIXELS_ENV} to a larger number of pixels to read it")


def read_image(path: Path) -> np.ndarray:
    """Any PNG/JPEG (gray, RGB, RGBA, 16-bit) -> HxWx3 uint8 RGB, turned as its EXIF orientation says."""
    refuse_oversized(path)
    image = cv2.imread(str(path), DECODE_FLAGS)
    if image is None:
        raise DataError(f"{path}: unreadable image (not a PNG/JPEG OpenCV can decode)")
    if _jpeg_cut_off(path):
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker; OpenCV would fill the rest with grey)")
    if image.dtype != np.uint8:
        # 16-bit CT exports: rescale the full range instead of clipping to 255
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _jpeg_cut_off(path: Path) -> bool:
    """OpenCV decodes a cut-off JPEG without an error. A whole one ends with the EOI marker; for the rare
    file with bytes after it, Pillow's full decode (which raises on truncation) decides."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\xff\xd8":
            return False
        fh.seek(max(2, path.stat().st_size - 4096))
        if fh.read().rstrip(b"\0 \t\r\n").endswith(b"\xff\xd9"):
            return False
    try:
        with _open_header(path) as image:
            image.load()
    except (OSError, SyntaxError):
        return True
    return False
