"""The sweep metrics of many prediction vectors on many bootstrap samples at once.

A bootstrap sample of validation groups is a count per group (how often it was drawn; 0: out-of-bag), so
each image is counted as often as its group was drawn. Two forms, both vectorised:

- `sample_values`: one probability matrix (rows: every epoch of every trial) on a matrix of samples. Each
  metric is reduced once per row to per-group sums (for AUC: a group-by-group matrix of pair counts), so a
  sample's value is a product with its counts: thousands of samples cost a few matrix products a row.
- `weighted_metric`: any probabilities with any per-image weights (the greedy ensemble's changing mixtures).

With integer counts every value equals what core.metrics (sklearn) gives on the images repeated that many
times; tests check both forms against it.
"""

from __future__ import annotations

import numpy as np

METRICS = ("val_auc", "val_acc", "val_f1", "val_loss")
# as the training loop scores val_loss: probabilities clipped away from 0 and 1
LOSS_CLIP = 1e-7


def _check(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")


def image_losses(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), LOSS_CLIP, 1 - LOSS_CLIP)
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))


def _from_counts(metric: str, tp, fp, fn, tn, loss, total) -> np.ndarray:
    """A metric from weighted confusion counts at the cut 0.5 (binary_metrics' default) or summed losses."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "val_loss":
            return np.where(total > 0, loss / total, np.nan)
        if metric == "val_acc":
            return np.where(total > 0, (tp + tn) / total, np.nan)
        return np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)  # f1, sklearn's zero_division=0


def weighted_auc(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of each row of probs (R, N) (Mann-Whitney, ties count half), image i of row r counted weights[r, i]
    (or weights[i]) times; NaN where the weighted sample lacks a class."""
    rows, n = probs.shape
    weights = np.broadcast_to(weights, (rows, n))
    order = np.argsort(probs, axis=1)  # ties need no order: they are one block below
    ordered = np.take_along_axis(probs, order, axis=1)
    block = np.cumsum(np.concatenate([np.zeros((rows, 1), bool), np.diff(ordered, axis=1) != 0], axis=1), axis=1)
    positive = np.take_along_axis(weights * (labels == 1), order, axis=1)
    negative = np.take_along_axis(weights * (labels == 0), order, axis=1)
    flat = (block + np.arange(rows)[:, None] * n).ravel()
    per_block = np.bincount(flat, negative.ravel(), minlength=rows * n).reshape(rows, n)
    below = np.cumsum(per_block, axis=1) - per_block  # negatives in lower blocks
    rank_of = np.take_along_axis(below + 0.5 * per_block, block, axis=1)
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (positive * rank_of).sum(axis=1) / pairs, np.nan)


def weighted_metric(metric: str, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`metric` of every row of probs (R, N), pooled over the images, with weights (N,) or (R, N)."""
    _check(metric)
    if metric == "val_auc":
        return weighted_auc(probs, labels, weights)
    weights = np.broadcast_to(weights, probs.shape)
    called = probs >= 0.5
    positive, negative = weights * (labels == 1), weights * (labels == 0)
    tp, fp = (called * positive).sum(axis=1), (called * negative).sum(axis=1)
    fn, tn = positive.sum(axis=1) - tp, negative.sum(axis=1) - fp
    loss = (image_losses(probs, labels) * weights).sum(axis=1) if metric == "val_loss" else None
    return _from_counts(metric, tp, fp, fn, tn, loss, weights.sum(axis=1))


def fold_mean(per_fold: list[np.ndarray]) -> np.ndarray:
    """The mean over folds, a NaN fold skipped (the training loop's nanmean), NaN where every fold is."""
    stacked = np.stack(per_fold)
    finite = np.isfinite(stacked)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite.any(axis=0), np.where(finite, stacked, 0).sum(axis=0) / finite.sum(axis=0), np.nan)


def fold_mean_metric(metric: str, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                     folds: np.ndarray) -> np.ndarray:
    """What a trial logs as its epoch's metric: the mean over its folds of each fold's own metric. One fold
    (a holdout) is the pooled metric itself."""
    fold_ids = np.unique(folds)
    if len(fold_ids) == 1:
        return weighted_metric(metric, probs, labels, weights)
    weights = np.broadcast_to(weights, probs.shape)
    return fold_mean([weighted_metric(metric, probs[:, folds == k], labels[folds == k], weights[:, folds == k])
                      for k in fold_ids])


def _one_hot(index: np.ndarray, size: int) -> np.ndarray:
    hot = np.zeros((len(index), size))
    hot[np.arange(len(index)), index] = 1.0
    return hot


def _pair_matrix(p: np.ndarray, labels: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """(G, G): for each (group g, group h), positives of g ranked above negatives of h, ties half."""
    pos, neg = labels == 1, labels == 0
    above = (p[pos][:, None] > p[neg][None, :]) + 0.5 * (p[pos][:, None] == p[neg][None, :])
    return _one_hot(group[pos], groups).T @ above @ _one_hot(group[neg], groups)


def sample_values(metric: str, probs: np.ndarray, labels: np.ndarray, group: np.ndarray,
                  counts: np.ndarray) -> np.ndarray:
    """(S, R): `metric` of every row of probs (R, N), pooled, on every sample of counts (S, G) (group[i]: the
    column of image i's group)."""
    _check(metric)
    groups = counts.shape[1]
    hot = _one_hot(group, groups)
    if metric == "val_auc":
        positives, negatives = counts @ (hot.T @ (labels == 1)), counts @ (hot.T @ (labels == 0))
        pairs = positives * negatives
        out = np.empty((len(counts), len(probs)))
        for r, p in enumerate(probs):
            above = _pair_matrix(p, labels, group, groups)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, r] = np.where(pairs > 0, ((counts @ above) * counts).sum(axis=1) / pairs, np.nan)
        return out
    called = (probs >= 0.5).astype(np.float64)  # (R, N)
    positive, negative = hot.T * (labels == 1), hot.T * (labels == 0)  # (G, N)
    tp, fp = counts @ (positive @ called.T), counts @ (negative @ called.T)
    all_pos, all_neg = counts @ positive.sum(axis=1), counts @ negative.sum(axis=1)
    fn, tn = all_pos[:, None] - tp, all_neg[:, None] - fp
    loss = counts @ (hot.T @ image_losses(probs, labels).T) if metric == "val_loss" else None
    return _from_counts(metric, tp, fp, fn, tn, loss, (all_pos + all_neg)[:, None])


def sample_fold_mean(metric: str, probs: np.ndarray, labels: np.ndarray, folds: np.ndarray, group: np.ndarray,
                     counts: np.ndarray) -> np.ndarray:
    """(S, R): the trial-style metric (mean over folds) of every row on every sample."""
    fold_ids = np.unique(folds)
    if len(fold_ids) == 1:
        return sample_values(metric, probs, labels, group, counts)
    per_fold = []
    for k in fold_ids:
        mine = folds == k
        present, local = np.unique(group[mine], return_inverse=True)
        per_fold.append(sample_values(metric, probs[:, mine], labels[mine], local, counts[:, present]))
    return fold_mean(per_fold)
