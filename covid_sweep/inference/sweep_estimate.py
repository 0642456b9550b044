"""The sweep's choice, replayed: which finished trials the promoted one was chosen among, read from their
artifacts, and what that choice is worth (inference/selection.py).

Trials are comparable when they scored the same validation images in the same folds of the same data:
the same data fingerprint and the same split_key (grouping, folds, seed and val_fraction decide it).
A trial that is not comparable with the promoted one is left out of the replay, and said to be.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from covid_sweep.core.errors import UserError
from covid_sweep.core.files import write_text_atomically
from covid_sweep.inference.selection import (
    DEFAULT_SAMPLES,
    ENSEMBLE_STEPS,
    Candidates,
    Ensemble,
    Estimate,
    Goal,
    Replay,
    SelectionError,
    replay,
    select_ensemble,
)
from covid_sweep.model.artifact_files import ArtifactRecord, read_record

CACHE_VERSION = 1


@dataclass(frozen=True)
class FinishedTrial:
    name: str
    artifact: Path | None


@dataclass(frozen=True)
class Compared:
    """The trials a replay compares (launch order) and those left out, with why."""

    names: tuple[str, ...]
    records: tuple[ArtifactRecord, ...]
    left_out: dict[str, str] = field(default_factory=dict)

    def candidates(self) -> Candidates:
        return Candidates.build(self.names, [r.val_predictions for r in self.records],
                                [r.best_epoch for r in self.records])


@dataclass(frozen=True)
class SweepEstimate:
    promoted: str
    compared: tuple[str, ...]
    left_out: dict[str, str]
    single: Estimate
    ensemble: Estimate | None = None
    ensemble_wins: bool = False
    paired: dict = field(default_factory=dict)
    members: dict[str, float] = field(default_factory=dict)  # the ensemble chosen on all validation images
    # the chosen ensemble's validation probabilities, with the images' labels and folds (not serialised)
    validation: tuple | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict:
        return {"promoted": self.promoted, "compared": list(self.compared), "left_out": self.left_out,
                "single": self.single.as_dict(), "ensemble": self.ensemble.as_dict() if self.ensemble else None,
                "ensemble_wins": self.ensemble_wins, "paired_difference": self.paired, "members": self.members,
                "method": "BBC-CV: grouped bootstrap of the validation images, the sweep's trial and epoch "
                          "selection re-run on each sample, the choice scored out-of-bag"}

    @classmethod
    def from_dict(cls, data: dict) -> "SweepEstimate":
        return cls(promoted=data["promoted"], compared=tuple(data["compared"]), left_out=data["left_out"],
                   single=Estimate.from_dict(data["single"]),
                   ensemble=Estimate.from_dict(data["ensemble"]) if data.get("ensemble") else None,
                   ensemble_wins=data.get("ensemble_wins", False), paired=data.get("paired_difference", {}),
                   members=data.get("members", {}))


def _why_not(record: ArtifactRecord, reference: ArtifactRecord) -> str | None:
    if record.val_predictions is None:
        return "kept no validation predictions (written by an older covid-sweep)"
    if record.metadata.get("data_fingerprint") != reference.metadata.get("data_fingerprint"):
        return "trained on other data (data fingerprint differs)"
    if record.val_predictions.split_key != reference.val_predictions.split_key:
        return "validated on another split (grouping, folds, seed or val_fraction differ)"
    if record.best_epoch not in record.val_predictions.epochs:
        return "its kept epoch has no validation predictions"
    return None


def comparable(trials: Sequence[FinishedTrial], promoted: str) -> Compared:
    """The finished trials comparable with `promoted`, in the order given (launch order)."""
    records: dict[str, ArtifactRecord] = {}
    left_out: dict[str, str] = {}
    for trial in trials:
        if trial.artifact is None:
            left_out[trial.name] = "no model artifact recorded"
            continue
        try:
            records[trial.name] = read_record(Path(trial.artifact))
        except UserError as err:
            left_out[trial.name] = f"artifact not readable here ({err})"
    if promoted not in records:
        raise SelectionError(f"the promoted trial {promoted}: {left_out.get(promoted, 'not among the finished trials')}")
    reference = records[promoted]
    if reference.val_predictions is None:
        raise SelectionError(f"the promoted trial {promoted} {_why_not(reference, reference)}")
    names, kept = [], []
    for name, record in records.items():
        reason = _why_not(record, reference)
        if reason:
            left_out[name] = reason
        else:
            names.append(name)
            kept.append(record)
    return Compared(tuple(names), tuple(kept), left_out)


def _cache_key(compared: Compared, metric: str, goal: str, samples: int, seed: int) -> str:
    """Changes with anything the replay reads: each trial's predictions (their manifest sha256 where there is
    one, else the file's own), kept epoch and order, and the replay's settings."""
    parts = [CACHE_VERSION, metric, goal, samples, seed, sorted(compared.left_out.items())]
    for name, record in zip(compared.names, compared.records):
        digest = hashlib.sha256((record.path / "val_predictions.npz").read_bytes()).hexdigest()
        parts.append([name, record.best_epoch, digest])
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def estimate(trials: Sequence[FinishedTrial], promoted: str, metric: str, goal: Goal,
             samples: int = DEFAULT_SAMPLES, seed: int = 0, ensemble: bool = False, steps: int = ENSEMBLE_STEPS,
             cache_dir: Path | None = None) -> SweepEstimate:
    """The selection-corrected estimate of promoting `promoted` (the sweep's best finished trial) and, with
    ensemble, of promoting greedy ensemble selection instead. Raises SelectionError saying why it cannot be
    computed. cache_dir: where a single-trial estimate is kept, keyed by what it read (views repeat it)."""
    compared = comparable(trials, promoted)
    cached = None
    if cache_dir is not None and not ensemble:
        cached = Path(cache_dir) / f"{_cache_key(compared, metric, goal, samples, seed)}.json"
        try:
            return SweepEstimate.from_dict(json.loads(cached.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    candidates = compared.candidates()
    result: Replay = replay(candidates, metric, goal, samples, seed, ensemble=ensemble, steps=steps)
    members, validation = {}, None
    if ensemble:
        chosen: Ensemble = select_ensemble(candidates, metric, goal, steps)
        members = {compared.names[t]: w for t, w in chosen.weights.items()}
        validation = (chosen.probs, candidates.labels, candidates.folds)
    value = SweepEstimate(promoted=promoted, compared=compared.names, left_out=compared.left_out,
                          single=result.single, ensemble=result.ensemble, ensemble_wins=result.ensemble_wins,
                          paired=result.paired, members=members, validation=validation)
    if cached is not None:
        try:  # a read-only cache only costs the next view the same seconds
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(cached, json.dumps(value.as_dict()), force=True)
        except OSError:
            pass
    return value
