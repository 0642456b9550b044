import math
import warnings

import numpy as np
import pytest

from covid_sweep.core.metrics import TIE, binary_metrics, candidate_cuts, choose_threshold


def test_binary_metrics_match_a_hand_count():
    y = [1, 1, 1, 0, 0, 0, 0]
    p = [0.9, 0.6, 0.4, 0.7, 0.2, 0.1, 0.3]
    m = binary_metrics(y, p)
    # predicted 1: 0.9, 0.6, 0.7 -> tp 2, fp 1, fn 1, tn 3
    assert m["acc"] == pytest.approx(5 / 7) and m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4) and m["f1"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(10 / 12)


@pytest.mark.parametrize("seed", range(4))
def test_accuracy_and_f1_from_the_counts_agree_with_sklearn(seed):
    from sklearn.metrics import accuracy_score, f1_score
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 50)
    p = rng.uniform(0, 1, 50) if seed < 2 else np.zeros(50)  # seed 2 and 3: nothing called COVID
    if seed == 3:
        y = np.zeros(50, dtype=int)  # and nothing is: F1's 0/0, which sklearn's zero_division=0 makes 0
    m = binary_metrics(y, p)
    assert m["acc"] == pytest.approx(accuracy_score(y, p >= 0.5))
    assert m["f1"] == pytest.approx(f1_score(y, p >= 0.5, zero_division=0))


def test_auc_is_nan_with_one_class():
    assert math.isnan(binary_metrics([1, 1], [0.2, 0.9])["auc"])


def test_threshold_moves_only_when_it_clearly_pays():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    # a calibrated model: the best cut found on 100 images is noise, 0.5 is within one SE of it
    p = np.clip(y * 0.3 + rng.uniform(0.2, 0.5, 100), 0, 1)
    assert choose_threshold(y, p) == pytest.approx(0.5)
    # a model whose scores are all shifted down: 0.5 calls everything negative, a far lower cut is needed
    shifted = np.where(y == 1, rng.uniform(0.25, 0.35, 100), rng.uniform(0.0, 0.1, 100))
    threshold = choose_threshold(y, shifted)
    assert 0.1 < threshold <= 0.35
    assert binary_metrics(y, shifted, threshold)["acc"] == 1.0


def test_threshold_without_scores_is_half():
    assert choose_threshold([0, 1], [np.nan, np.nan]) == 0.5


@pytest.mark.parametrize("seed", range(6))
def test_the_cut_never_sits_on_or_next_to_a_validation_probability(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    # clusters of near-equal scores, as an under-trained model gives: a cut inside one would be float noise
    p = np.repeat(rng.uniform(0.3, 0.7, 10), 4) + rng.uniform(-3e-5, 3e-5, 40)
    threshold = choose_threshold(y, p)
    assert np.abs(p - threshold).min() > TIE / 2
    # the same images scored again with last-bit differences (another batch, another thread count) decide the same
    for _ in range(5):
        noisy = p + rng.uniform(-1e-6, 1e-6, 40)
        assert ((noisy >= threshold) == (p >= threshold)).all()


def test_a_cut_between_two_scores_decides_as_a_cut_at_the_upper_one_did():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.05, 0.1, 0.15, 0.2, 0.25, 0.3])  # 0.5 calls all six negative: accuracy 1/2
    threshold = choose_threshold(y, p)
    assert threshold == pytest.approx(0.175)  # the middle of the gap the perfect cut lies in
    assert binary_metrics(y, p, threshold)["acc"] == 1.0


def test_candidate_cuts_keep_0_5_only_away_from_every_score():
    assert 0.5 in candidate_cuts(np.array([0.2, 0.9]))
    assert 0.5 not in candidate_cuts(np.array([0.2, 0.5 + TIE / 3, 0.9]))
    cuts = candidate_cuts(np.array([0.2, 0.2 + TIE / 2, 0.9]))  # the first two are one value to a cut
    assert cuts.tolist() == pytest.approx([0.1, 0.5, (0.2 + TIE / 2 + 0.9) / 2])


def test_of_the_cuts_within_one_standard_error_the_one_closest_to_half_wins():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.3, 0.4, 0.5, 0.7])  # 0.5 is a score, so no cut sits there
    # cuts 0.15, 0.35, 0.45, 0.6 score 2/4, 3/4, 2/4, 3/4; one SE of 3/4 on 4 images is 0.22: 0.35 and 0.6 tie
    assert candidate_cuts(p).tolist() == pytest.approx([0.15, 0.35, 0.45, 0.6])
    assert choose_threshold(y, p) == pytest.approx(0.6)  # 0.1 from 0.5, where 0.35 is 0.15 away
    assert choose_threshold(y[::-1] ^ 1, 1 - p[::-1]) == pytest.approx(0.4)  # the mirror image: the lower one


def test_a_cut_beyond_one_standard_error_of_the_best_is_never_chosen():
    y = np.array([0] * 20 + [1] * 20)
    p = np.concatenate([np.linspace(0.05, 0.2, 20), np.linspace(0.25, 0.45, 20)])  # perfect at 0.225, 0.5 scores 1/2
    assert choose_threshold(y, p) == pytest.approx(0.225)


def test_one_score_or_none_still_gets_a_threshold():
    assert choose_threshold([], []) == 0.5
    assert choose_threshold([1], [0.2]) == pytest.approx(0.1)  # below its only score: it is called COVID


def test_a_score_of_exactly_zero_is_called_covid_by_the_lowest_cut():
    # a float32 sigmoid underflows to 0.0 for a very negative logit: the cut under every score is then 0 itself
    y, p = np.array([1, 1, 1]), np.array([0.0, 0.0, 0.9])
    assert choose_threshold(y, p) == 0.0
    assert binary_metrics(y, p, choose_threshold(y, p))["acc"] == 1.0


def test_undefined_metrics_are_nan_without_a_warning_each_epoch():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's UndefinedMetricWarning, numpy's 0/0: neither may be raised
        negatives = binary_metrics([0, 0, 0], [0.1, 0.7, 0.2])
        positives = binary_metrics([1, 1], [0.9, 0.8])
    assert math.isnan(negatives["auc"]) and math.isnan(negatives["sensitivity"])
    assert negatives["specificity"] == pytest.approx(2 / 3) and negatives["f1"] == 0.0
    assert math.isnan(positives["specificity"]) and positives["sensitivity"] == 1.0


@pytest.mark.parametrize("y, p, expected", [
    ([1, 1, 0, 0], [0.9, 0.1, 0.9, 0.1], {"sensitivity": 0.5, "specificity": 0.5, "f1": 0.5}),  # tp = fn, tn = fp
    ([1, 1, 0], [0.9, 0.1, 0.1], {"f1": 2 / 3, "sensitivity": 0.5, "specificity": 1.0}),         # tp + fp = fn
    ([1, 0, 0], [0.9, 0.9, 0.1], {"f1": 2 / 3, "sensitivity": 1.0, "specificity": 0.5}),         # tp + fn = fp
])
def test_rates_and_f1_from_small_counts(y, p, expected):
    metrics = binary_metrics(y, p)
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)


def test_a_score_equal_to_the_threshold_is_called_covid():
    assert binary_metrics([1, 0], [0.25, 0.1], threshold=0.25)["acc"] == 1.0
