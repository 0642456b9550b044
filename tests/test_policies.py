"""The rules that several layers share, each defined once: metric goals, trial states, the cache root."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from covid_sweep.core import paths
from covid_sweep.core.goals import improves, rank_key, reaches
from covid_sweep.core.states import TrialState
from covid_sweep.sweep.store import Store
from covid_sweep.sweep.views.status import ranked


@pytest.mark.parametrize("value, best, goal, expected", [
    (0.9, 0.8, "maximize", True), (0.8, 0.9, "maximize", False), (0.8, 0.8, "maximize", False),
    (0.2, 0.3, "minimize", True), (0.3, 0.2, "minimize", False), (0.3, 0.3, "minimize", False),
    (0.5, None, "maximize", True), (0.5, None, "minimize", True),
    (math.nan, None, "maximize", False), (math.nan, 0.1, "minimize", False), (None, 0.1, "maximize", False),
])
def test_improves(value, best, goal, expected):
    assert improves(value, best, goal) is expected


def test_reaches_counts_the_target_itself():
    assert reaches(0.9, 0.9, "maximize") and reaches(0.95, 0.9, "maximize") and not reaches(0.89, 0.9, "maximize")
    assert reaches(0.1, 0.1, "minimize") and reaches(0.05, 0.1, "minimize") and not reaches(0.2, 0.1, "minimize")


def test_rank_key_sorts_best_first():
    assert sorted([0.2, 0.9, 0.5], key=lambda v: rank_key(v, "maximize")) == [0.9, 0.5, 0.2]
    assert sorted([0.2, 0.9, 0.5], key=lambda v: rank_key(v, "minimize")) == [0.2, 0.5, 0.9]


def test_an_unknown_goal_is_an_error_not_a_silent_minimize():
    for call in (lambda: improves(1.0, 0.0, "max"), lambda: reaches(1.0, 0.0, "max"), lambda: rank_key(1.0, "max")):
        with pytest.raises(ValueError, match="'max'"):
            call()


def test_trial_states_are_stored_as_their_plain_strings(tmp_path):
    store = Store(tmp_path / "s.db")
    store.create_sweep("sw", "n", None, {"method": "random", "parameters": {}}, None, 0)
    trial = store.add_trial("sw", "sw-001", {}, "host:1")
    assert trial.state is TrialState.PENDING
    store.end_trial(trial.id, TrialState.INTERRUPTED)
    store.close()
    raw = sqlite3.connect(tmp_path / "s.db").execute("SELECT state FROM trials").fetchone()[0]
    assert type(raw) is str and raw == "interrupted"
    # rows written before the enum existed read back as members
    assert Store(tmp_path / "s.db").trial(trial.id).state is TrialState.INTERRUPTED
    assert f"{TrialState.FAILED}" == str(TrialState.FAILED) == "failed"


def test_ranked_puts_the_best_first_and_unscored_last():
    class T:
        def __init__(self, best):
            self.best = best

    trials = [T(None), T(0.5), T(0.9), T(0.1)]
    assert [t.best for t in ranked(trials, "maximize")] == [0.9, 0.5, 0.1, None]
    assert [t.best for t in ranked(trials, "minimize")] == [0.1, 0.5, 0.9, None]


@pytest.mark.parametrize("value", [None, ""])
def test_cache_root_default_when_unset_or_empty(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    else:
        monkeypatch.setenv(paths.CACHE_ENV, value)
    assert paths.cache_root() == Path.home() / ".cache" / "covid-sweep"


def test_cache_root_expands_the_home_tilde(monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, "~/elsewhere")
    assert paths.cache_root() == Path.home() / "elsewhere"


def test_data_and_fetch_use_the_same_cache_root():
    from covid_sweep.data import fetch, layout as data

    assert data.cache_root is paths.cache_root and fetch.cache_root is paths.cache_root
