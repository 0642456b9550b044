"""Fake trials through the real controller: the launcher that starts them, the sweep metric, a controller."""

from __future__ import annotations

from pathlib import Path

import fake_trial

from covid_sweep.sweep.control.controller import Controller
from covid_sweep.sweep.control.launcher import ForkLauncher

METRIC = {"name": "val_auc", "goal": "maximize"}
# what the fake trial imports of covid_sweep: the fork server preloads it, as it preloads the real trial's modules
FAKE_PRELOAD = ("covid_sweep.sweep.control.child",)
# fake_trial is importable because pytest puts tests/ on sys.path, which the fork server inherits
FAKE_LAUNCHER = ForkLauncher(fake_trial.main, preload=FAKE_PRELOAD)


def fake_controller(store, sweep, home: Path, **kwargs) -> Controller:
    """The real controller launching fake trials, polling fast and printing nothing."""
    kwargs.setdefault("launcher", FAKE_LAUNCHER)
    kwargs.setdefault("poll_s", 0.05)
    kwargs.setdefault("log", lambda *_: None)
    return Controller(store, sweep, Path(home), **kwargs)
