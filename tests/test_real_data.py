"""End to end on the real UCSD COVID-CT set in ../shared (skipped where it is absent)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from covid_sweep.sweep.store import Store

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-ct"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (REAL_DATA / "train.csv").exists(), reason="no ../shared data")]


def test_check_data_on_the_real_set():
    result = subprocess.run([sys.executable, "-m", "covid_sweep", "check-data", str(REAL_DATA)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "train: 543 images" in result.stdout and "test:  203 images" in result.stdout
    # the groups its splits use, and the two conflicting-label duplicates that SOURCE.md names
    assert "groups: 280 groups from groups.csv merged with near-duplicate clusters" in result.stdout
    assert ", 2 with conflicting labels:" in result.stdout
    for pair in ("train/239.png (COVID=0) ~ test/191.png (COVID=1)", "train/24.png (COVID=0) ~ test/95.png (COVID=1)"):
        line = next(line for line in result.stdout.splitlines() if pair in line)
        assert line.endswith("CONFLICTING LABELS")


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
    status = subprocess.run([sys.executable, "-m", "covid_sweep", "status", "--home", str(home)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert "measured on: grouped holdout (patients + near-duplicates)" in status.stdout


def test_real_trial_on_a_few_dozen_images_reproduces_its_val_accuracy(tmp_path):
    """A 2-epoch trial on 48 real slices; the artifact alone reproduces the logged val accuracy exactly."""
    import csv
    import shutil

    import numpy as np
    import torch

    from covid_sweep.core.config import build_config
    from covid_sweep.core.metrics import binary_metrics
    from covid_sweep.data.layout import cached_images, load_split
    from covid_sweep.model.artifact import load_artifact
    from covid_sweep.model.runtime import predict_probs
    from covid_sweep.training.trial import run_trial

    rows = list(csv.DictReader((REAL_DATA / "train.csv").open()))
    subset = [r for r in rows if r["COVID"] == "0"][:24] + [r for r in rows if r["COVID"] == "1"][:24]
    data = tmp_path / "data"
    for folder in ("train", "test"):
        (data / folder).mkdir(parents=True)
    for row in subset:  # copied into the test's tmp folder, never into the repo
        shutil.copy(REAL_DATA / "train" / row["file_name"], data / "train" / row["file_name"])
    with (data / "train.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "COVID"])
        writer.writerows((r["file_name"], r["COVID"]) for r in subset)
    shutil.copy(REAL_DATA / "train" / subset[0]["file_name"], data / "test" / "t.png")
    (data / "sample_submission.csv").write_text("file_name,COVID\nt.png,0\n")

    config = build_config({"backbone": "resnet18", "input_size": 64, "epochs": 2, "batch_size": 16,
                           "val_fraction": 0.25, "data_dir": str(data)})
    result = run_trial(config, tmp_path / "model", progress=False)
    loaded = load_artifact(result.artifact)
    split = load_split(data, "train")
    val_files = loaded.metadata["validation"]["val_files"][0]  # the split the trial recorded
    val_idx = [split.ids.index(name) for name in val_files]
    images = np.asarray(cached_images(split, config.input_size))[val_idx]
    probs = predict_probs(loaded.model, images, 16, torch.device("cpu"))
    logged = loaded.metrics["best"]["val_acc"]
    assert binary_metrics(np.asarray(split.labels)[val_idx], probs)["acc"] == logged
