"""Probabilities for a data split from a model artifact, with optional test-time augmentation (TTA),
and the prediction job that turns them into a validated submission.

TTA = the mean P(COVID) over views of each image. `--tta` is identity and horizontal flip (the flip
training may use). Other views can be named (`--tta-views`): a centred zoom in or out by 10 % (the
small scale changes RandomResizedCrop trains for) and a vertical flip, which no recipe here trains
for, since no CT slice is upside down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from covid_sweep.core.errors import UserError
from covid_sweep.core.files import ExistsError, write_files_atomically
from covid_sweep.data.layout import decode_resized, load_split, read_label_csv
from covid_sweep.inference.submission import SubmissionError, probabilities_text, refuse_existing, submission_text
from covid_sweep.model.artifact import LoadedArtifact, load_artifact
from covid_sweep.model.ensemble_artifact import LoadedEnsemble
from covid_sweep.model.preprocessing import Preprocessing
from covid_sweep.model.runtime import pick_device, predict_probs

ZOOM = 1.1


def _zoom(scale: float) -> Callable[[np.ndarray], np.ndarray]:
    # albumentations stays the definition of a geometric op; the margin a zoom-out opens is black,
    # like the air around a CT slice
    transform = A.Affine(scale=scale, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)
    return lambda images: np.stack([transform(image=image)["image"] for image in images])


VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda images: images,
    "hflip": lambda images: images[:, :, ::-1],   # (N, H, W, 3): W is axis 2
    "vflip": lambda images: images[:, ::-1],
    "zoom_in": _zoom(ZOOM),
    "zoom_out": _zoom(1 / ZOOM),
}
NO_TTA: tuple[str, ...] = ("identity",)
TTA: tuple[str, ...] = ("identity", "hflip")


@dataclass(frozen=True)
class Prediction:
    ids: tuple[str, ...]
    probs: np.ndarray  # float32 P(COVID), in the order of ids
    threshold: float
    views: tuple[str, ...]

    @property
    def labels(self) -> np.ndarray:
        """0/1 at the artifact's decision threshold (chosen on validation): prob >= threshold is COVID."""
        return (self.probs >= self.threshold).astype(int)


def views_for(tta: bool, views: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The views to average: an explicit list (a comma string from the CLI) wins over the --tta flag."""
    if views is not None:  # an empty list is a mistake to report, not a request for the --tta default
        named = tuple(v.strip() for v in views.split(",")) if isinstance(views, str) else tuple(views)
        return check_views(named)
    return TTA if tta else NO_TTA


def check_views(views: Sequence[str]) -> tuple[str, ...]:
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views or len(set(views)) != len(views):
        raise UserError(f"TTA views {', '.join(views) or '(none)'}: name each once, from {', '.join(VIEWS)}")
    return tuple(views)


def predict_images(model: torch.nn.Module, images: np.ndarray, batch_size: int, device: torch.device,
                   views: Sequence[str] = NO_TTA, preprocessing: Preprocessing | None = None) -> np.ndarray:
    """Mean P(COVID) over `views` for uint8 images (N, H, W, 3) already at the model's input size,
    normalised as `preprocessing` (an artifact's recorded one) says; default: what training does."""
    check_views(views)
    norm = {"mean": preprocessing.mean, "std": preprocessing.std} if preprocessing else {}
    total = np.zeros(len(images), dtype=np.float64)
    for view in views:
        total += predict_probs(model, np.ascontiguousarray(VIEWS[view](images)), batch_size, device, **norm)
    return (total / len(views)).astype(np.float32)


def predict_split(artifact: LoadedArtifact | LoadedEnsemble, data_dir: Path, split: str = "test",
                  views: Sequence[str] = NO_TTA, device: torch.device | None = None,
                  batch_size: int | None = None) -> Prediction:
    """P(COVID) for every image of a split (test: the ids of sample_submission.csv, in its order). An ensemble's
    is the weighted mean of its members', each member fed its own input size and preprocessing."""
    if isinstance(artifact, LoadedEnsemble):
        parts = [(m.weight, predict_split(m.artifact, data_dir, split, views, device, batch_size)) for m in artifact.members]
        probs = sum(weight * part.probs.astype(np.float64) for weight, part in parts)
        return Prediction(ids=parts[0][1].ids, probs=probs.astype(np.float32), threshold=artifact.threshold,
                          views=tuple(views))
    data = load_split(Path(data_dir), split)
    preprocessing = artifact.preprocessing
    images = decode_resized(data, preprocessing.input_size)
    device = device or next(artifact.model.parameters()).device
    probs = predict_images(artifact.model, images, batch_size or artifact.config.batch_size, device, views, preprocessing)
    return Prediction(ids=data.ids, probs=probs, threshold=artifact.threshold, views=tuple(views))


def sample_ids(data_dir: Path) -> list[str]:
    """The ids a submission must hold, in order, read straight from sample_submission.csv."""
    return read_label_csv(Path(data_dir) / "sample_submission.csv", require_labels=False)[0]


def probabilities_path(submission_path: Path) -> Path:
    """submission.csv -> submission.probabilities.csv beside it."""
    submission_path = Path(submission_path)
    return submission_path.with_name(f"{submission_path.stem}.probabilities.csv")


def write_prediction(prediction: Prediction, submission_path: Path, probs_path: Path, sample_ids: Sequence[str],
                     force: bool = False) -> None:
    """Validate, then write both files or neither (a lone probabilities.csv would make a rerun refuse)."""
    texts = {Path(probs_path): probabilities_text(prediction.ids, prediction.probs),
             Path(submission_path): submission_text(prediction.ids, prediction.labels.tolist(), sample_ids)}
    try:
        write_files_atomically(texts, force=force)
    except ExistsError as err:
        raise SubmissionError(str(err)) from None


def run_predict(model_dir: Path, data_dir: Path, out: Path, tta: bool = False, force: bool = False,
                device: str | None = None, views: str | Sequence[str] | None = None) -> tuple[Prediction, Path, Path]:
    """The prediction job for any artifact directory: OUT (submission) + <stem>.probabilities.csv beside it."""
    out = Path(out)
    views = views_for(tta, views)
    probs_out = probabilities_path(out)
    for path in (out, probs_out):  # refuse before the expensive part, and again at the atomic write
        refuse_existing(path, force)
    device = pick_device(device)
    artifact = load_artifact(Path(model_dir), device=device)
    prediction = predict_split(artifact, data_dir, "test", views, device)
    write_prediction(prediction, out, probs_out, sample_ids(data_dir), force=force)
    return prediction, out, probs_out
