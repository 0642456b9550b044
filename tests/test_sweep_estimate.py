"""Which trials a sweep's choice is replayed over, read from their artifacts, and the cached estimate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.artifacts import recorded_artifact

from covid_sweep.inference import sweep_estimate as module
from covid_sweep.inference.selection import SelectionError
from covid_sweep.inference.sweep_estimate import FinishedTrial, comparable, estimate

LABELS = np.tile([0, 1], 10)
GROUPS = np.repeat(np.arange(10), 2).astype(str)


def _trial(tmp_path, name, skill, **kwargs) -> FinishedTrial:
    rng = np.random.default_rng(sum(map(ord, name)))  # hash() differs from run to run
    probs = 1 / (1 + np.exp(-(skill * (LABELS - 0.5) * 4 + rng.normal(0, 1, (3, 20)))))
    kwargs.setdefault("groups", GROUPS)
    return FinishedTrial(name, recorded_artifact(tmp_path / name, probs, LABELS, best_epoch=2, **kwargs))


def test_only_trials_of_the_same_data_and_split_are_compared(tmp_path):
    trials = [_trial(tmp_path, "s-001", 1.0), _trial(tmp_path, "s-002", 0.5),
              _trial(tmp_path, "s-003", 0.8, fingerprint="data-2"),
              _trial(tmp_path, "s-004", 0.8, folds=np.arange(20) % 2),
              _trial(tmp_path, "s-005", 0.8, predictions=False),
              FinishedTrial("s-006", tmp_path / "gone")]
    compared = comparable(trials, "s-001")
    assert compared.names == ("s-001", "s-002")
    assert "other data" in compared.left_out["s-003"]
    assert "another split" in compared.left_out["s-004"]
    assert "no validation predictions" in compared.left_out["s-005"]
    assert "not readable here" in compared.left_out["s-006"]
    result = estimate(trials, "s-001", "val_auc", "maximize", samples=200)
    assert result.compared == ("s-001", "s-002") and result.single.trials == 2
    assert result.single.groups == 10 and result.single.images == 20
    assert result.single.low <= result.single.point <= result.single.high


def test_a_promoted_trial_without_predictions_has_no_estimate(tmp_path):
    trials = [_trial(tmp_path, "old", 1.0, predictions=False), _trial(tmp_path, "new", 0.5)]
    with pytest.raises(SelectionError, match="promoted trial old kept no validation predictions"):
        estimate(trials, "old", "val_auc", "maximize", samples=50)


def test_a_changed_predictions_file_is_not_read(tmp_path):
    trial = _trial(tmp_path, "t", 1.0)
    other = _trial(tmp_path, "u", 0.5)
    (trial.artifact / "val_predictions.npz").write_bytes((other.artifact / "val_predictions.npz").read_bytes())
    compared = comparable([trial, other], "u")
    assert "changed or missing" in compared.left_out["t"]


def test_the_estimate_is_cached_by_what_it_read(tmp_path, monkeypatch):
    trials = [_trial(tmp_path, "a", 1.0), _trial(tmp_path, "b", 0.5)]
    first = estimate(trials, "a", "val_auc", "maximize", samples=100, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 1

    def no_replay(*args, **kwargs):
        raise AssertionError("replayed again")

    monkeypatch.setattr(module, "replay", no_replay)
    again = estimate(trials, "a", "val_auc", "maximize", samples=100, cache_dir=tmp_path / "cache")
    assert again == first
    with pytest.raises(AssertionError, match="replayed again"):  # another trial set is another key
        estimate(trials + [_trial(tmp_path, "c", 0.7)], "a", "val_auc", "maximize", samples=100,
                 cache_dir=tmp_path / "cache")


def test_the_ensemble_estimate_names_its_members(tmp_path):
    trials = [_trial(tmp_path, n, s) for n, s in (("a", 0.6), ("b", 0.6), ("c", 0.1))]
    result = estimate(trials, "a", "val_auc", "maximize", samples=100, ensemble=True)
    assert result.ensemble is not None and set(result.members) <= {"a", "b", "c"}
    assert sum(result.members.values()) == pytest.approx(1.0)
    assert json.loads(json.dumps(result.as_dict()))["ensemble"]["trials"] == 3
