"""Fault injection (issue 26, items 1 and 12): what a real sweep leaves where it should not.

Each test runs `covid-sweep sweep` as a user does, in a process of its own (the trials' fork server, their
environment and the files W&B writes are the real ones), with real trials on tiny generated images, W&B
offline, and its own HOME and TMPDIR, so that every file the sweep wrote anywhere can be looked at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from helpers.data import make_dataset

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from covid_sweep.cli import main; main(prog_name='covid-sweep')"
TINY_GRID = """\
name: leaks
method: grid
metric: {name: val_auc, goal: maximize}
parameters:
  backbone: {value: resnet18}
  input_size: {value: 32}
  epochs: {value: 1}
  batch_size: {value: 8}
  val_fraction: {value: 0.25}
  lr: {values: [0.001, 0.002]}
"""


@pytest.fixture
def short_tmpdir():
    """An empty TMPDIR with a short path: the fork server's socket is made in it, and a socket path has at most
    107 bytes (tmp_path's are long)."""
    folder = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _sweep(tmp_path: Path, tmpdir: Path, *options: str) -> tuple[subprocess.CompletedProcess, dict[str, Path]]:
    """`covid-sweep sweep` of real one-epoch trials, with every folder it may write to empty at start: the
    covid-sweep HOME, the user's HOME (wandb's cache and data folders), the image cache and TMPDIR."""
    where = {name: tmp_path / name for name in ("home", "user", "cache")}
    for folder in where.values():
        folder.mkdir()
    where["tmp"] = tmpdir
    sweep_file = tmp_path / "leaks.yaml"
    sweep_file.write_text(TINY_GRID)
    data = make_dataset(tmp_path / "data")
    env = {**os.environ, "HOME": str(where["user"]), "TMPDIR": str(where["tmp"]), "WANDB_MODE": "offline",
           "COVID_SWEEP_CACHE": str(where["cache"]), "PYTHONPATH": str(ROOT)}
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "TEMP", "TMP"):
        env.pop(name, None)  # the defaults, under HOME and TMPDIR, are what is looked at
    done = subprocess.run([sys.executable, "-c", CLI, "sweep", str(sweep_file), "--data", str(data),
                           "--home", str(where["home"]), *options], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    return done, where


def _files_holding(needle: bytes, *folders: Path) -> list[str]:
    return sorted(str(path) for folder in folders for path in folder.rglob("*")
                  if path.is_file() and not path.is_symlink() and needle in path.read_bytes())


def _offline_run_files(home: Path) -> list[Path]:
    return sorted((home / "wandb").glob("offline-run-*/run-*.wandb"))


# ---- 1. a PostgreSQL password given in --store -------------------------------------------------

def test_password_in_the_store_url_reaches_no_wandb_run_file_log_or_temp_file(pg_url, tmp_path, short_tmpdir):
    secret = f"pw-{uuid.uuid4().hex}"
    # the test cluster trusts local connections: any password is accepted, so this one really travels
    url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    assert secret in url
    done, where = _sweep(tmp_path, short_tmpdir, "--store", url, "--count", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "finished: best val_auc" in done.stdout, done.stdout[-3000:]
    runs = _offline_run_files(where["home"])
    assert len(runs) == 1, runs
    assert b"--store" in runs[0].read_bytes()  # W&B recorded a command line: the trial's, holding the address only
    assert _files_holding(secret.encode(), *where.values()) == []  # run files, trial logs, wandb's own logs, temp
    assert secret not in done.stdout + done.stderr


# ---- 12. temporary folders left by every trial ---------------------------------------------------

def test_trials_in_warm_workers_leave_nothing_in_tmpdir(tmp_path, short_tmpdir):
    done, where = _sweep(tmp_path, short_tmpdir, "--count", "2", "--warm-workers")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("finished: best val_auc") == 2, done.stdout[-3000:]
    assert len(_offline_run_files(where["home"])) == 2  # each trial logged its tables and model through W&B
    assert sorted(p.name for p in where["tmp"].iterdir()) == []
