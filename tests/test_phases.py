"""Per-phase timing of a trial: a real embedded trial (forked by the controller's launcher, real agent, W&B
offline) records where its time went in the store, and the data fingerprint is remembered per data set."""

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from covid_sweep.core.phases import PhaseTimer
from covid_sweep.data import layout
from covid_sweep.data.layout import fingerprint, load_split
from covid_sweep.sweep.control.controller import Controller, new_sweep
from covid_sweep.sweep.store import Store

PHASES = ("process_start", "imports", "wandb_init", "data_fingerprint", "cache_load", "grouping", "model_build",
          "warmup", "fit", "artifact_write", "wandb_log", "wandb_finish")


def test_a_real_embedded_trial_records_every_phase_within_its_wall_time(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the path a real sweep takes: init, log_model and finish do work
    store = Store(tmp_path / "home" / "sweeps.db")
    spec = {"method": "grid", "metric": {"name": "val_auc", "goal": "maximize"},
            "parameters": {"backbone": {"value": "resnet18"}, "input_size": {"value": 32}, "epochs": {"value": 2},
                           "batch_size": {"value": 8}, "patience": {"value": 2}, "val_fraction": {"value": 0.25},
                           "hflip": {"value": True}}}
    sweep = new_sweep(store, spec, "phases.yaml", str(tiny_data), seed=0)
    controller = Controller(store, sweep, tmp_path / "home", count=1, poll_s=0.02, log=lambda *_: None)
    started = time.perf_counter()
    controller.run()
    wall = time.perf_counter() - started
    (trial,) = store.trials(sweep.id)
    assert trial.state == "finished", trial.error
    assert set(trial.phases) == set(PHASES)
    assert all(v >= 0 for v in trial.phases.values())
    assert trial.phases["fit"] > 0 and trial.phases["warmup"] > 0
    assert sum(trial.phases.values()) <= wall
    # the in-process phases fall within the store's started -> ended, W&B's finish after it
    inside = sum(v for k, v in trial.phases.items() if k not in ("process_start", "imports", "wandb_finish"))
    assert inside <= trial.ended - trial.started


def test_phase_timer_adds_up_repeated_phases():
    timer = PhaseTimer()
    with timer.phase("fit"):
        time.sleep(0.01)
    timer.add("fit", 0.5)
    timer.add("warmup", -1.0)  # a clock step backwards is not negative time
    assert 0.51 <= timer.phases["fit"] < 1.0 and timer.phases["warmup"] == 0.0


def test_a_phase_timed_inside_another_counts_once_in_the_inner_one(monkeypatch):
    clock = iter([0.0, 1.0, 3.0, 10.0])  # fit starts, wandb_init starts, wandb_init ends, fit ends
    monkeypatch.setattr("covid_sweep.core.phases.time.perf_counter", lambda: next(clock))
    timer = PhaseTimer()
    with timer.phase("fit"):
        with timer.phase("wandb_init"):
            pass
    assert timer.phases == {"fit": 8.0, "wandb_init": 2.0}  # they add up to the 10 s that passed
    timer.move("fit", "warmup", 1.5)
    timer.move("fit", "artifact_write", 100.0)  # never more than the phase holds
    assert timer.phases == {"fit": 0.0, "wandb_init": 2.0, "warmup": 1.5, "artifact_write": 6.5}


def test_fingerprint_is_remembered_until_a_file_changes(tiny_data, monkeypatch):
    split = load_split(tiny_data, "train")
    first = fingerprint(split)
    hashed = []
    original = layout.content_fingerprint
    monkeypatch.setattr(layout, "content_fingerprint", lambda s: hashed.append(1) or original(s))
    assert fingerprint(load_split(tiny_data, "train")) == first and not hashed  # remembered: no image read
    cv2.imwrite(str(tiny_data / "train" / "1.png"), np.full((50, 50), 7, np.uint8))
    assert fingerprint(load_split(tiny_data, "train")) != first and hashed == [1]


def test_the_fork_server_preloads_the_training_stack_for_every_trial(tmp_path):
    # the trial entry imports the training code lazily (a bad `wandb agent` value fails before torch loads), so the
    # launcher must name it: otherwise each trial pays the torch/torchvision/albumentations imports itself
    import fake_trial

    from covid_sweep.sweep.control.launcher import ForkLauncher

    out = tmp_path / "preloaded.json"
    handle = ForkLauncher(fake_trial.report_preloaded).start([str(out)], tmp_path / "trial.log", dict(os.environ))
    assert handle.wait(timeout=120) == 0, (tmp_path / "trial.log").read_text()
    assert json.loads(out.read_text()) == {"torch": True, "torchvision": True, "albumentations": True,
                                           "covid_sweep.training.trial": True}


@pytest.mark.parametrize("warm", [False, True])
def test_a_trial_gets_its_share_of_the_cores_in_every_thread_pool(tmp_path, warm):
    # the fork server imported numpy, torch and cv2 with all the cores; the controller gives each of K agents
    # OMP_NUM_THREADS = cores // K, which a library that read it at load would never see
    import fake_trial
    import numpy  # noqa: F401 - loads the BLAS, so threadpoolctl sees one here too
    import threadpoolctl

    from covid_sweep.sweep.control.launcher import ForkLauncher, WarmLauncher

    assert any(i["user_api"] == "blas" for i in threadpoolctl.threadpool_info())
    out = tmp_path / "threads.json"
    launcher = (WarmLauncher if warm else ForkLauncher)(fake_trial.report_threads)
    handle = launcher.start([str(out)], tmp_path / "trial.log", {**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert handle.wait(timeout=120) == 0, (tmp_path / "trial.log").read_text()
    finally:
        launcher.close()
    pools = json.loads(out.read_text())
    assert any(name.startswith("openblas") or name.startswith("mkl") for name in pools), pools
    assert set(pools.values()) == {1}, pools


EARLY_START = """
import multiprocessing.forkserver, os, sys
sys.path.insert(0, sys.argv[1])  # tests/, for fake_trial
import fake_trial
from covid_sweep.sweep.control.launcher import ForkLauncher, agent_preload, start_fork_server

start_fork_server(agent_preload("sqlite"))
print(multiprocessing.forkserver._forkserver._forkserver_pid, flush=True)
# the controller's launcher, made later with the same preload, forks its trials from the server already running
handle = ForkLauncher(fake_trial.report_preloaded).start([sys.argv[2]], sys.argv[3], dict(os.environ))
sys.exit(handle.wait(timeout=120))
"""


def test_the_fork_server_started_first_serves_the_controller_s_trials_and_ends_with_it(tmp_path):
    # covid-sweep sweep starts it before importing the controller and the engine, so the two imports overlap
    import subprocess
    import sys

    out, log = tmp_path / "preloaded.json", tmp_path / "trial.log"
    proc = subprocess.run([sys.executable, "-c", EARLY_START, os.path.dirname(__file__), str(out), str(log)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr + (log.read_text() if log.exists() else "")
    assert json.loads(out.read_text()) == {"torch": True, "torchvision": True, "albumentations": True,
                                           "covid_sweep.training.trial": True}
    server = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 30
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(server), "the fork server outlived the command that started it"


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
