"""A weighted ensemble of trials as one artifact directory: the members' own artifacts, each whole.

    ensemble.json        the members (trial, folder, weight), weights summing to 1
    metrics.json         the ensemble's validation value, decision threshold and values at it
    metadata.json        class map, data fingerprint, the validation split all members share, the members
    members/TRIAL/       each member's trial artifact as it was written (its own manifest, weights, config,
                         preprocessing: members keep their own input size)
    manifest.json        sha256 of the three files above and of every member's manifest.json, written last

A prediction is the weighted mean of the members' P(COVID), each member fed its own input size.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from covid_sweep import __version__
from covid_sweep.core.files import publish_dir, staged_dir
from covid_sweep.model.artifact_files import MANIFEST, ArtifactError, dump_json, read_json, sha256_of
from covid_sweep.model.single_artifact import LoadedArtifact, load_single

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_FILES = (ENSEMBLE_FILE, "metrics.json", "metadata.json")
MEMBERS = "members"


@dataclass(frozen=True)
class Member:
    trial: str
    weight: float
    artifact: LoadedArtifact


@dataclass
class LoadedEnsemble:
    path: Path
    members: list[Member]
    metrics: dict
    metadata: dict

    @property
    def threshold(self) -> float:
        return float(self.metrics.get("threshold", 0.5))

    @property
    def input_sizes(self) -> list[int]:
        """The distinct input sizes of the members, ascending: the TorchScript export takes one batch of each."""
        return sorted({m.artifact.preprocessing.input_size for m in self.members})

    @property
    def batch_size(self) -> int:
        return min(m.artifact.config.batch_size for m in self.members)

    @property
    def heaviest(self) -> Member:
        """The member with the largest weight (the first listed on a tie)."""
        return max(self.members, key=lambda m: m.weight)

    def describe(self) -> str:
        return " + ".join(f"{m.weight:.2f} x {m.trial} ({m.artifact.config.backbone}, {m.artifact.preprocessing.input_size} px)"
                          for m in self.members)


def is_ensemble(path: Path) -> bool:
    return (Path(path) / ENSEMBLE_FILE).is_file()


def write_ensemble(target: Path, members: Sequence[tuple[str, Path, float]], metrics: dict, metadata: dict) -> Path:
    """members: (trial, its artifact folder, weight). Built under a temporary name, then renamed into place."""
    target = Path(target)
    if target.exists():
        raise ArtifactError(f"{target}: already exists; refusing to overwrite")
    total = sum(weight for _, _, weight in members)
    listed = [{"trial": trial, "path": f"{MEMBERS}/{trial}", "weight": weight / total} for trial, _, weight in members]
    with staged_dir(target) as tmp:
        for (trial, source, _), entry in zip(members, listed):
            if not (Path(source) / MANIFEST).is_file():
                raise ArtifactError(f"{source}: member {trial} has no {MANIFEST}; only whole artifacts can join")
            shutil.copytree(source, tmp / entry["path"])
        dump_json(tmp / ENSEMBLE_FILE, {"kind": "weighted ensemble", "members": listed})
        dump_json(tmp / "metrics.json", metrics)
        dump_json(tmp / "metadata.json", {"covid_sweep_version": __version__, **metadata})
        digests = {name: sha256_of(tmp / name) for name in ENSEMBLE_FILES}
        digests.update({f"{e['path']}/{MANIFEST}": sha256_of(tmp / e["path"] / MANIFEST) for e in listed})
        dump_json(tmp / MANIFEST, {"sha256": digests})
        publish_dir(tmp, target)
    return target


def _verify(path: Path, entries: list[dict]) -> None:
    if not (path / MANIFEST).is_file():
        raise ArtifactError(f"{path}: ensemble artifact without {MANIFEST}")
    listed = read_json(path / MANIFEST).get("sha256", {})
    expected = {*ENSEMBLE_FILES, *(f"{e['path']}/{MANIFEST}" for e in entries)}
    if set(listed) != expected:
        raise ArtifactError(f"{path / MANIFEST}: does not list this ensemble's files and members")
    for name in sorted(expected):
        if not (path / name).is_file() or sha256_of(path / name) != listed[name]:
            raise ArtifactError(f"{path / name}: changed or missing since the ensemble was written (sha256 differs "
                                f"from {MANIFEST})")


def load_ensemble(path: Path, device: str | torch.device = "cpu") -> LoadedEnsemble:
    path = Path(path)
    entries = read_json(path / ENSEMBLE_FILE).get("members")
    if not isinstance(entries, list) or not entries:
        raise ArtifactError(f"{path / ENSEMBLE_FILE}: no members listed")
    for entry in entries:
        if not {"trial", "path", "weight"} <= set(entry) or Path(entry["path"]).is_absolute() or ".." in entry["path"]:
            raise ArtifactError(f"{path / ENSEMBLE_FILE}: bad member entry {json.dumps(entry)}")
    _verify(path, entries)
    members = [Member(e["trial"], float(e["weight"]), load_single(path / e["path"], device)) for e in entries]
    return LoadedEnsemble(path=path, members=members, metrics=read_json(path / "metrics.json"),
                          metadata=read_json(path / "metadata.json"))
