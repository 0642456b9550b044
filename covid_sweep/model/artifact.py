"""The model artifact as a local directory: everything a prediction needs, written atomically.

    model.safetensors   weights of the best epoch
    config.json         the TrialConfig that made them
    metrics.json        best validation metrics, decision threshold, per-epoch history
    metadata.json       class map, preprocessing, data fingerprint, versions
    val_predictions.npz every validation image's probability at every scored epoch (model/val_predictions.py);
                        absent from artifacts written before it existed
    manifest.json       sha256 of the files above, written last and checked on every load
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from covid_sweep import __version__
from covid_sweep.core.config import TrialConfig
from covid_sweep.core.files import publish_dir, staged_dir
from covid_sweep.data.layout import CLASS_NAMES
from covid_sweep.model.artifact_files import (
    FILES,
    MANIFEST,
    OPTIONAL_FILES,
    WEIGHTS,
    ArtifactError,
    ArtifactRecord,
    dump_json,
    listed_files,
    read_record,
    verify_manifest,
    write_manifest,
)
from covid_sweep.model.ensemble_artifact import is_ensemble, load_ensemble
from covid_sweep.model.single_artifact import LoadedArtifact, load_single
from covid_sweep.model.val_predictions import VAL_PREDICTIONS, ValPredictions, save

__all__ = ["FILES", "MANIFEST", "OPTIONAL_FILES", "WEIGHTS", "ArtifactError", "ArtifactRecord", "LoadedArtifact",
           "listed_files", "load_artifact", "load_single", "read_record", "verify_manifest", "write_artifact", "write_manifest"]


def write_dir_atomically(target: Path, fill) -> Path:
    """Build the directory under a temporary name beside `target`, then rename: never half a directory."""
    target = Path(target)
    if target.exists():
        raise ArtifactError(f"{target}: already exists; refusing to overwrite")
    with staged_dir(target) as tmp:
        fill(tmp)
        publish_dir(tmp, target)
    return target


def write_artifact(target: Path, state: dict, config: TrialConfig, metrics: dict, metadata: dict,
                   val_predictions: ValPredictions | None = None) -> Path:
    metadata = {"class_map": dict(enumerate(CLASS_NAMES)), "covid_sweep_version": __version__,
                "torch_version": torch.__version__, **metadata}

    def fill(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS))
        (tmp / "config.json").write_text(config.to_json() + "\n")
        dump_json(tmp / "metrics.json", metrics)
        dump_json(tmp / "metadata.json", metadata)
        if val_predictions is not None:
            save(val_predictions, tmp / VAL_PREDICTIONS)
        write_manifest(tmp)

    return write_dir_atomically(target, fill)


def load_artifact(path: Path, device: str | torch.device = "cpu"):
    """A trial's artifact (LoadedArtifact) or a weighted ensemble of trials (LoadedEnsemble, a folder with
    ensemble.json): either is checked whole against its manifest before anything is used."""
    if Path(path).is_dir() and is_ensemble(path):
        return load_ensemble(path, device)
    return load_single(path, device)
