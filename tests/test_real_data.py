"""End to end on the real UCSD COVID-CT set in ../shared (skipped where it is absent)."""

import os
import subprocess
import sys
import time

import pytest

from covid_sweep.sweep.store import Store
from pathlib import Path

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-ct"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (REAL_DATA / "train.csv").exists(), reason="no ../shared data")]


def test_check_data_on_the_real_set():
    result = subprocess.run([sys.executable, "-m", "covid_sweep", "check-data", str(REAL_DATA)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "train: 543 images" in result.stdout and "test:  203 images" in result.stdout


def test_smoke_sweep_on_the_real_set(tmp_path):
    home = tmp_path / "home"
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "covid_sweep", "sweep", "sweeps/smoke.yaml", "--data",
                             str(REAL_DATA), "--home", str(home)], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"smoke sweep wall time {time.time() - started:.1f}s\n{result.stdout}")
    store = Store(home / "sweeps.db")
    sweep = store.latest_sweep()
    trials = store.trials(sweep.id)
    assert len(trials) == 6 and all(t.state == "finished" for t in trials)
    assert all(t.best is not None and t.epochs >= 1 for t in trials)
    assert len(list((home / "wandb").glob("offline-run-*"))) == 6
    for trial in trials:
        assert (home / "artifacts" / sweep.id / trial.name / "model.safetensors").exists()
