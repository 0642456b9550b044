"""Binary classification metrics (sklearn) and the decision threshold chosen on validation."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score


def binary_metrics(y_true, prob, threshold: float = 0.5) -> dict[str, float]:
    """accuracy, AUC, F1, sensitivity (recall of COVID) and specificity at `threshold`."""
    y_true = np.asarray(y_true, dtype=int)
    prob = np.asarray(prob, dtype=float)
    y_pred = (prob >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    both_classes = len(np.unique(y_true)) == 2
    # accuracy and F1 from the same four counts: sklearn's own calls validate their input again, and this runs
    # every epoch
    return {
        "acc": float((tp + tn) / len(y_true)) if len(y_true) else math.nan,
        # AUC is undefined with one class present; NaN rather than a misleading 0.5
        "auc": float(roc_auc_score(y_true, prob)) if both_classes else math.nan,
        "f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0,  # sklearn's zero_division=0
        "sensitivity": float(tp / (tp + fn)) if tp + fn else math.nan,
        "specificity": float(tn / (tn + fp)) if tn + fp else math.nan,
    }


# Probabilities closer than this are one value to a cut. The same image scored in another batch, or with
# another thread count, differs in the last bits of its float32 logits (a few 1e-6 after the sigmoid at
# worst); a cut placed at or near a validation probability would flip that image's decision by chance.
TIE = 1e-4


def candidate_cuts(prob: np.ndarray) -> np.ndarray:
    """Cuts that separate the validation probabilities, each as far from its neighbours as it can be.

    One cut below every probability (all COVID), one in the middle of every gap wider than TIE, and 0.5
    where no probability lies within TIE of it. No cut ever sits on or next to a probability."""
    values = np.unique(prob)
    gaps = np.diff(values)
    middles = ((values[:-1] + values[1:]) / 2)[gaps > TIE]
    default = [0.5] if np.abs(values - 0.5).min() > TIE else []
    return np.unique(np.concatenate([[values[0] / 2], middles, default]))


def choose_threshold(y_true, prob) -> float:
    """The probability cut for deciding COVID, chosen on validation with the one-standard-error rule.

    Of the cuts whose validation accuracy is within one binomial standard error of the best, the one
    closest to 0.5: on a validation set of ~100 images the single best cut is mostly noise (a cut at
    0.2 that wins by one image), and such a cut does not carry over to the test set.
    """
    y_true = np.asarray(y_true, dtype=int)
    prob = np.asarray(prob, dtype=float)
    if len(prob) == 0 or np.isnan(prob).any():
        return 0.5
    candidates = candidate_cuts(prob)
    scores = np.array([((prob >= t).astype(int) == y_true).mean() for t in candidates])
    best = scores.max()
    standard_error = np.sqrt(best * (1 - best) / len(y_true))
    good = candidates[scores >= best - standard_error]
    return float(good[np.argmin(np.abs(good - 0.5))])
