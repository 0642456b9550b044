"""What the sweep's choice is worth, and a better choice: the selection replayed on its validation predictions.

Choosing the best of many trials (and each trial's best epoch) on one validation set is itself a fit:
the winner's number is optimistic. The bootstrap bias-corrected estimate (BBC-CV; Tsamardinos,
Greasidou & Borboudakis, Machine Learning 107, 2018) needs no retraining:

- draw B bootstrap samples of the validation groups (patients: never single slices, which are near-copies);
- on each, re-run the sweep's whole selection on the drawn images: every epoch of every trial scored by the
  sweep's metric as a trial computes it (the mean over its folds), the best (trial, epoch) chosen;
- score that choice on the images not drawn (out-of-bag), pooled.

The mean of those scores is the estimate, their 2.5 and 97.5 percentiles its 95 % interval.

Greedy ensemble selection with replacement (Caruana et al., ICML 2004) builds, from the same predictions,
the weighted average of trials that scores best on validation. Its choice is replayed on the same bootstrap
samples (members' epochs, then the greedy steps, on the drawn images), so its estimate is corrected as well,
and the two estimates are paired: the same samples score both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from covid_sweep.core.weighted_metrics import fold_mean_metric, sample_fold_mean, sample_values, weighted_metric
from covid_sweep.model.val_predictions import ValPredictions

DEFAULT_SAMPLES = 2000
ENSEMBLE_STEPS = 25  # greedy additions; auto-sklearn's default ensemble is 50 from hundreds of models
Goal = Literal["minimize", "maximize"]


class SelectionError(ValueError):
    """The predictions cannot support the estimate (no trials, too few groups, unscored epochs)."""


@dataclass(frozen=True)
class Candidates:
    """The validation predictions of the trials the sweep chose among, on one shared set of images.

    Rows of `probs` are (trial, epoch) pairs, trial by trial in launch order (a tie goes to the earlier
    trial, as promotion does), epochs ascending within each (a tie goes to the earlier epoch, as early
    stopping keeps it)."""

    names: tuple[str, ...]
    best_epochs: tuple[int, ...]   # the epoch each trial kept (its artifact's weights)
    probs: np.ndarray              # (R, N)
    trial_of_row: np.ndarray       # (R,)
    epoch_of_row: np.ndarray       # (R,)
    labels: np.ndarray             # (N,)
    folds: np.ndarray              # (N,)
    groups: np.ndarray             # (N,)

    @classmethod
    def build(cls, names: Sequence[str], predictions: Sequence[ValPredictions], best_epochs: Sequence[int]):
        if not predictions:
            raise SelectionError("no trial with validation predictions to choose among")
        first = predictions[0]
        for name, other in zip(names, predictions):
            if other.split_key != first.split_key:
                raise SelectionError(f"trial {name} was validated on other images than trial {names[0]}")
        order = np.argsort(first.files.astype(str))  # one image order for all, whatever order each saved
        aligned = [p.probs[:, np.argsort(p.files.astype(str))] for p in predictions]
        return cls(names=tuple(names), best_epochs=tuple(int(e) for e in best_epochs),
                   probs=np.vstack(aligned).astype(np.float64),
                   trial_of_row=np.concatenate([np.full(len(p.epochs), i) for i, p in enumerate(predictions)]),
                   epoch_of_row=np.concatenate([p.epochs for p in predictions]),
                   labels=first.labels[order].astype(np.int64), folds=first.folds[order],
                   groups=first.groups[order].astype(str))

    @property
    def n_groups(self) -> int:
        return len(np.unique(self.groups))

    def kept(self) -> np.ndarray:
        """(T, N): each trial's predictions at the epoch it kept."""
        rows = [np.flatnonzero((self.trial_of_row == t) & (self.epoch_of_row == epoch))
                for t, epoch in enumerate(self.best_epochs)]
        missing = [self.names[t] for t, r in enumerate(rows) if not len(r)]
        if missing:
            raise SelectionError(f"trial {missing[0]}: no validation predictions of the epoch it kept")
        return self.probs[[r[0] for r in rows]]


@dataclass(frozen=True)
class Estimate:
    """A selection-corrected estimate of the sweep metric: mean and 95 % interval of out-of-bag scores."""

    metric: str
    point: float
    low: float
    high: float
    samples: int          # bootstrap samples that gave a score (an out-of-bag set of one class gives no AUC)
    trials: int
    images: int
    groups: int
    selected: float       # the chosen model's value on all validation images: what the sweep reports

    def as_dict(self) -> dict:
        return {"metric": self.metric, "estimate": self.point, "low": self.low, "high": self.high,
                "samples": self.samples, "trials": self.trials, "images": self.images, "groups": self.groups,
                "selected_value": self.selected}

    @classmethod
    def from_dict(cls, data: dict) -> "Estimate":
        return cls(metric=data["metric"], point=data["estimate"], low=data["low"], high=data["high"],
                   samples=data["samples"], trials=data["trials"], images=data["images"], groups=data["groups"],
                   selected=data["selected_value"])

    def text(self) -> str:
        return f"selection-corrected {self.point:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Ensemble:
    """Trial index -> how many greedy steps chose it; weights are those counts over their sum."""

    counts: dict[int, int]
    value: float          # its validation value (sweep metric, as trials compute it)
    probs: np.ndarray     # its validation probabilities

    @property
    def weights(self) -> dict[int, float]:
        total = sum(self.counts.values())
        return {t: n / total for t, n in self.counts.items()}


@dataclass(frozen=True)
class Replay:
    single: Estimate
    ensemble: Estimate | None = None
    ensemble_wins: bool = False   # the ensemble's estimate is better than the single trial's
    paired: dict = field(default_factory=dict)  # the paired difference ensemble - single: mean and interval


def _oriented(values: np.ndarray, goal: Goal) -> np.ndarray:
    """Bigger is better, NaN worst: a NaN value is never chosen over a number."""
    key = values if goal == "maximize" else -values
    return np.where(np.isnan(key), -np.inf, key)


def best_row(values: np.ndarray, goal: Goal) -> np.ndarray | int:
    """The first row (last axis) with the best value: the earlier trial, then the earlier epoch, on a tie."""
    return np.argmax(_oriented(values, goal), axis=-1)


def trial_best_rows(values: np.ndarray, trial_of_row: np.ndarray, trials: int, goal: Goal) -> np.ndarray:
    """(S, T): on each sample, each trial's first row with its best value: the epoch it would keep there."""
    key = _oriented(values, goal)
    rows = np.empty((len(values), trials), dtype=np.int64)
    for t in range(trials):
        mine = np.flatnonzero(trial_of_row == t)
        rows[:, t] = mine[np.argmax(key[:, mine], axis=1)]
    return rows


def greedy_ensemble(members: np.ndarray, labels: np.ndarray, folds: np.ndarray, weights: np.ndarray, metric: str,
                    goal: Goal, steps: int = ENSEMBLE_STEPS) -> np.ndarray:
    """Caruana's forward selection with replacement, on S samples at once.

    members (S, T, N): each sample's candidate predictions; weights (S, N): each sample's image weights.
    Each step adds, per sample, the member whose addition scores best (the first on a tie); the counts
    (S, T) of each sample's best prefix are returned, so the first step, its best single member, is the floor.
    """
    samples, trials, n = members.shape
    counts = np.zeros((samples, trials), dtype=np.int64)
    total = np.zeros((samples, n))
    best_key, best_counts = np.full(samples, -np.inf), counts.copy()
    row_weights = np.repeat(weights, trials, axis=0)
    everyone = np.arange(samples)
    for step in range(1, steps + 1):
        mixtures = (total[:, None, :] + members) / step
        values = fold_mean_metric(metric, mixtures.reshape(-1, n), labels, row_weights, folds).reshape(samples, trials)
        key = _oriented(values, goal)
        chosen = np.argmax(key, axis=1)
        total += members[everyone, chosen]
        counts[everyone, chosen] += 1
        better = key[everyone, chosen] > best_key
        best_key[better], best_counts[better] = key[everyone, chosen][better], counts[better]
    return best_counts


def group_counts(groups: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """(S, G): bootstrap samples of the groups (np.unique order), each drawn with replacement, as a count per
    group; an image counts as often as its group was drawn, 0 times out-of-bag."""
    rng = np.random.default_rng(seed)
    size = len(np.unique(groups))
    return np.stack([np.bincount(rng.integers(0, size, size), minlength=size) for _ in range(samples)]).astype(float)


def select_single(c: Candidates, metric: str, goal: Goal) -> tuple[int, int, float]:
    """(trial, epoch, value) the sweep's own selection makes on all validation images."""
    values = fold_mean_metric(metric, c.probs, c.labels, np.ones(len(c.labels)), c.folds)
    row = int(best_row(values, goal))
    return int(c.trial_of_row[row]), int(c.epoch_of_row[row]), float(values[row])


def select_ensemble(c: Candidates, metric: str, goal: Goal, steps: int = ENSEMBLE_STEPS) -> Ensemble:
    """Greedy selection over each trial's kept epoch, on all validation images."""
    kept = c.kept()
    ones = np.ones((1, len(c.labels)))
    counts = greedy_ensemble(kept[None], c.labels, c.folds, ones, metric, goal, steps)[0]
    probs = counts @ kept / counts.sum()
    value = float(fold_mean_metric(metric, probs[None, :], c.labels, ones, c.folds)[0])
    return Ensemble(counts={int(t): int(n) for t, n in enumerate(counts) if n}, value=value, probs=probs)


def _check(c: Candidates) -> None:
    if c.n_groups < 2:
        raise SelectionError("the validation images form fewer than 2 groups: nothing to resample")
    if np.isnan(c.probs).any():
        raise SelectionError("a trial has unscored epochs (NaN predictions)")


def _summary(metric: str, scores: np.ndarray, c: Candidates, selected: float) -> Estimate:
    values = scores[~np.isnan(scores)]
    if not len(values):
        raise SelectionError(f"no bootstrap sample gave an out-of-bag {metric} (too few images of a class?)")
    low, high = np.percentile(values, [2.5, 97.5])
    return Estimate(metric=metric, point=float(values.mean()), low=float(low), high=float(high),
                    samples=len(values), trials=len(c.names), images=len(c.labels), groups=c.n_groups,
                    selected=selected)


def _ensemble_scores(c: Candidates, metric: str, goal: Goal, values: np.ndarray, counts: np.ndarray,
                     group: np.ndarray, steps: int, chunk: int = 64) -> np.ndarray:
    """Each sample's greedy ensemble (its members at their in-bag best epochs), scored out-of-bag."""
    member_rows = trial_best_rows(values, c.trial_of_row, len(c.names), goal)
    scores = []
    for start in range(0, len(counts), chunk):
        rows, weights = member_rows[start:start + chunk], counts[start:start + chunk][:, group]
        members = c.probs[rows]  # (S, T, N)
        chosen = greedy_ensemble(members, c.labels, c.folds, weights, metric, goal, steps)
        mixed = np.einsum("st,stn->sn", chosen, members) / chosen.sum(axis=1, keepdims=True)
        scores.append(weighted_metric(metric, mixed, c.labels, (weights == 0).astype(float)))
    return np.concatenate(scores)


def replay(c: Candidates, metric: str, goal: Goal, samples: int = DEFAULT_SAMPLES, seed: int = 0,
           ensemble: bool = False, steps: int = ENSEMBLE_STEPS, counts: np.ndarray | None = None) -> Replay:
    """The selection-corrected estimate of the single best trial and, with ensemble, of greedy ensemble
    selection, on the same bootstrap samples (counts (S, G) per group, np.unique order; default group_counts).
    A sample that leaves no group out-of-bag scores nothing and is skipped."""
    _check(c)
    _, group = np.unique(c.groups, return_inverse=True)
    counts = group_counts(c.groups, samples, seed) if counts is None else np.asarray(counts, dtype=float)
    counts = counts[(counts == 0).any(axis=1)]
    values = sample_fold_mean(metric, c.probs, c.labels, c.folds, group, counts)
    chosen = best_row(values, goal)
    out_of_bag = (counts == 0).astype(float)
    single_scores = np.empty(len(counts))
    for row in np.unique(chosen):  # a few distinct winners: each scored on all its samples at once
        mine = chosen == row
        single_scores[mine] = sample_values(metric, c.probs[row][None, :], c.labels, group, out_of_bag[mine])[:, 0]
    _, _, selected = select_single(c, metric, goal)
    single = _summary(metric, single_scores, c, selected)
    if not ensemble:
        return Replay(single=single)
    ensemble_scores = _ensemble_scores(c, metric, goal, values, counts, group, steps)
    combined = _summary(metric, ensemble_scores, c, select_ensemble(c, metric, goal, steps).value)
    both = ~(np.isnan(ensemble_scores) | np.isnan(single_scores))
    difference = ensemble_scores[both] - single_scores[both] if both.any() else np.array([np.nan])
    sign = 1 if goal == "maximize" else -1
    paired = {"mean": float(np.mean(difference)), "low": float(np.percentile(difference, 2.5)),
              "high": float(np.percentile(difference, 97.5))}
    return Replay(single=single, ensemble=combined, ensemble_wins=bool(sign * (combined.point - single.point) > 0),
                  paired=paired)
