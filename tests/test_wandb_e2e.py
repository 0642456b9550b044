"""The W&B path end to end: the real `wandb sweep` and `wandb agent` CLIs (wandb 0.31) against a fake W&B
GraphQL backend on 127.0.0.1 (tests/fake_wandb_server.py), trials offline on tiny generated images.

What it proves, and what only a real W&B account can, is listed in the README (W&B section).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import yaml
from fake_wandb_server import ENTITY, FakeWandbServer
from helpers.data import make_dataset
from helpers.polling import wait_for
from offline_run import find_offline_run, read_offline_run

from covid_sweep.model.artifact import load_artifact

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "covid-e2e"
API_KEY = "0123456789abcdef0123456789abcdef01234567"  # any 40 characters: the fake server checks nothing

# every type a sweep parameter can have: str, Literal str, int, a small float, False and True booleans.
# patience 1 on noise_data ends the trial on an epoch that is not its best (checked below): only then can
# the summary check tell the best epoch from the last.
GOOD = {"backbone": "resnet18", "optimizer": "adam", "scheduler": "none", "monitor": "val_loss", "input_size": 32,
        "epochs": 12, "patience": 1, "batch_size": 8, "seed": 3, "lr": 0.001, "weight_decay": 4.8e-05,
        "label_smoothing": 0.05, "val_fraction": 0.25, "hflip": False, "amp": False, "rotate": True, "device": "cpu"}
BAD = {**GOOD, "input_size": 16}
BAD_LINE = "error: sweep parameters: input_size: Input should be greater than or equal to 32 (got 16)"
LONG = {**GOOD, "epochs": 300, "patience": 300}


@pytest.fixture
def noise_data(tmp_path) -> Path:
    """The tiny data set with labels that ignore the images (half of each class relabelled): the model can only
    memorise, so its validation loss turns up within a few epochs (epoch 2 to 4 on this machine, bf16 or not)
    and patience 1 then ends the trial one epoch past its best."""
    data = make_dataset(tmp_path / "noise-data")
    rows = (data / "train.csv").read_text().splitlines()
    relabelled = [f"{line.split(',')[0]},{(i // 2) % 2}" for i, line in enumerate(rows[1:])]
    (data / "train.csv").write_text("\n".join([rows[0], *relabelled]) + "\n")
    return data


def sweep_yaml(path: Path) -> Path:
    """A sweep over GOOD's values with the shipped sweeps' own `command:` (from sweeps/smoke.yaml)."""
    command = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())["command"]
    path.write_text(yaml.safe_dump({"name": "e2e", "command": command, "method": "random",
                                    "metric": {"name": "val_loss", "goal": "minimize"},
                                    "parameters": {k: {"value": v} for k, v in GOOD.items()}}))
    return path


def cli_env(tmp_path: Path, url: str, data: Path, marker: str) -> dict[str, str]:
    """The CLIs' environment: the fake server, a dummy key, trials offline. `wandb agent` runs `python` from
    PATH with its own environment, so a `python` that execs this interpreter goes first on PATH (exec: the
    same process, signals and all; not a symlink, which would lose a virtualenv); the marker lets the test
    find every process the agent started, however deep."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_BASE_URL=url, WANDB_API_KEY=API_KEY, WANDB_MODE="offline", WANDB_DIR=str(tmp_path),
               WANDB_DATA_DIR=str(tmp_path / "wandb-data"), WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
               COVID_SWEEP_DATA=str(data), COVID_SWEEP_HOME=str(tmp_path / "home"), COVID_SWEEP_E2E=marker,
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")
    return env


def marked_processes(marker: str) -> list[int]:
    """Pids of live processes whose environment holds the marker: the agent and everything it started."""
    needle = f"COVID_SWEEP_E2E={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours
                pass
    return found


class Output:
    """Collects a process's merged stdout/stderr in a thread as it comes (progress bars end in \r, not \n)."""

    def __init__(self, process: subprocess.Popen):
        self.chunks: list[bytes] = []
        fd = process.stdout.fileno()
        self.thread = threading.Thread(target=lambda: self.chunks.extend(iter(lambda: os.read(fd, 65536), b"")),
                                       daemon=True)
        self.thread.start()

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


def du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def test_every_shipped_sweep_yaml_is_accepted_by_wandb_sweep(tmp_path):
    with FakeWandbServer() as server:
        env = cli_env(tmp_path, server.url, tmp_path / "no-data", uuid.uuid4().hex)
        for path in sorted((ROOT / "sweeps").glob("*.yaml")):
            done = subprocess.run([sys.executable, "-m", "wandb", "sweep", "--project", PROJECT, str(path)], env=env,
                                  capture_output=True, text=True, timeout=120, cwd=tmp_path)
            assert done.returncode == 0, done.stderr[-2000:]
            sweep_id = list(server.backend.sweeps)[-1]
            assert f"wandb agent {ENTITY}/{PROJECT}/{sweep_id}" in done.stderr + done.stdout
            assert server.backend.sweep_config(sweep_id) == yaml.safe_load(path.read_text())
    assert not server.backend.unknown


@pytest.mark.timeout(420)
def test_wandb_sweep_and_agent_end_to_end(tmp_path, noise_data):
    marker = uuid.uuid4().hex
    home = tmp_path / "home"
    with FakeWandbServer() as server:
        backend = server.backend
        env = cli_env(tmp_path, server.url, noise_data, marker)
        created = subprocess.run([sys.executable, "-m", "wandb", "sweep", "--project", PROJECT,
                                  str(sweep_yaml(tmp_path / "e2e.yaml"))],
                                 env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert created.returncode == 0, created.stderr[-2000:]
        (sweep_id,) = backend.sweeps
        # the good trial and the bad one on the first heartbeat, the long one once the agent went on after the bad one
        backend.queue_run("run-good", GOOD)
        backend.queue_run("run-bad", BAD)
        agent = subprocess.Popen([sys.executable, "-m", "wandb", "agent", "--count", "3", f"{ENTITY}/{PROJECT}/{sweep_id}"],
                                 env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        output = Output(agent)
        try:
            assert wait_for(lambda: "trial run-good finished" in output.text and BAD_LINE in output.text,
                            timeout=240), output.text[-4000:]
            backend.queue_run("run-long", LONG)
            # stop it once its first epoch is scored (its progress bar shows 1/300)
            assert wait_for(lambda: "1/300" in output.text, timeout=180), output.text[-4000:]
            live = marked_processes(marker)
            backend.queue_stop("run-long")
            agent.wait(timeout=120)  # --count 3: the agent ends when the third trial has
            output.thread.join(timeout=10)
        finally:
            if agent.poll() is None:  # the test failed part-way: end the agent we started, and its trials
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
        log = output.text
        assert agent.returncode == 0, log[-4000:]
        assert backend.operations[:2] == ["Viewer", "UpsertSweep"] and "CreateAgent" in backend.operations
        assert not backend.unknown, backend.unknown

    # nothing left running: the agent, its trials, their wandb-core services (the check saw them while they ran)
    assert len(live) >= 2, live
    assert wait_for(lambda: not marked_processes(marker), timeout=30), marked_processes(marker)

    # bug 2: the sweep's locked keys are not written again (wandb warned once per key), nor is the project
    assert "was locked by" not in log and "Ignoring project" not in log, log[-4000:]

    # params in == config out, every type, both in the W&B run and in the model artifact
    good = read_offline_run(find_offline_run(home / "wandb", "run-good"))
    artifact = load_artifact(home / "artifacts" / sweep_id / "run-good")
    for key, value in GOOD.items():
        assert type(good.config[key]) is type(value) and good.config[key] == value, (key, good.config[key])
        assert getattr(artifact.config, key) == value, (key, getattr(artifact.config, key))
    assert artifact.config.hflip is False and artifact.config.weight_decay == 4.8e-05

    # bug 1: the summary holds the best epoch's metric, as W&B would build it from this run's records
    losses = [row["val_loss"] for row in good.history if "val_loss" in row]
    best = min(losses)
    assert losses[-1] != best, f"precondition: the last epoch is the best ({losses}); the check below would be vacuous"
    assert good.summary["val_loss"] == best, (
        f"W&B summary val_loss {good.summary['val_loss']} is not the best epoch's {best} (epochs: {losses})")
    assert good.summary["trial_state"] == "finished" and good.exit_code == 0
    assert artifact.metrics["best"]["val_loss"] == best

    # a bad value: one line naming the field, no traceback, no W&B run; and the agent went on (run-long ran)
    assert BAD_LINE in log
    assert "Traceback" not in log, log[-4000:]
    assert not list((home / "wandb").glob("offline-run-*-run-bad"))
    assert "run-long" in backend.seen_running

    # a `stop` from the server: SIGTERM from the agent, the trial ends `stopped` with its artifact
    long = read_offline_run(find_offline_run(home / "wandb", "run-long"))
    assert "trial run-long stopped" in log and long.summary["trial_state"] == "stopped" and long.exit_code == 0
    stopped = load_artifact(home / "artifacts" / sweep_id / "run-long")
    assert stopped.metrics["state"] == "stopped" and 1 <= len(stopped.metrics["history"]) < 300

    # bug 5: offline, the model artifacts are logged by reference to the trial's folder: nothing copied
    for run, folder in ((good, "run-good"), (long, "run-long")):
        (model,) = [a for a in run.artifacts if a.type == "model"]
        assert model.name == f"model-{sweep_id}"
        refs = {entry.path: entry.ref for entry in model.manifest.contents}
        assert refs["model.safetensors"] == (home / "artifacts" / sweep_id / folder / "model.safetensors").as_uri()
    # wandb's data folder holds the small run tables it stages (confusion matrix, ROC), not a model
    model_size = (home / "artifacts" / sweep_id / "run-good" / "model.safetensors").stat().st_size
    assert du(tmp_path / "wandb-data") < model_size, du(tmp_path / "wandb-data")
