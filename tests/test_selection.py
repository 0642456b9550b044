"""The selection-corrected estimate (BBC-CV) and greedy ensemble selection, on hand-made prediction matrices."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from covid_sweep.core.metrics import binary_metrics
from covid_sweep.core.weighted_metrics import fold_mean_metric, sample_fold_mean, weighted_auc, weighted_metric
from covid_sweep.inference.selection import (
    Candidates,
    SelectionError,
    greedy_ensemble,
    group_counts,
    replay,
    select_ensemble,
    select_single,
)
from covid_sweep.model.val_predictions import ValPredictions

LABELS = np.array([0, 0, 0, 1, 1, 1])


def candidates(trials: dict[str, list[list[float]]], labels=LABELS, folds=None, groups=None, best=None) -> Candidates:
    """Trials as {name: [epoch 1 probs, epoch 2 probs, ...]} on images named 0..N-1."""
    n = len(labels)
    folds = np.zeros(n, int) if folds is None else np.asarray(folds)
    groups = np.arange(n).astype(str) if groups is None else np.asarray(groups)
    predictions = [ValPredictions.build([f"{i:02d}.png" for i in range(n)], labels, folds, groups,
                                        list(range(1, len(epochs) + 1)), epochs) for epochs in trials.values()]
    return Candidates.build(list(trials), predictions, best or [1] * len(trials))


# ---- the weighted metrics: what sklearn gives on the images repeated `weight` times ----------------------

@pytest.mark.parametrize("seed", range(5))
def test_weighted_metrics_equal_sklearn_on_repeated_images(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 30)
    probs = np.round(rng.uniform(0, 1, (4, 30)), 1)  # rounded: many ties, which count half in an AUC
    weights = rng.integers(0, 4, 30).astype(float)
    repeated = np.repeat(np.arange(30), weights.astype(int))
    aucs = weighted_auc(probs, labels, weights)
    for row in range(4):
        y, p = labels[repeated], probs[row, repeated]
        expected = binary_metrics(y, p)
        assert aucs[row] == pytest.approx(roc_auc_score(y, p))
        for metric in ("acc", "f1"):
            assert weighted_metric(f"val_{metric}", probs[row:row + 1], labels, weights)[0] == pytest.approx(expected[metric])
        loss = -np.mean(y * np.log(np.clip(p, 1e-7, 1)) + (1 - y) * np.log(np.clip(1 - p, 1e-7, 1)))
        assert weighted_metric("val_loss", probs[row:row + 1], labels, weights)[0] == pytest.approx(loss)


@pytest.mark.parametrize("metric", ["val_auc", "val_acc", "val_f1", "val_loss"])
def test_both_forms_agree_on_group_samples(metric):
    rng = np.random.default_rng(4)
    labels, folds = rng.integers(0, 2, 40), np.repeat([0, 1], 20)
    group = np.repeat(np.arange(10), 4)  # four slices a patient, patients within one fold
    probs = np.round(rng.uniform(0, 1, (3, 40)), 2)
    counts = group_counts(group.astype(str), 25, seed=0)
    many = sample_fold_mean(metric, probs, labels, folds, group, counts)
    for s, sample in enumerate(counts):
        one = fold_mean_metric(metric, probs, labels, sample[group], folds)
        assert many[s] == pytest.approx(one, nan_ok=True)


def test_auc_of_a_sample_with_one_class_is_nan():
    weights = np.array([1.0, 1, 1, 0, 0, 0])  # only the negatives drawn
    assert np.isnan(weighted_auc(np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]), LABELS, weights)[0])


def test_fold_mean_is_the_mean_of_each_folds_own_metric():
    probs = np.array([[0.2, 0.7, 0.4, 0.6, 0.3, 0.9]])
    folds = np.array([0, 0, 1, 1, 1, 0])  # fold 0: images 0, 1, 5; fold 1: 2, 3, 4
    per_fold = [roc_auc_score(LABELS[folds == k], probs[0, folds == k]) for k in (0, 1)]
    assert fold_mean_metric("val_auc", probs, LABELS, np.ones(6), folds)[0] == pytest.approx(np.mean(per_fold))
    assert fold_mean_metric("val_auc", probs, LABELS, np.ones(6), folds)[0] != pytest.approx(
        weighted_metric("val_auc", probs, LABELS, np.ones(6))[0])


# ---- resampling groups ---------------------------------------------------------------------------------

def test_samples_draw_groups_never_single_images():
    groups = np.array(["p1", "p1", "p1", "p2", "p3", "p3", "p4"])
    counts = group_counts(groups, 200, seed=1)
    assert counts.shape == (200, 4) and (counts.sum(axis=1) == 4).all()  # as many patients drawn as there are
    assert (counts == 0).any(axis=1).mean() > 0.5  # most samples leave a patient out-of-bag
    # a sample counts images through their group: p1's three slices are in or out together
    c = candidates({"A": [[0.1, 0.2, 0.9, 0.8, 0.7, 0.3, 0.5]]}, labels=np.array([0, 0, 0, 1, 1, 1, 0]), groups=groups)
    _, group = np.unique(c.groups, return_inverse=True)
    assert group.tolist() == [0, 0, 0, 1, 2, 2, 3]


# ---- BBC: the arithmetic by hand ------------------------------------------------------------------------

def test_the_estimate_on_two_hand_checked_samples():
    c = candidates({"A": [[0.1, 0.2, 0.9, 0.8, 0.7, 0.3]],
                    "B": [[0.4, 0.5, 0.3, 0.6, 0.35, 0.7]]})
    # all 6 images: A scores 6/9, B 7/9: the sweep promotes B and reports 0.778
    assert select_single(c, "val_auc", "maximize") == (1, 1, pytest.approx(7 / 9))
    counts = [[2.0, 1, 0, 1, 2, 0],  # in-bag 0, 1, 3, 4: A 1.0 beats B 3/9; out-of-bag 2 (neg .9), 5 (pos .3): A 0
              [0.0, 1, 1, 0, 1, 1]]  # in-bag 1, 2, 4, 5: A 0.5, B 0.75; out-of-bag 0, 3: B ranks them right, 1
    result = replay(c, "val_auc", "maximize", counts=counts).single
    assert result.point == pytest.approx(0.5) and result.samples == 2
    assert result.selected == pytest.approx(7 / 9)
    # without the re-selection on each sample (B, the full-data winner, scored out-of-bag) it would read 1.0


def test_ties_go_to_the_earlier_trial_then_the_earlier_epoch():
    c = candidates({"A": [[0.1, 0.2, 0.3, 0.6, 0.7, 0.8], [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]],
                    "B": [[0.1, 0.2, 0.3, 0.6, 0.7, 0.8]]}, best=[1, 1])
    assert select_single(c, "val_auc", "maximize")[:2] == (0, 1)
    loss = candidates({"A": [[0.4] * 6], "B": [[0.1, 0.1, 0.1, 0.9, 0.9, 0.9]]})
    assert select_single(loss, "val_loss", "minimize")[0] == 1  # minimize: the lower loss wins


# ---- BBC: the vectorised replay equals a brute-force one ------------------------------------------------

def _pair_auc(y: np.ndarray, p: np.ndarray) -> float:
    """AUC by counting every (positive, negative) pair: exact, so two candidates that tie really tie (sklearn's
    trapezoids can split a tie by the last bit, and greedy selection then picks another member)."""
    pos, neg = p[y == 1][:, None], p[y == 0][None, :]
    if not pos.size or not neg.size:
        return np.nan
    return float((2 * (pos > neg).sum() + (pos == neg).sum()) / (2 * pos.size * neg.size))


def _brute_force(c: Candidates, counts: np.ndarray, ensemble_steps: int | None = None) -> list[float]:
    """Each sample as a data set of its own: the images repeated, every AUC by counting pairs, the selection by loops."""
    scores = []
    _, group = np.unique(c.groups, return_inverse=True)
    for weights in counts[:, group]:
        repeat = np.repeat(np.arange(len(c.labels)), weights.astype(int))
        out = weights == 0
        y, folds = c.labels[repeat], c.folds[repeat]

        def trial_metric(p):
            return np.nanmean([_pair_auc(y[folds == k], p[folds == k]) for k in np.unique(folds)])

        values = [trial_metric(row[repeat]) for row in c.probs]
        if ensemble_steps is None:
            chosen = c.probs[int(np.argmax(values))]
        else:
            members = []
            for t in range(len(c.names)):
                rows = [r for r in range(len(values)) if c.trial_of_row[r] == t]
                members.append(c.probs[max(rows, key=lambda r: (values[r], -r))])
            counts, total, best = [0] * len(members), np.zeros(len(c.labels)), (-1.0, None)
            for step in range(1, ensemble_steps + 1):
                gains = [trial_metric(((total + m) / step)[repeat]) for m in members]
                pick = int(np.argmax(gains))
                total, counts[pick] = total + members[pick], counts[pick] + 1
                if gains[pick] > best[0]:
                    best = (gains[pick], list(counts))
            chosen = np.asarray(best[1]) @ np.asarray(members) / sum(best[1])
        scores.append(_pair_auc(c.labels[out], chosen[out]))
    return scores


def _random_sweep(seed: int, trials: int = 4, epochs: int = 3, folds: int = 1) -> Candidates:
    rng = np.random.default_rng(seed)
    labels = np.tile([0, 1], 15)
    groups = np.repeat(np.arange(15), 2).astype(str)  # two slices a patient, one of each class
    skill = rng.uniform(0.4, 0.8, (trials, epochs, 1))  # close: the in-bag winner changes from sample to sample
    probs = 1 / (1 + np.exp(-(skill * (labels - 0.5) * 2 + rng.normal(0, 1, (trials, epochs, 30)))))
    fold_of = (np.arange(30) // 2) % folds
    return candidates({f"t{t}": probs[t].tolist() for t in range(trials)}, labels=labels, folds=fold_of, groups=groups,
                      best=[1] * trials)


@pytest.mark.parametrize("folds", [1, 3])
def test_the_replay_equals_a_brute_force_reselection(folds):
    c = _random_sweep(seed=folds, folds=folds)
    counts = group_counts(c.groups, 40, seed=7)
    counts = counts[(counts == 0).any(axis=1)]
    result = replay(c, "val_auc", "maximize", counts=counts)
    brute = _brute_force(c, counts)
    assert result.single.point == pytest.approx(np.mean(brute))
    assert result.single.low == pytest.approx(np.percentile(brute, 2.5))
    assert result.single.high == pytest.approx(np.percentile(brute, 97.5))


def test_pair_counting_agrees_with_sklearn():
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 2, 40), np.round(rng.uniform(0, 1, 40), 1)
    assert _pair_auc(y, p) == pytest.approx(roc_auc_score(y, p))


def test_the_ensembles_replay_equals_a_brute_force_one():
    c = _random_sweep(seed=5, trials=3, epochs=2)
    counts = group_counts(c.groups, 15, seed=3)
    counts = counts[(counts == 0).any(axis=1)]
    result = replay(c, "val_auc", "maximize", counts=counts, ensemble=True, steps=4)
    assert result.ensemble.point == pytest.approx(np.mean(_brute_force(c, counts, ensemble_steps=4)))


def test_the_winners_curse_is_corrected_down():
    # 20 trials of no skill at all: the best of them looks good on validation, the estimate knows better
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 30)
    noise = {f"t{t}": [rng.uniform(0, 1, 60).tolist()] for t in range(20)}
    c = candidates(noise, labels=labels, groups=np.repeat(np.arange(30), 2).astype(str))
    result = replay(c, "val_auc", "maximize", samples=300, seed=1).single
    assert result.selected > 0.6
    # pure noise: what a trial gains in-bag it loses out-of-bag, so BBC even errs a little low here (0.43)
    assert result.point < 0.5 < result.high and result.low < 0.5


# ---- greedy ensemble selection ------------------------------------------------------------------------

def test_greedy_selection_by_hand():
    # A and B each get one positive wrong; averaged they rank every image right
    kept = np.array([[0.1, 0.2, 0.3, 0.9, 0.8, 0.25],
                     [0.1, 0.2, 0.3, 0.28, 0.9, 0.8],
                     [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])
    counts = greedy_ensemble(kept[None], LABELS, np.zeros(6, int), np.ones((1, 6)), "val_auc", "maximize", steps=5)
    assert counts.tolist() == [[1, 1, 0]]  # A first (the earlier of two equals), then B makes it perfect
    c = candidates({"A": [kept[0].tolist()], "B": [kept[1].tolist()], "C": [kept[2].tolist()]})
    ensemble = select_ensemble(c, "val_auc", "maximize", steps=5)
    assert ensemble.weights == {0: 0.5, 1: 0.5} and ensemble.value == pytest.approx(1.0)


def test_greedy_selection_never_does_worse_than_its_best_member_in_bag():
    c = _random_sweep(seed=11, trials=5, epochs=1)
    single = select_single(c, "val_auc", "maximize")[2]
    assert select_ensemble(c, "val_auc", "maximize").value >= single


# ---- what cannot be estimated ----------------------------------------------------------------------------

def test_trials_validated_on_other_images_are_not_comparable():
    a = ValPredictions.build(["a", "b"], [0, 1], [0, 0], ["g", "h"], [1], [[0.2, 0.8]])
    b = ValPredictions.build(["a", "c"], [0, 1], [0, 0], ["g", "h"], [1], [[0.2, 0.8]])
    with pytest.raises(SelectionError, match="other images"):
        Candidates.build(["t1", "t2"], [a, b], [1, 1])


def test_one_group_cannot_be_resampled():
    c = candidates({"A": [[0.1, 0.2, 0.3, 0.6, 0.7, 0.8]]}, groups=["p"] * 6)
    with pytest.raises(SelectionError, match="fewer than 2 groups"):
        replay(c, "val_auc", "maximize", samples=10)
