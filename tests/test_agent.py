"""The agent entrypoint under the `wandb agent` contract (env + --key=value args), offline."""

import os
import signal
import subprocess
import sys
import threading
import time

import yaml

from covid_sweep.model.artifact import load_artifact


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


def test_agent_rejects_a_bad_param_with_exit_2(tiny_data, tmp_path):
    params = {**PARAMS, "backbone": "lenet"}
    result = subprocess.run([sys.executable, "-m", "covid_sweep.agent", *as_args(params)],
                            env=agent_env(tmp_path, tiny_data, params), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "backbone" in result.stderr and "lenet" in result.stderr and "Traceback" not in result.stderr


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
