"""Tiny generated data sets in the competition layout, and where the real shared one lies."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "covid-ct"


def _slice(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A fake CT slice: a body ellipse with its own shape and texture (so two slices are not near-duplicates,
    as two patients' are not) and noise; COVID images get bright blobs (ground glass)."""
    texture = cv2.resize(rng.uniform(0, 90, (4, 4)), (size, size), interpolation=cv2.INTER_CUBIC)
    image = rng.normal(40, 10, (size, size)) + texture
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    ay, ax = rng.uniform(0.25, 0.45, 2) * size
    body = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 < 1
    image[body] += 60
    if label:
        for _ in range(3):
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < (size * 0.08) ** 2] = 230
    return image.clip(0, 255).astype(np.uint8)


def write_image(path: Path, gray: np.ndarray, kind: str) -> None:
    """kind: gray-png, rgb-png, jpg, rgba-png, gray16-png."""
    if kind == "gray16-png":
        cv2.imwrite(str(path), gray.astype(np.uint16) * 200)
    elif kind == "gray-png":
        cv2.imwrite(str(path), gray)
    elif kind == "rgb-png":
        cv2.imwrite(str(path), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    elif kind == "rgba-png":
        cv2.imwrite(str(path), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA))
    elif kind == "jpg":
        cv2.imwrite(str(path), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    else:
        raise ValueError(kind)


def _write_csv(path: Path, rows) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "COVID"])
        writer.writerows(rows)


def make_dataset(root: Path, n_train: int = 24, n_test: int = 8, seed: int = 0) -> Path:
    """A competition-layout data set of mixed formats and sizes, with test_labels.csv for scoring."""
    rng = np.random.default_rng(seed)
    kinds = ["gray-png", "rgb-png", "jpg", "rgba-png", "gray16-png"]
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True)
        rows = []
        for i in range(n):
            label = i % 2
            kind = kinds[i % len(kinds)]
            name = f"{i}.{'jpg' if kind == 'jpg' else 'png'}"
            write_image(root / split / name, _slice(label, rng, int(rng.integers(40, 72))), kind)
            rows.append((name, label))
        if split == "train":
            _write_csv(root / "train.csv", rows)
        else:
            _write_csv(root / "sample_submission.csv", [(name, 0) for name, _ in rows])
            _write_csv(root / "test_labels.csv", rows)
    return root
