"""The live view of a running sweep, as a person sees it on a terminal (rich's recording console)."""

from __future__ import annotations

import io
import os
import re
import threading
import time

import pyte
import pytest
from helpers.fakes import METRIC, fake_controller
from helpers.polling import wait_for
from rich.console import Console

from covid_sweep.sweep.control.controller import new_sweep
from covid_sweep.sweep.store import Store, Sweep, Trial
from covid_sweep.sweep.views.live import LiveView, Running, estimate_left, live_state, render, target
from covid_sweep.sweep.views.status import status_json


def _terminal(width: int = 100) -> Console:
    return Console(width=width, record=True, file=io.StringIO(), force_terminal=True, color_system=None)


def _ended(seconds: float) -> Trial:
    return Trial(id=1, sweep_id="s", name="s-001", params={}, state="finished", owner=None, pid=None, retry_of=None,
                 created=0.0, started=1000.0, ended=1000.0 + seconds, heartbeat=None, best=0.5, best_epoch=1, epochs=1,
                 artifact=None, error=None, stop_requested=0)


def test_time_left_from_ended_trials_and_from_a_running_trials_pace():
    running = [Running("a", 1, 4, 0.6, 50.0), Running("b", 3, 4, 0.7, 200.0)]
    # trials last 150 s on average: a needs 100 s more, b is over; 2 more wait; 2 agents share the work
    assert estimate_left([_ended(100), _ended(200)], running, remaining=4, agents=2) == pytest.approx((100 + 300) / 2)
    # none ended yet: a trial lasts the mean of a's pace (50 s/epoch x 4) and b's (200/3 s/epoch x 4)
    per_trial = (200 + 800 / 3) / 2
    assert estimate_left([], running, remaining=2, agents=1) == pytest.approx((per_trial - 50) + (per_trial - 200))
    assert estimate_left([], [Running("c", 0, 4, None, 5.0)], remaining=3, agents=1) is None


def _sweep_with(config: dict) -> Sweep:
    return Sweep("sw", "t", "t.yaml", config, None, 0, 0.0)


def test_target_is_run_cap_or_count():
    store_sweep = _sweep_with({"run_cap": 10})
    assert target(store_sweep, done_before=3, count=None) == 10
    assert target(store_sweep, done_before=3, count=4) == 7
    assert target(_sweep_with({}), done_before=0, count=None) is None


def _mid_sweep(tmp_path):
    """run_cap 6: two trials ended, two running (epochs logged), one claimed but not started."""
    store = Store(tmp_path / "home" / "sweeps.db")
    sweep = new_sweep(store, {"method": "random", "metric": METRIC, "run_cap": 6, "parameters": {"x": {"value": 1}}},
                      "t.yaml", None, seed=0)
    values = {"001": [0.6, 0.8], "002": [0.7, 0.9], "003": [0.5, 0.7], "004": [0.65]}
    for suffix, curve in values.items():
        trial = store.add_trial(sweep.id, f"{sweep.id}-{suffix}", {"x": 1, "epochs": 4}, "test:1")
        store.mark_running(trial.id, os.getpid())
        for epoch, value in enumerate(curve, start=1):
            store.log_epoch(trial.id, {"epoch": epoch, "val_auc": value}, "val_auc", "maximize")
        if suffix in ("001", "002"):
            store.end_trial(trial.id, "finished")
    store.add_trial(sweep.id, f"{sweep.id}-005", {"x": 1, "epochs": 4}, "test:1")
    return store, sweep


def test_the_view_shows_done_cap_each_running_trial_and_the_best(tmp_path):
    store, sweep = _mid_sweep(tmp_path)
    state = live_state(store, sweep, target(sweep, 0, None), agents=2, started=store.trials(sweep.id)[0].created)
    console = _terminal()
    console.print(render(state, sweep.metric))
    screen = console.export_text()
    lines = screen.splitlines()
    assert f"2/6 trials done  best so far: {sweep.id}-002 val_auc=0.9  elapsed" in lines[0]
    assert "left" in lines[0]  # the ended trials give a pace, so an estimate is shown
    row3 = next(line for line in lines if f"{sweep.id}-003" in line)
    row4 = next(line for line in lines if f"{sweep.id}-004" in line)
    assert "epoch 2/4" in row3 and "val_auc=0.7" in row3
    assert "epoch 1/4" in row4 and "val_auc=0.65" in row4
    assert not any(f"{sweep.id}-005" in line for line in lines)  # pending: not running yet
    assert len(lines) == 3


def test_running_trials_are_timed_by_the_store_s_clock_not_this_box_s(tmp_path, monkeypatch):
    # on a shared PostgreSQL store a trial's `started` is the database's time; this box's clock may be off
    store, sweep = _mid_sweep(tmp_path)
    skewed = time.time() + 3600.0
    monkeypatch.setattr("covid_sweep.sweep.views.live.time.time", lambda: skewed)
    monkeypatch.setattr("covid_sweep.sweep.views.status.time.time", lambda: skewed)
    state = live_state(store, sweep, target(sweep, 0, None), agents=2, started=skewed)
    assert [run.name for run in state.running] == [f"{sweep.id}-003", f"{sweep.id}-004"]
    assert all(0 <= run.seconds < 600 for run in state.running)  # not the hour the local clock is ahead
    running = [t for t in status_json(store.snapshot(sweep.id))["trials"] if t["state"] == "running"]
    assert len(running) == 2 and all(0 <= t["seconds"] < 600 for t in running)


def _screen(raw: str, width: int) -> list[str]:
    """What a terminal shows after receiving `raw` (cursor moves and erases applied): pyte, a VT emulator."""
    screen = pyte.Screen(width, 60)
    screen.set_mode(pyte.modes.LNM)  # a tty turns "\n" into "\r\n"
    pyte.Stream(screen).feed(raw)
    return [line.rstrip() for line in screen.display if line.strip()]


def test_live_view_over_a_real_controller_run(tmp_path):
    """The controller (fake trials, real processes) runs under the view, on a terminal emulator: while trials
    run, their epoch bars show; the controller's lines print above the view; the last picture shows every trial
    done and the best one."""
    store = Store(tmp_path / "home" / "sweeps.db")
    gate = tmp_path / "go-on"  # trials hold after epoch 1 until it exists: the snapshot below sees them running
    config = {"method": "grid", "metric": METRIC,
              "parameters": {"quality": {"values": [0.3, 0.9, 0.6]}, "epochs": {"value": 4}, "epoch_s": {"value": 0.4},
                             "gate": {"value": str(gate)}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    out = io.StringIO()
    console = Console(width=120, file=out, force_terminal=True, color_system=None)
    midway: list[str] = []

    def snapshot_midway():
        # once a trial has logged an epoch, wait past one refresh (1 s) and take what the terminal has so far
        try:
            watcher = Store(store.path, create=False)
            wait_for(lambda: any(t.epochs >= 1 and t.state == "running" for t in watcher.trials(sweep.id)),
                     timeout=30)
            time.sleep(1.2)
            midway.append(out.getvalue())
        finally:
            gate.touch()

    watcher = threading.Thread(target=snapshot_midway)
    watcher.start()
    with LiveView(Store(store.path, create=False), sweep, console, agents=2, count=3) as view:
        outcome = fake_controller(store, sweep, tmp_path / "home", agents=2, log=view.log).run()
    watcher.join()
    assert len(outcome.launched) == 3

    during = _screen(midway[0], 120)
    bars = [line for line in during if re.search(rf"^{sweep.id}-00\d .*epoch [1-4]/4  val_auc=0\.\d+", line)]
    assert bars, during
    assert re.search(r"^\d/3 trials done  best so far: .*elapsed \d+s", during[-1 - len(bars)]), during

    after = _screen(out.getvalue(), 120)
    trials = store.trials(sweep.id)
    for trial in trials:
        assert any(line.startswith(f"trial {trial.name} started") for line in after), after
    best = max(trials, key=lambda t: t.best)
    assert after[-1].startswith(f"3/3 trials done  best so far: {best.name} val_auc={best.best:.3g}"), after
    assert not any("epoch " in line for line in after)  # nothing runs any more: no bar left on screen
