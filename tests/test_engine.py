"""The adapter between the store and W&B's sweep engine: what the engine is handed, and what comes back."""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers.fakes import METRIC
from helpers.sweeps import add_trial, new_store

import sweeps
from covid_sweep.sweep.control.engine import runs_to_stop, suggest, sweep_runs, target_reached
from covid_sweep.sweep.store import Sweep


def test_the_engine_sees_each_trial_as_a_w_and_b_run_with_its_params_history_and_best(tmp_path):
    store = new_store(tmp_path, {"method": "bayes", "metric": METRIC, "parameters": {"lr": {"min": 1e-4, "max": 1e-2}}})
    add_trial(store, "t-interrupted", "interrupted", [0.5], None, params={"lr": 0.005})  # retried: left out
    add_trial(store, "t-done", "finished", [0.6, 0.8], None, params={"lr": 0.001})
    add_trial(store, "t-stopped", "stopped", [0.55], None, params={"lr": 0.002})
    add_trial(store, "t-failed", "failed", [], None, params={"lr": 0.003})
    add_trial(store, "t-running", "running", [0.7], None, params={"lr": 0.004})
    runs = {run.name: run for run in sweep_runs(store, store.sweep("sw1"))}
    assert list(runs) == ["t-done", "t-stopped", "t-failed", "t-running"]
    done = runs["t-done"]
    assert done.state == sweeps.RunState.finished and done.config == {"lr": {"value": 0.001}}
    assert done.history == [{"val_auc": 0.6}, {"val_auc": 0.8}] and done.summary_metrics == {"val_auc": 0.8}
    assert runs["t-stopped"].state == sweeps.RunState.finished  # its history is real; only failures are imputed
    assert runs["t-failed"].state == sweeps.RunState.failed and runs["t-failed"].summary_metrics == {}
    assert runs["t-failed"].history == []
    assert runs["t-running"].state == sweeps.RunState.running and runs["t-running"].history == [{"val_auc": 0.7}]


def test_a_sweep_without_a_metric_hands_the_engine_no_history(tmp_path):
    store = new_store(tmp_path, {"method": "random", "parameters": {"lr": {"values": [0.1, 0.2]}}})
    trial = add_trial(store, "t1", "running", [], None, params={"lr": 0.1})
    store.log_epoch(trial.id, {"epoch": 1, "val_auc": 0.7}, None, "minimize")
    [run] = sweep_runs(store, store.sweep("sw1"))
    assert run.history == [] and run.summary_metrics == {} and run.config == {"lr": {"value": 0.1}}


def _sweep(config: dict, seed: int = 100_000) -> Sweep:
    return Sweep("sw", "t", "t.yaml", dict(sweeps.SweepConfig(config)), None, seed, 0.0)


RANDOM = {"method": "random", "metric": METRIC, "parameters": {"lr": {"min": 0.0, "max": 1.0}, "size": {"values": [1, 2, 3]}}}


def test_a_suggestion_is_the_engine_run_drawn_from_the_seed_and_the_number_of_runs_so_far():
    """A resumed sweep (same seed, same runs) continues the same sequence, on any version that keeps this seed."""
    sweep = _sweep(RANDOM)
    runs = [sweeps.SweepRun(name="r0", state=sweeps.RunState.finished, config={"lr": {"value": 0.5}, "size": {"value": 1}})]
    seed = (100_000 * 1_000_003 + 1) % 2**32  # an odd multiple of 2**32 over: % 2**33 would differ
    random.seed(seed)
    np.random.seed(seed)
    expected = {k: v["value"] for k, v in sweeps.next_run(sweep.config, runs).config.items()}
    random.seed(0)
    np.random.seed(0)  # the global state before the call does not matter
    assert suggest(sweep, runs) == expected and set(expected) == {"lr", "size"}
    assert suggest(sweep, runs + runs) != expected  # another run count, another draw


def test_a_bayes_suggestion_is_the_same_for_the_same_seed_and_runs_whatever_the_global_random_state():
    sweep = _sweep({"method": "bayes", "metric": METRIC, "parameters": {"lr": {"min": 0.0, "max": 1.0}}})
    runs = [sweeps.SweepRun(name=f"r{i}", state=sweeps.RunState.finished, config={"lr": {"value": lr}},
                            summary_metrics={"val_auc": auc}, history=[{"val_auc": auc}])
            for i, (lr, auc) in enumerate([(0.1, 0.6), (0.5, 0.8), (0.9, 0.7)])]
    first = suggest(sweep, runs)
    random.seed(1)
    np.random.seed(1)
    assert suggest(sweep, runs) == first


def test_an_exhausted_grid_suggests_nothing():
    sweep = _sweep({"method": "grid", "metric": METRIC, "parameters": {"size": {"values": [1]}}})
    assert suggest(sweep, []) == {"size": 1}
    done = sweeps.SweepRun(name="r0", state=sweeps.RunState.finished, config={"size": {"value": 1}})
    assert suggest(sweep, [done]) is None


def _hyperband_runs() -> list[sweeps.SweepRun]:
    def run(name, values):
        return sweeps.SweepRun(name=name, state=sweeps.RunState.running, config={"size": {"value": 1}},
                               history=[{"val_auc": v} for v in values])
    return [run("leader", [0.9, 0.95, 0.96]), run("second", [0.85, 0.9, 0.91]), run("third", [0.8, 0.86, 0.9]),
            run("laggard", [0.1, 0.1, 0.1])]


def test_hyperband_stops_the_laggard_and_a_sweep_without_it_stops_nothing():
    config = {"method": "random", "metric": METRIC, "parameters": {"size": {"values": [1, 2]}},
              "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2}}
    assert "laggard" in runs_to_stop(_sweep(config), _hyperband_runs())
    assert "leader" not in runs_to_stop(_sweep(config), _hyperband_runs())
    del config["early_terminate"]
    assert runs_to_stop(_sweep(config), _hyperband_runs()) == set()


@pytest.mark.parametrize("goal, best, reached", [("maximize", 0.95, True), ("maximize", 0.85, False),
                                                 ("minimize", 0.05, True), ("minimize", 0.2, False)])
def test_the_target_is_reached_by_a_trial_that_logged_a_good_enough_best(tmp_path, goal, best, reached):
    target = 0.9 if goal == "maximize" else 0.1
    store = new_store(tmp_path, {"method": "random", "metric": {"name": "val_auc", "goal": goal, "target": target},
                                 "parameters": {}})
    add_trial(store, "t1", "running", [best], None)
    assert target_reached(store.sweep("sw1"), store.trials("sw1")) is reached


def test_a_failed_trial_or_one_without_a_best_does_not_reach_the_target(tmp_path):
    store = new_store(tmp_path, {"method": "random", "metric": {**METRIC, "target": 0.9}, "parameters": {}})
    add_trial(store, "crashed", "failed", [0.95], None)
    add_trial(store, "starting", "running", [], None)
    sweep = store.sweep("sw1")
    assert not target_reached(sweep, store.trials("sw1"))
    for state in ("finished", "stopped"):
        add_trial(store, state, state, [0.91], None)
        assert target_reached(sweep, store.trials("sw1")[-1:])
    assert target_reached(sweep, store.trials("sw1"))  # the ones that cannot count come first: the rest is still read
    no_target = _sweep({"method": "random", "metric": METRIC, "parameters": {"size": {"values": [1]}}})
    assert not target_reached(no_target, store.trials("sw1"))
