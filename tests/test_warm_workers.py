"""Warm trial workers (sweep/control/launcher.py WarmLauncher): one process per agent slot runs successive trials, and
the README's isolation guarantees still hold: a crashing trial fails alone and only its worker is replaced; a
worker whose trial left memory held is replaced; hyperband's stop ends the trial, not the sweep."""

import fake_trial
import pytest
import torch
from helpers.fakes import FAKE_PRELOAD, METRIC, fake_controller

from covid_sweep.sweep.control.controller import Controller, new_sweep
from covid_sweep.sweep.control.launcher import WarmLauncher, gpu_memory_released
from covid_sweep.sweep.store import Store


def memory_still_held() -> bool:
    """A released() check that always finds the last trial's memory still held (picklable: top level)."""
    return False


def run_sweep(tmp_path, parameters: dict, launcher: WarmLauncher, agents: int = 1, **config):
    store = Store(tmp_path / "home" / "sweeps.db")
    sweep = new_sweep(store, {"method": "grid", "metric": METRIC, "parameters": parameters, **config}, "t.yaml", None,
                      seed=0)
    fake_controller(store, sweep, tmp_path / "home", agents=agents, launcher=launcher).run()
    return store, store.trials(sweep.id)


def test_successive_trials_run_in_one_worker_and_it_ends_with_the_controller(tmp_path):
    launcher = WarmLauncher(fake_trial.main, preload=FAKE_PRELOAD)
    store, trials = run_sweep(tmp_path, {"quality": {"values": [0.5, 0.6, 0.7]}, "epochs": {"value": 2},
                                         "epoch_s": {"value": 0.05}}, launcher)
    assert [t.state for t in trials] == ["finished"] * 3
    assert len({t.pid for t in trials}) == 1
    assert launcher.workers == []  # closed when the controller's loop ended: nothing left to join at exit


def test_a_crashing_trial_fails_alone_and_only_its_worker_is_replaced(tmp_path):
    launcher = WarmLauncher(fake_trial.main, preload=FAKE_PRELOAD)
    store, trials = run_sweep(tmp_path, {"crash_at": {"values": [0, 2, 9]}, "epochs": {"value": 3},
                                         "epoch_s": {"value": 0.05}}, launcher)
    assert [t.state for t in trials] == ["finished", "failed", "finished"]
    assert "exited with 3" in trials[1].error and len(store.history(trials[1].id)) == 1
    first, crashed, after = (t.pid for t in trials)
    assert crashed == first  # the worker was reused for the trial that crashed
    assert after != crashed  # and replaced after it


def test_a_worker_whose_trial_left_memory_held_is_replaced(tmp_path):
    launcher = WarmLauncher(fake_trial.main, preload=FAKE_PRELOAD, released=memory_still_held)
    _, trials = run_sweep(tmp_path, {"quality": {"values": [0.5, 0.6, 0.7]}, "epochs": {"value": 1},
                                     "epoch_s": {"value": 0.05}}, launcher)
    assert [t.state for t in trials] == ["finished"] * 3
    assert len({t.pid for t in trials}) == 3


def test_hyperband_stops_the_laggard_in_its_warm_worker_and_the_sweep_goes_on(tmp_path):
    launcher = WarmLauncher(fake_trial.main, preload=FAKE_PRELOAD)
    store, trials = run_sweep(tmp_path, {"quality": {"values": [0.9, 0.85, 0.8, 0.1, 0.7, 0.75]},
                                         "epochs": {"value": 8}, "epoch_s": {"value": 0.3}}, launcher, agents=4,
                              early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2})
    by_quality = {t.params["quality"]: t for t in trials}
    laggard = by_quality[0.1]
    assert laggard.state == "stopped" and laggard.stop_requested and 2 <= laggard.epochs < 8
    assert by_quality[0.9].state == "finished" and by_quality[0.9].epochs == 8
    assert len(trials) == 6 and all(t.state in ("finished", "stopped") for t in trials)
    assert len({t.pid for t in trials}) < 6  # later trials ran in the first ones' workers


def test_a_real_trial_after_another_in_the_same_worker_skips_the_process_start(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # W&B's init/finish/teardown run twice in one process
    params = {"backbone": {"value": "resnet18"}, "input_size": {"value": 32}, "epochs": {"value": 1},
              "batch_size": {"value": 8}, "patience": {"value": 1}, "val_fraction": {"value": 0.25},
              "seed": {"values": [0, 1]}, "hflip": {"value": True}}
    store = Store(tmp_path / "home" / "sweeps.db")
    sweep = new_sweep(store, {"method": "grid", "metric": METRIC, "parameters": params}, "t.yaml", str(tiny_data), seed=0)
    Controller(store, sweep, tmp_path / "home", launcher=WarmLauncher(), poll_s=0.02, log=lambda *_: None).run()
    first, second = store.trials(sweep.id)
    assert first.state == second.state == "finished", (first.error, second.error)
    assert first.pid == second.pid and first.artifact != second.artifact
    assert set(second.phases) == set(first.phases) and second.phases["fit"] > 0
    # the first trial paid the fork server's start; the second one's process was already there
    assert second.phases["process_start"] < first.phases["process_start"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the check reads the CUDA allocator")
def test_gpu_memory_released_sees_a_tensor_left_on_the_gpu():
    held = torch.ones(1024, 1024, device="cuda")
    assert not gpu_memory_released()
    del held
    assert gpu_memory_released()
