"""What export-best promotes, and what it is worth.

The sweep's best finished trial, with its selection-corrected estimate. With --ensemble, greedy ensemble
selection over the comparable finished trials is replayed too, and the ensemble is promoted only when its
corrected estimate beats the single trial's: validation alone decides, test labels never do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from covid_sweep.core.metrics import binary_metrics, choose_threshold
from covid_sweep.core.weighted_metrics import METRICS, fold_mean_metric
from covid_sweep.inference.selection import DEFAULT_SAMPLES, SelectionError
from covid_sweep.inference.sweep_estimate import FinishedTrial, SweepEstimate, estimate
from covid_sweep.model.artifact_files import read_json
from covid_sweep.model.ensemble_artifact import write_ensemble


@dataclass(frozen=True)
class Choice:
    kind: Literal["single", "ensemble"]
    trial: str | None      # the promoted trial; None for an ensemble
    artifact_dir: Path
    note: str              # why this one, in a sentence
    selection: dict        # SweepEstimate.as_dict() and promoted_ensemble, or {"unavailable": why}

    @property
    def name(self) -> str:
        """The promoted trial, or `ensemble of A (0.50), B (0.50)`."""
        if self.trial is not None:
            return self.trial
        return "ensemble of " + ", ".join(f"{name} ({weight:.2f})" for name, weight in self.selection["members"].items())

    @property
    def estimate_text(self) -> str:
        """`selection-corrected 0.866 [0.643, 0.981]` of what was promoted, or why there is none."""
        if "unavailable" in self.selection:
            return f"selection-corrected estimate not available ({self.selection['unavailable']})"
        row = self.selection["ensemble" if self.kind == "ensemble" else "single"]
        return f"selection-corrected {row['estimate']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"


def choose(finished: Sequence[FinishedTrial], best: FinishedTrial, metric: str, goal: str, ensemble: bool,
           ensembles_dir: Path, samples: int = DEFAULT_SAMPLES,
           whole: Callable[[str], Path] | None = None) -> Choice:
    """The single best trial, or (with ensemble) the greedy ensemble where its corrected estimate is better.
    finished[i].artifact need only hold what the trial recorded; whole(name): the trial's whole artifact folder
    (W&B downloads the weights only of what is promoted), by default the same folder."""
    where = {t.name: Path(t.artifact) for t in finished if t.artifact}
    whole = whole or (lambda name: where[name])
    try:
        result = estimate(finished, best.name, metric, goal, samples=samples, ensemble=ensemble)
    except SelectionError as err:
        why = f"ensemble not built: {err}; " if ensemble else ""
        return Choice("single", best.name, whole(best.name), f"{why}the best finished trial {best.name} is promoted",
                      {"unavailable": str(err)})
    selection = {**result.as_dict(), "promoted_ensemble": False}
    if not ensemble:
        return Choice("single", best.name, whole(best.name), f"the best finished trial {best.name} is promoted", selection)
    single, combined = result.single, result.ensemble
    if not result.ensemble_wins:
        note = (f"the greedy ensemble's selection-corrected estimate {combined.point:.3f} does not beat the best "
                f"single trial's {single.point:.3f}: the single trial {best.name} is promoted")
        return Choice("single", best.name, whole(best.name), note, selection)
    if len(result.members) == 1:  # greedy selection settled on one trial: that trial is the promotion
        (only,) = result.members
        note = f"greedy selection chose trial {only} alone: it is promoted as a single trial"
        return Choice("single", only, whole(only), note, selection)
    selection["promoted_ensemble"] = True
    folder = build_ensemble({name: whole(name) for name in result.members}, result, metric, goal, ensembles_dir)
    note = (f"the greedy ensemble of {len(result.members)} trials is promoted: its selection-corrected estimate "
            f"{combined.point:.3f} beats the best single trial's {single.point:.3f}")
    return Choice("ensemble", None, folder, note, selection)


def ensemble_metrics(result: SweepEstimate, metric: str, goal: str) -> dict:
    """The ensemble's metrics.json: validation values as trials compute them, and its own decision threshold."""
    probs, labels, folds = result.validation
    ones = np.ones(len(labels))
    best = {name: float(fold_mean_metric(name, probs[None, :], labels, ones, folds)[0]) for name in METRICS}
    threshold = choose_threshold(labels, probs)
    at_threshold = {f"val_{k}_at_threshold": v for k, v in binary_metrics(labels, probs, threshold).items() if k != "auc"}
    return {"kind": "weighted ensemble", "monitor": metric, "goal": goal, "best": best, "threshold": threshold,
            **at_threshold, "members": result.members}


def build_ensemble(where: dict[str, Path], result: SweepEstimate, metric: str, goal: str, ensembles_dir: Path) -> Path:
    """The ensemble's artifact under ensembles_dir, named by its members and weights (reused when it exists).
    where: each member's whole artifact folder."""
    members = [(name, where[name], weight) for name, weight in result.members.items()]
    digest = hashlib.sha256(json.dumps([(n, round(w, 6)) for n, _, w in members]).encode()).hexdigest()[:12]
    target = Path(ensembles_dir) / f"ensemble-{digest}"
    if target.is_dir():
        return target
    reference = read_json(members[0][1] / "metadata.json")  # every member validated on this same split
    shared = {key: reference[key] for key in ("data_fingerprint", "data_dir", "validation", "class_map") if key in reference}
    metadata = {**shared, "kind": "weighted ensemble",
                "members": [{"trial": name, "weight": weight, "artifact": str(path)} for name, path, weight in members]}
    return write_ensemble(target, members, ensemble_metrics(result, metric, goal), metadata)
