"""A trial's validation predictions, kept for every scored epoch, so the sweep's selection can be replayed.

One file in the model artifact, `val_predictions.npz` (listed in its manifest):

    files    (N,)    str      the validation images' file names (train.csv), fold by fold
    labels   (N,)    int8     their labels
    folds    (N,)    int16    the fold each was validated in (0 for a holdout)
    groups   (N,)    str      the group (patient, or near-duplicate cluster) of each: what a bootstrap resamples
    epochs   (E,)    int32    the scored epochs
    probs    (E, N)  float32  P(COVID) of each image at each epoch, by the model that never trained on it

With K folds every training image is scored once per epoch (out-of-fold). Two trials whose `split_key`
is the same scored the same images in the same folds of the same data: their predictions can be compared.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covid_sweep.core.errors import UserError

VAL_PREDICTIONS = "val_predictions.npz"
FIELDS = ("files", "labels", "folds", "groups", "epochs", "probs")


class PredictionsError(UserError, ValueError):
    """A validation predictions file that cannot be read or does not fit its trial."""


@dataclass(frozen=True)
class ValPredictions:
    files: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    groups: np.ndarray
    epochs: np.ndarray
    probs: np.ndarray

    def __post_init__(self):
        n = len(self.files)
        if not (len(self.labels) == len(self.folds) == len(self.groups) == n):
            raise PredictionsError(f"validation predictions: {n} files but {len(self.labels)} labels, "
                                   f"{len(self.folds)} folds, {len(self.groups)} groups")
        if self.probs.shape != (len(self.epochs), n):
            raise PredictionsError(f"validation predictions: probs of shape {self.probs.shape}, expected "
                                   f"({len(self.epochs)} epochs, {n} images)")

    @classmethod
    def build(cls, files, labels, folds, groups, epochs, probs) -> "ValPredictions":
        return cls(files=np.asarray(files, dtype=str), labels=np.asarray(labels, dtype=np.int8),
                   folds=np.asarray(folds, dtype=np.int16), groups=np.asarray(groups, dtype=str),
                   epochs=np.asarray(epochs, dtype=np.int32), probs=np.asarray(probs, dtype=np.float32).reshape(
                       len(epochs), len(files)))

    def at_epoch(self, epoch: int) -> np.ndarray:
        where = np.flatnonzero(self.epochs == epoch)
        if not len(where):
            raise PredictionsError(f"validation predictions: no epoch {epoch} (have {self.epochs.tolist()})")
        return self.probs[where[0]]

    @property
    def split_key(self) -> str:
        return split_key(self.files, self.folds)


def split_key(files, folds) -> str:
    """The same for two trials exactly when they validated the same images in the same folds."""
    pairs = sorted(zip(np.asarray(folds).tolist(), np.asarray(files, dtype=str).tolist()))
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


def save(predictions: ValPredictions, path: Path) -> Path:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **{name: getattr(predictions, name) for name in FIELDS})
    return Path(path)


def load(path: Path) -> ValPredictions:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in FIELDS if name not in data.files]
            if missing:
                raise PredictionsError(f"{path}: validation predictions without {', '.join(missing)}")
            return ValPredictions(**{name: data[name] for name in FIELDS})
    except (OSError, ValueError, zipfile.BadZipFile, io.UnsupportedOperation) as err:
        if isinstance(err, PredictionsError):
            raise
        raise PredictionsError(f"{path}: not a readable validation predictions file ({err})") from None
