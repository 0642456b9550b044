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

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from covid_sweep import __version__
from covid_sweep.core.config import TrialConfig, build_config
from covid_sweep.core.files import publish_dir, staged_dir
from covid_sweep.data.layout import CLASS_NAMES
from covid_sweep.model.artifact_files import (
    FILES,
    MANIFEST,
    OPTIONAL_FILES,
    WEIGHTS,
    ArtifactError,
    ArtifactRecord,
    check_manifest_not_due,
    dump_json,
    listed_files,
    read_json,
    read_record,
    verify_manifest,
    write_manifest,
)
from covid_sweep.model.networks import build_for_folds
from covid_sweep.model.preprocessing import Preprocessing, PreprocessingError, preprocessing_spec
from covid_sweep.model.val_predictions import VAL_PREDICTIONS, ValPredictions, load, save

__all__ = ["FILES", "MANIFEST", "OPTIONAL_FILES", "WEIGHTS", "ArtifactError", "ArtifactRecord", "LoadedArtifact",
           "listed_files", "load_artifact", "read_record", "verify_manifest", "write_artifact", "write_manifest"]




@dataclass
class LoadedArtifact:
    path: Path
    config: TrialConfig
    metrics: dict
    metadata: dict
    model: torch.nn.Module

    @property
    def threshold(self) -> float:
        return float(self.metrics.get("threshold", 0.5))

    @property
    def val_predictions(self) -> ValPredictions | None:
        """Every validation image's probability at every scored epoch; None for an artifact from before they
        were kept. The manifest already vouched for the file."""
        path = self.path / VAL_PREDICTIONS
        return load(path) if path.is_file() else None

    @property
    def preprocessing(self) -> Preprocessing:
        """What training did to each image (metadata.json); every prediction from this artifact repeats it.
        An artifact that recorded none (written by hand) gets what training does for its input size."""
        return Preprocessing.from_spec(self.metadata.get("preprocessing") or preprocessing_spec(self.config.input_size))


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


def _load_weights(path: Path, config: TrialConfig, device) -> torch.nn.Module:
    model = build_for_folds(config.backbone, False, config.folds)
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS), device=str(device)))
    except (SafetensorError, OSError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArtifactError(f"{path / WEIGHTS}: unreadable or not weights of a {config.backbone} "
                            f"(folds={config.folds}): {first}") from None
    return model.to(device).eval()


def load_artifact(path: Path, device: str | torch.device = "cpu"):
    """A trial's artifact (LoadedArtifact) or a weighted ensemble of trials (LoadedEnsemble, a folder with
    ensemble.json): either is checked whole against its manifest before anything is used."""
    from covid_sweep.model.ensemble_artifact import is_ensemble, load_ensemble  # it builds on this module

    if Path(path).is_dir() and is_ensemble(path):
        return load_ensemble(path, device)
    return load_single(path, device)


def load_single(path: Path, device: str | torch.device = "cpu") -> LoadedArtifact:
    """One trial's artifact: a single model or a K-fold ensemble of one recipe."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: model artifact directory not found")
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise ArtifactError(f"{path}: incomplete model artifact, missing {', '.join(missing)}")
    if (path / MANIFEST).exists():
        verify_manifest(path)
    else:  # only an artifact from before manifests existed may lack one: it still loads, checked below
        check_manifest_not_due(path, read_json(path / "metadata.json"))
    config = build_config(read_json(path / "config.json"), source=str(path / "config.json"))
    metadata = read_json(path / "metadata.json")
    recorded_size = metadata.get("preprocessing", {}).get("resize")
    if recorded_size is not None and list(recorded_size) != [config.input_size] * 2:
        raise ArtifactError(f"{path / 'config.json'}: input_size {config.input_size} contradicts the preprocessing "
                            f"in {path / 'metadata.json'} (resize {recorded_size})")
    loaded = LoadedArtifact(path=path, config=config, model=_load_weights(path, config, device),
                            metrics=read_json(path / "metrics.json"), metadata=metadata)
    try:
        loaded.preprocessing  # a spec this version cannot reproduce fails here, at load, naming the file
    except (PreprocessingError, KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path / 'metadata.json'}: {err}") from None
    return loaded
