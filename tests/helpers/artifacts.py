"""Trial artifacts without training: the files a finished trial records, with a manifest that vouches for them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from covid_sweep.model.artifact_files import write_manifest
from covid_sweep.model.val_predictions import VAL_PREDICTIONS, ValPredictions, save


def recorded_artifact(folder: Path, probs, labels, *, groups=None, folds=None, best_epoch: int | None = None,
                      fingerprint: str = "data-1", files=None, predictions: bool = True) -> Path:
    """An artifact folder as a trial writes it, minus real weights: probs is (epochs, images)."""
    probs = np.atleast_2d(np.asarray(probs, dtype=float))
    n = probs.shape[1]
    files = files or [f"{i:03d}.png" for i in range(n)]
    groups = np.arange(n).astype(str) if groups is None else groups
    folds = np.zeros(n, int) if folds is None else folds
    epochs = list(range(1, len(probs) + 1))
    best_epoch = best_epoch or epochs[-1]
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"not weights: never read by the replay")
    (folder / "config.json").write_text("{}")
    (folder / "metrics.json").write_text(json.dumps({"best_epoch": best_epoch, "threshold": 0.5}))
    record = ValPredictions.build(files, labels, folds, groups, epochs, probs)
    (folder / "metadata.json").write_text(json.dumps({"data_fingerprint": fingerprint,
                                                      "validation": {"split_key": record.split_key}}))
    if predictions:
        save(record, folder / VAL_PREDICTIONS)
    write_manifest(folder)
    return folder
