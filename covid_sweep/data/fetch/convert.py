"""Converting a source image to the layout's PNG."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageChops

from covid_sweep.data.fetch.source import (
    FetchError,
)

MAX_SIDE = 384  # the competition's images were 384 x 384


def convert_image(data: bytes, out: Path, label: str = "image") -> None:
    """PNG, alpha composited onto black, downscaled to fit MAX_SIDE; 8-bit gray when there is no colour."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now: errors belong to this source file, and thumbnail may not load a small one
            image = _flatten(image)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise FetchError(f"{label}: cannot read the image ({err})") from None
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS, reducing_gap=None)
    if image.mode == "RGB" and _is_gray(image):
        image = image.convert("L")
    image.save(out, format="PNG", optimize=True)


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # transparent areas of a CT figure are background, which is black in CT
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def _is_gray(image: Image.Image) -> bool:
    red, green, blue = image.split()
    return ImageChops.difference(red, green).getbbox() is None and ImageChops.difference(green, blue).getbbox() is None
