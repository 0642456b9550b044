"""Train sets with patients (groups.csv) and near-copies of slices, as the grouping and leakage tests need them."""

from __future__ import annotations

import cv2
import numpy as np

from covid_sweep.data.groups import GROUPS_CSV


def write_groups(data, rows, header="file_name,group"):
    (data / GROUPS_CSV).write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows))


def patient_rows(train, per_patient=2):
    return [(name, f"p{i // per_patient}") for i, name in enumerate(train.ids)]


def near_copy(data, source: str, target: str, folder="train", shift=6):
    """A near-identical slice: the same picture, a little brighter, with a little noise (a neighbouring slice)."""
    image = cv2.imread(str(data / "train" / source), cv2.IMREAD_GRAYSCALE).astype(np.int16)
    noise = np.random.default_rng(0).integers(-3, 4, image.shape)
    cv2.imwrite(str(data / folder / target), np.clip(image + shift + noise, 0, 255).astype(np.uint8))
