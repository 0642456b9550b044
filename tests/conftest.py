"""Shared fixtures: isolated state/caches per test and tiny generated data sets in the competition layout."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-ct"


def scripted_probs(path, images):
    """Probabilities of an exported TorchScript file for uint8 NHWC images (an ensemble's: a list of batches, one
    per input size), as a user would load it."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice, not ours
        scripted = torch.jit.load(str(path))
    with torch.no_grad():
        if isinstance(images, list):
            return scripted([torch.from_numpy(batch) for batch in images]).numpy()
        return scripted(torch.from_numpy(images)).numpy()


def wait_for(condition, timeout: float = 30.0) -> bool:
    """Poll condition every 50 ms until it holds (True) or timeout seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(autouse=True)
def isolated_state(tmp_path, monkeypatch):
    """Every test gets its own decoded-image cache and state folder; W&B never goes online."""
    monkeypatch.setenv("COVID_SWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COVID_SWEEP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("COVID_SWEEP_DATA", raising=False)
    monkeypatch.delenv("COVID_SWEEP_STORE", raising=False)
    monkeypatch.delenv("COVID_SWEEP_MACHINE", raising=False)


def _slice(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A fake CT slice: a body ellipse with its own shape and texture (so two slices are not near-duplicates,
    as two patients' are not) and noise; COVID images get bright blobs (ground glass)."""
    texture = cv2.resize(rng.uniform(0, 90, (4, 4)), (size, size), interpolation=cv2.INTER_CUBIC)
    image = rng.normal(40, 10, (size, size)) + texture
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    ay, ax = rng.uniform(0.25, 0.45, 2) * size
    body = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 < 1
    image[body] += 60
    if label:
        for _ in range(3):
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < (size * 0.08) ** 2] = 230
    return image.clip(0, 255).astype(np.uint8)


def write_image(path: Path, gray: np.ndarray, kind: str) -> None:
    """kind: gray-png, rgb-png, jpg, rgba-png, gray16-png."""
    if kind == "gray16-png":
        cv2.imwrite(str(path), gray.astype(np.uint16) * 200)
    elif kind == "gray-png":
        cv2.imwrite(str(path), gray)
    elif kind == "rgb-png":
        cv2.imwrite(str(path), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    elif kind == "rgba-png":
        cv2.imwrite(str(path), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA))
    elif kind == "jpg":
        cv2.imwrite(str(path), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    else:
        raise ValueError(kind)


def _write_csv(path: Path, rows) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "COVID"])
        writer.writerows(rows)


def make_dataset(root: Path, n_train: int = 24, n_test: int = 8, seed: int = 0) -> Path:
    """A competition-layout data set of mixed formats and sizes, with test_labels.csv for scoring."""
    rng = np.random.default_rng(seed)
    kinds = ["gray-png", "rgb-png", "jpg", "rgba-png", "gray16-png"]
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True)
        rows = []
        for i in range(n):
            label = i % 2
            kind = kinds[i % len(kinds)]
            name = f"{i}.{'jpg' if kind == 'jpg' else 'png'}"
            write_image(root / split / name, _slice(label, rng, int(rng.integers(40, 72))), kind)
            rows.append((name, label))
        if split == "train":
            _write_csv(root / "train.csv", rows)
        else:
            _write_csv(root / "sample_submission.csv", [(name, 0) for name, _ in rows])
            _write_csv(root / "test_labels.csv", rows)
    return root


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data dir, artifact dir): a real resnet18 trained one epoch at input size 32 on 12 tiny images."""
    from covid_sweep.core.config import build_config
    from covid_sweep.training.trial import run_trial

    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COVID_SWEEP_CACHE", str(root / "cache"))
        mp.setenv("WANDB_MODE", "disabled")
        data = make_dataset(root / "data", n_train=12, n_test=6, seed=1)
        config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 1, "batch_size": 4,
                               "val_fraction": 0.25, "amp": False, "device": "cpu", "data_dir": str(data)})
        result = run_trial(config, root / "artifact", progress=False, trial_name="t1")
    assert result.state == "finished"
    return data, result.artifact


@pytest.fixture
def tiny_config_values(tiny_data) -> dict:
    """The smallest real trial: a CPU-second of training."""
    return {"backbone": "resnet18", "input_size": 32, "epochs": 2, "batch_size": 8, "patience": 2,
            "val_fraction": 0.25, "data_dir": str(tiny_data)}


# ---- PostgreSQL: one throwaway cluster per test session, a fresh database per test ---------------------

@pytest.fixture(scope="session")
def pg_cluster():
    from pg_cluster import PgCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        reason = "PostgreSQL binaries not found (/usr/lib/postgresql/*/bin or $PG_BINDIR; apt-get install postgresql-15)"
        if os.environ.get("COVID_SWEEP_REQUIRE_PG"):  # CI: a skipped backend would pass silently
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = PgCluster(bindir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """A sweep store on each backend: an SQLite file apart from any HOME, or an empty PostgreSQL database."""
    from covid_sweep.sweep.store import Store

    if request.param == "sqlite":
        return Store(tmp_path / "store" / "sweeps.db")
    return Store(request.getfixturevalue("pg_url"))


@pytest.fixture
def pg_url(pg_cluster, request) -> str:
    """The URL of an empty database of its own for this test."""
    pg_url.count += 1
    return pg_cluster.create_database(f"t{os.getpid()}_{pg_url.count}")


pg_url.count = 0
