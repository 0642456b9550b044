"""Loading one trial's artifact (a single model or a K-fold ensemble of one recipe), checked whole first.

Kept apart from artifact.py so that the weighted ensemble of trials (ensemble_artifact.py), which artifact.py's
load_artifact dispatches to, builds on this module without importing its dispatcher back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from covid_sweep.core.config import TrialConfig, build_config
from covid_sweep.model.artifact_files import (
    FILES,
    MANIFEST,
    WEIGHTS,
    ArtifactError,
    check_manifest_not_due,
    read_json,
    verify_manifest,
)
from covid_sweep.model.networks import build_for_folds
from covid_sweep.model.preprocessing import Preprocessing, PreprocessingError, preprocessing_spec
from covid_sweep.model.val_predictions import VAL_PREDICTIONS, ValPredictions, load


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


def _load_weights(path: Path, config: TrialConfig, device) -> torch.nn.Module:
    model = build_for_folds(config.backbone, False, config.folds)
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS), device=str(device)))
    except (SafetensorError, OSError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArtifactError(f"{path / WEIGHTS}: unreadable or not weights of a {config.backbone} "
                            f"(folds={config.folds}): {first}") from None
    return model.to(device).eval()


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
