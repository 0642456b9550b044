"""Choosing TTA views on validation, never on the test labels.

Each set of views is scored on the images the model never trained on, rebuilt from the artifact's
own config exactly as its trial split them: a holdout trial's val images, or for a K-fold ensemble
fold i's images scored by member i (out-of-fold). The data must be the data it was trained on
(same content fingerprint), or those images cannot be rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from covid_sweep.core.errors import UserError
from covid_sweep.core.metrics import binary_metrics
from covid_sweep.data.groups import Groups
from covid_sweep.data.layout import Split, cached_images, fingerprint, load_split
from covid_sweep.data.splits import trial_splits
from covid_sweep.inference.predict import check_views, predict_images
from covid_sweep.model.artifact import LoadedArtifact
from covid_sweep.model.ensemble_artifact import LoadedEnsemble
from covid_sweep.model.networks import Ensemble

DEFAULT_VIEW_SETS: tuple[tuple[str, ...], ...] = (
    ("identity",),
    ("identity", "hflip"),
    ("identity", "zoom_in", "zoom_out"),
    ("identity", "hflip", "zoom_in", "zoom_out"),
)


@dataclass(frozen=True)
class ViewScore:
    views: tuple[str, ...]
    metrics: dict[str, float]  # binary_metrics at the artifact's threshold
    n: int


def validation_images(artifact: LoadedArtifact, data_dir: Path) -> list[tuple[torch.nn.Module, np.ndarray, np.ndarray]]:
    """(model, val images, val labels) per fold: the model is the one that never saw those images."""
    train = load_split(Path(data_dir), "train")
    key = fingerprint(train)
    expected = artifact.metadata.get("data_fingerprint")
    if expected and key != expected:
        raise UserError(f"{data_dir}: train/ is not the data {artifact.path} was trained on (fingerprint {key[:12]}, "
                        f"artifact {expected[:12]}); its validation images cannot be rebuilt")
    images = cached_images(train, artifact.preprocessing.input_size, key=key)
    labels = np.asarray(train.labels)
    folds = recorded_val_indices(artifact, train)
    members = list(artifact.model.members) if isinstance(artifact.model, Ensemble) else [artifact.model]
    if len(members) != len(folds):
        raise UserError(f"{artifact.path}: {len(members)} model(s) for {len(folds)} validation fold(s) in its config")
    return [(member, np.ascontiguousarray(images[val]), labels[val]) for member, val in zip(members, folds)]


def recorded_val_indices(artifact: LoadedArtifact, train: Split) -> list[np.ndarray]:
    """Each fold's validation rows of train.csv, as the artifact recorded them.

    Artifacts from before grouped splits recorded no file names: their split was the ungrouped one."""
    config = artifact.config
    recorded = artifact.metadata.get("validation", {}).get("val_files")
    if recorded is None:
        return [val for _, val in trial_splits(np.asarray(train.labels), Groups("none", train.ids),
                                                 config.folds, config.val_fraction, config.seed)]
    row = {name: i for i, name in enumerate(train.ids)}
    missing = [name for fold in recorded for name in fold if name not in row]
    if missing:
        raise UserError(f"{artifact.path}: validation file {missing[0]!r} is not in train.csv")
    return [np.asarray([row[name] for name in fold]) for fold in recorded]


def score_view_sets(artifact: LoadedArtifact | LoadedEnsemble, data_dir: Path,
                    view_sets: Sequence[Sequence[str]] = DEFAULT_VIEW_SETS) -> list[ViewScore]:
    """Validation metrics of each view set, in the order given. An ensemble's members share one split: each
    image is scored by every member's model that never saw it, and their probabilities weighted as in predict."""
    view_sets = [check_views(tuple(views)) for views in view_sets]
    members = ([(m.weight, m.artifact) for m in artifact.members] if isinstance(artifact, LoadedEnsemble)
               else [(1.0, artifact)])
    folds = [(weight, member, validation_images(member, data_dir)) for weight, member in members]
    labels = np.concatenate([fold_labels for _, _, fold_labels in folds[0][2]])
    scores = []
    for views in view_sets:
        probs = sum(weight * _probs(member, member_folds, views) for weight, member, member_folds in folds)
        scores.append(ViewScore(views, binary_metrics(labels, probs, artifact.threshold), len(labels)))
    return scores


def _probs(artifact: LoadedArtifact, folds, views: tuple[str, ...]) -> np.ndarray:
    device = next(artifact.model.parameters()).device
    return np.concatenate([predict_images(model, images, artifact.config.batch_size, device, views,
                                          artifact.preprocessing).astype(np.float64)
                           for model, images, _ in folds])
