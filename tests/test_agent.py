"""The agent entrypoint under the `wandb agent` contract (env + --key=value args), offline."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from offline_run import find_offline_run, read_offline_run

from covid_sweep.core.config import ConfigError
from covid_sweep.model.artifact import load_artifact
from covid_sweep.sweep.control.trial_entry import guarded
from covid_sweep.tracking.tracker import ArtifactUploadError, agent_sweep_params


def agent_env(tmp_path, data, params):
    """What `wandb agent` sets for its child, with the run kept offline."""
    param_path = tmp_path / "params.yaml"
    param_path.write_text(yaml.safe_dump({k: {"value": v} for k, v in params.items()}))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_MODE="offline", WANDB_SWEEP_ID="sw1234", WANDB_RUN_ID="run0001",
               WANDB_SWEEP_PARAM_PATH=str(param_path), COVID_SWEEP_DATA=str(data),
               COVID_SWEEP_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    return env


def as_args(params):
    return [f"--{k}={v}" for k, v in params.items()]


PARAMS = {"backbone": "resnet18", "input_size": 32, "epochs": 2, "batch_size": 8, "hflip": False,
          "lr": 4.8e-05, "val_fraction": 0.25}


def test_agent_runs_a_trial_from_sweep_params(tiny_data, tmp_path):
    result = subprocess.run([sys.executable, "-m", "covid_sweep.agent", *as_args(PARAMS)],
                            env=agent_env(tmp_path, tiny_data, PARAMS), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    artifact = tmp_path / "home" / "artifacts" / "sw1234" / "run0001"
    assert "finished" in result.stdout and str(artifact) in result.stdout
    config = load_artifact(artifact).config
    assert config.lr == 4.8e-05 and config.hflip is False and config.input_size == 32
    assert str(config.data_dir) == str(tiny_data)  # found through COVID_SWEEP_DATA
    assert list((tmp_path / "home" / "wandb").glob("offline-run-*-run0001"))


# runs the entrypoint as `python -m covid_sweep.agent` does, with an import hook that reports when torch or wandb
# starts to load and can send the process a SIGTERM at that moment (as `wandb agent` may, while it imports)
PROBE = """
import importlib.abc, os, runpy, signal, sys

class Probe(importlib.abc.MetaPathFinder):
    seen = set()

    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "wandb") and name not in self.seen:
            self.seen.add(name)
            print(f"probe: importing {{name}}", file=sys.stderr, flush=True)
            if name == {sigterm_at!r}:
                os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, Probe())
sys.argv = ["covid_sweep.agent", *{args!r}]
runpy.run_module("covid_sweep.agent", run_name="__main__", alter_sys=True)
"""


def run_probed(tmp_path, data, params, sigterm_at=None):
    code = PROBE.format(args=as_args(params), sigterm_at=sigterm_at)
    return subprocess.run([sys.executable, "-c", code], env=agent_env(tmp_path, data, params), capture_output=True,
                          text=True, timeout=300)


def test_agent_rejects_a_bad_param_with_exit_2_before_wandb_and_torch(tiny_data, tmp_path):
    result = run_probed(tmp_path, tiny_data, {**PARAMS, "backbone": "lenet"})
    assert result.returncode == 2
    assert "backbone" in result.stderr and "lenet" in result.stderr and "Traceback" not in result.stderr
    # checked before the heavy imports and wandb.init: no W&B run for a suggestion that cannot train
    assert "probe: importing" not in result.stderr, result.stderr
    assert not (tmp_path / "home" / "wandb").exists()


def test_sigterm_during_the_imports_ends_the_trial_stopped(tiny_data, tmp_path):
    result = run_probed(tmp_path, tiny_data, PARAMS, sigterm_at="torch")
    assert "probe: importing torch" in result.stderr  # the signal was sent
    assert result.returncode == 0, result.stderr[-3000:]  # not killed by it (-15)
    assert "trial run0001 stopped" in result.stdout
    run = read_offline_run(find_offline_run(tmp_path / "home" / "wandb", "run0001"))
    assert run.summary["trial_state"] == "stopped" and run.exit_code == 0
    assert not [row for row in run.history if "val_auc" in row]  # stopped before its first epoch


def test_sweep_param_file_values_keep_their_types_and_a_broken_file_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "config-run.yaml"
    path.write_text("wandb_version: 1\n\nhflip:\n  value: false\nlr:\n  value: 4.8e-05\n_wandb:\n  value: {}\n")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(path))
    assert agent_sweep_params() == {"hflip": False, "lr": 4.8e-05}
    path.write_text("hflip: [unclosed\n")
    with pytest.raises(ConfigError, match=r"WANDB_SWEEP_PARAM_PATH=.*config-run.yaml: cannot read the sweep parameters"):
        agent_sweep_params()
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        agent_sweep_params()
    monkeypatch.delenv("WANDB_SWEEP_PARAM_PATH")
    assert agent_sweep_params() == {}


def test_sigterm_stops_the_trial_cleanly_within_seconds(tiny_data, tmp_path):
    params = {**PARAMS, "epochs": 500, "patience": 500}
    process = subprocess.Popen([sys.executable, "-m", "covid_sweep.agent", *as_args(params)],
                               env=agent_env(tmp_path, tiny_data, params), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    # wait until the first epoch is scored (its progress bar shows 1/500), however slow the machine is today
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: process.stdout.read(1), "")), daemon=True)
    reader.start()
    deadline = time.time() + 300
    while "1/500" not in "".join(chunks) and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)  # ends within the batch it was in, not after 500 epochs
    reader.join(timeout=10)
    output = "".join(chunks)
    assert process.returncode == 0, output[-3000:]
    assert "run0001 stopped" in output
    artifact = tmp_path / "home" / "artifacts" / "sw1234" / "run0001"
    metrics = load_artifact(artifact).metrics
    assert metrics["state"] == "stopped" and 1 <= len(metrics["history"]) < 500


@pytest.mark.parametrize("error, status, message", [
    (ConfigError("lr: must be > 0"), 2, "lr: must be > 0"),  # a user's mistake reads as written
    (ArtifactUploadError("model-sw1 was not uploaded"), 1, "model-sw1 was not uploaded"),
    (RuntimeError("CUDA out of memory"), 1, "RuntimeError: CUDA out of memory"),  # a crash names its type
    (KeyboardInterrupt(), 1, "KeyboardInterrupt: "),
])
def test_one_failure_wrapper_records_each_failure_once_with_the_exit_status_of_both_paths(error, status, message):
    recorded = []

    def body():
        raise error

    assert guarded(body, lambda *failure: recorded.append(failure)) == status
    assert recorded == [(message, status)]
    assert guarded(lambda: 0, lambda *failure: recorded.append(failure)) == 0 and len(recorded) == 1
