"""The model artifact as a local directory: everything a prediction needs, written atomically.

    model.safetensors   weights of the best epoch
    config.json         the TrialConfig that made them
    metrics.json        best validation metrics, decision threshold, per-epoch history
    metadata.json       class map, preprocessing, data fingerprint, versions
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from covid_sweep import __version__
from covid_sweep.config import TrialConfig, build_config
from covid_sweep.data import CLASS_NAMES
from covid_sweep.errors import UserError
from covid_sweep.files import apply_umask
from covid_sweep.models import build_for_folds
from covid_sweep.preprocessing import Preprocessing, PreprocessingError, preprocessing_spec

WEIGHTS = "model.safetensors"
FILES = (WEIGHTS, "config.json", "metrics.json", "metadata.json")


class ArtifactError(UserError, ValueError):
    """A model artifact directory is missing or incomplete."""


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
    def preprocessing(self) -> Preprocessing:
        """What training did to each image (metadata.json); every prediction from this artifact repeats it.
        An artifact that recorded none (written by hand) gets what training does for its input size."""
        return Preprocessing.from_spec(self.metadata.get("preprocessing") or preprocessing_spec(self.config.input_size))


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n")


def write_dir_atomically(target: Path, fill) -> Path:
    """Build the directory under a temporary name beside `target`, then rename: never half a directory."""
    target = Path(target)
    if target.exists():
        raise ArtifactError(f"{target}: already exists; refusing to overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        fill(tmp)
        apply_umask(tmp)  # mkdtemp's 0700 and safetensors' 0600 would lock others out of a shared HOME
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_artifact(target: Path, state: dict, config: TrialConfig, metrics: dict, metadata: dict) -> Path:
    metadata = {"class_map": dict(enumerate(CLASS_NAMES)), "covid_sweep_version": __version__,
                "torch_version": torch.__version__, **metadata}

    def fill(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS))
        (tmp / "config.json").write_text(config.to_json() + "\n")
        _dump(tmp / "metrics.json", metrics)
        _dump(tmp / "metadata.json", metadata)

    return write_dir_atomically(target, fill)


def load_artifact(path: Path, device: str | torch.device = "cpu") -> LoadedArtifact:
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: model artifact directory not found")
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise ArtifactError(f"{path}: incomplete model artifact, missing {', '.join(missing)}")
    config = build_config(json.loads((path / "config.json").read_text()), source=str(path / "config.json"))
    model = build_for_folds(config.backbone, False, config.folds)
    model.load_state_dict(load_file(str(path / WEIGHTS), device=str(device)))
    model.to(device).eval()
    loaded = LoadedArtifact(path=path, config=config, model=model,
                            metrics=json.loads((path / "metrics.json").read_text()),
                            metadata=json.loads((path / "metadata.json").read_text()))
    try:
        loaded.preprocessing  # a spec this version cannot reproduce fails here, at load, naming the file
    except (PreprocessingError, KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path / 'metadata.json'}: {err}") from None
    return loaded
