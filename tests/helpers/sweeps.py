"""Sweeps in a store as the controller and its trial processes leave them, without running anything."""

from __future__ import annotations

from pathlib import Path

from covid_sweep.core import paths
from covid_sweep.sweep.store import Store

MAXIMIZE = {"method": "bayes", "metric": {"name": "val_auc", "goal": "maximize"}, "parameters": {}}
MINIMIZE = {"method": "random", "metric": {"name": "val_loss", "goal": "minimize"}, "parameters": {}}


def new_store(home: Path, config: dict = MAXIMIZE, sweep_id: str = "sw1", data_dir: str | None = None) -> Store:
    """HOME's SQLite store holding one sweep."""
    store = Store(paths.store_path(home))
    store.create_sweep(sweep_id, "test", "test.yaml", config, data_dir, 0)
    return store


def add_trial(store: Store, name: str, state: str, values: list[float], artifact: Path | None, sweep_id: str = "sw1",
              params: dict | None = None, epoch_time: float | None = None, before_end=lambda: None):
    """A trial as the controller and trial process leave it: launched, epochs logged (with epoch_time, where
    given), ended (after before_end())."""
    sweep = store.sweep(sweep_id)
    trial = store.add_trial(sweep_id, name, params or {"lr": 1e-3}, owner="test:1")
    if state != "pending":
        store.mark_running(trial.id, pid=1)
        for epoch, value in enumerate(values, start=1):
            timed = {"epoch_time": epoch_time} if epoch_time is not None else {}
            store.log_epoch(trial.id, {"epoch": epoch, sweep.metric: value, **timed}, sweep.metric, sweep.goal)
        before_end()
        if state != "running":
            assert store.end_trial(trial.id, state, artifact=str(artifact) if artifact else None)
    return store.trial(trial.id)
