"""Shared fixtures: isolated state/caches per test and tiny generated data sets in the competition layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.data import make_dataset
from helpers.trials import tiny_trial


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


@pytest.fixture
def umask_022():
    """The process umask set to 022 for one test (and put back): a new file must then be 0644, whatever the
    machine's own umask is."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data dir, artifact dir): a real resnet18 trained one epoch at input size 32 on 12 tiny images."""
    data, result = tiny_trial(tmp_path_factory.mktemp("trained"), {"epochs": 1, "val_fraction": 0.25},
                              n_train=12, n_test=6, seed=1, name="t1")
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
