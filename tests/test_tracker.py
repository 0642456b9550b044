"""Tracker (covid_sweep/tracking/tracker.py) against a fake wandb run: the parts no offline run can show.

A failed online upload cannot be produced here (no W&B server); the fake stands in for wandb 0.31's
behaviour, read from its source: `run.log_artifact()` returns the artifact, whose `wait()` raises
ValueError(<the server's error message>) when logging it failed (wandb/sdk/artifacts/artifact.py).
"""

from __future__ import annotations

import re
import threading

import pytest

from covid_sweep.core.phases import PhaseTimer
from covid_sweep.core.states import TrialState
from covid_sweep.sweep.control.trial_entry import run_wandb_agent
from covid_sweep.tracking.tracker import ArtifactUploadError, StartingTracker, Tracker


class FakeConfig(dict):
    """wandb.config under a sweep: holds the suggested keys; records what the tracker writes."""

    def __init__(self, values=()):
        super().__init__(values)
        self.writes: list[dict] = []

    def update(self, values, allow_val_change=False):
        self.writes.append(dict(values))
        super().update(values)


class Logged:
    def __init__(self, error: Exception | None = None):
        self.error, self.waited = error, False

    def wait(self, timeout=None):
        self.waited = True
        if self.error:
            raise self.error
        return self


class FakeRun:
    id = "run0001"

    def __init__(self, logged: Logged | None = None, config=()):
        self.config = FakeConfig(config)
        self.summary: dict = {}
        self.logged = logged or Logged()
        self.artifacts: list = []
        self.exit_code: int | None = None

    def log(self, row, step=None, commit=None):
        pass

    def log_artifact(self, artifact, aliases=None):
        self.artifacts.append(artifact)
        return self.logged

    def finish(self, exit_code=0):
        self.exit_code = exit_code


UPLOAD_FAILED = ValueError("failed to upload model.safetensors: 503 Service Unavailable")


def test_record_config_writes_only_what_the_sweep_did_not_set():
    run = FakeRun(config={"lr": 4.8e-05, "hflip": False})
    Tracker(run, "offline").record_config({"lr": 4.8e-05, "hflip": False, "epochs": 30, "amp": True})
    assert run.config.writes == [{"epochs": 30, "amp": True}]  # the locked keys are not written again
    Tracker(run, "offline").record_config({"lr": 4.8e-05, "epochs": 30})
    assert len(run.config.writes) == 1  # nothing missing: no write at all


def test_online_model_upload_is_waited_for_and_a_failure_raises(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    ok = FakeRun(Logged())
    Tracker(ok, "online").log_model(tmp_path, "model-sw1", {})
    assert ok.logged.waited and [e.path for e in ok.artifacts[0].manifest.entries.values()] == ["model.safetensors"]
    failing = FakeRun(Logged(UPLOAD_FAILED))
    with pytest.raises(ArtifactUploadError, match=rf"model artifact model-sw1 was not uploaded to W&B \(ValueError: "
                                                  rf"failed to upload model.safetensors: 503 Service Unavailable\); "
                                                  rf"the model is kept in {re.escape(str(tmp_path))}"):
        Tracker(failing, "online").log_model(tmp_path, "model-sw1", {})


def test_offline_model_is_logged_by_reference_and_not_waited_for(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "folds").mkdir()
    (tmp_path / "folds" / "manifest.json").write_text("{}")
    run = FakeRun(Logged(UPLOAD_FAILED))  # offline nothing is uploaded: wait() is never asked
    Tracker(run, "offline").log_model(tmp_path, "model-sw1", {})
    refs = {entry.path: entry.ref for entry in run.artifacts[0].manifest.entries.values()}
    assert refs == {"model.safetensors": (tmp_path / "model.safetensors").as_uri(),
                    "folds/manifest.json": (tmp_path / "folds" / "manifest.json").as_uri()}
    assert not run.logged.waited
    disabled = FakeRun()
    Tracker(disabled, "disabled").log_model(tmp_path, "model-sw1", {})
    assert disabled.artifacts == []


def test_a_failed_upload_fails_the_trial_in_its_state_and_exit_status(tiny_data, tmp_path, monkeypatch, capsys):
    run = FakeRun(Logged(UPLOAD_FAILED))
    monkeypatch.setattr(Tracker, "start", classmethod(lambda cls, **_: cls(run, "online")))
    monkeypatch.setenv("COVID_SWEEP_DATA", str(tiny_data))
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw1")
    monkeypatch.delenv("WANDB_SWEEP_PARAM_PATH", raising=False)
    argv = ["--input_size=32", "--epochs=1", "--batch_size=8", "--val_fraction=0.25", "--device=cpu"]
    code = run_wandb_agent(argv, tmp_path / "home", stop=lambda: False)
    assert code == 1 and run.exit_code == 1
    assert run.summary["trial_state"] == TrialState.FAILED and "was not uploaded to W&B" in run.summary["error"]
    err = capsys.readouterr().err
    assert "error: trial run0001 failed: model artifact model-sw1 was not uploaded to W&B (ValueError: " in err
    assert (tmp_path / "home" / "artifacts" / "sw1" / "run0001" / "model.safetensors").exists()  # kept locally


def test_wandb_init_runs_beside_the_trial_which_waits_only_at_its_first_use_of_the_run():
    trial_went_on = threading.Event()
    run = FakeRun()

    def start():
        # init can only end once the trial has gone on without it: a synchronous start would fail here
        assert trial_went_on.wait(timeout=30), "the trial waited for W&B's init before doing its own work"
        return Tracker(run, "offline")

    timer = PhaseTimer()
    tracker = StartingTracker(start, timer)
    threading.Timer(0.2, trial_went_on.set).start()  # the trial's data loading and first epoch
    with timer.phase("fit"):
        tracker.log_epoch({"epoch": 1, "val_auc": 0.5})  # where the trial first needs the run
    waited = timer.phases["wandb_init"]
    assert waited > 0  # the wait is W&B's phase, not fit's (PhaseTimer nesting)
    assert tracker.run_id == "run0001"
    tracker.finish(0)
    assert run.exit_code == 0 and timer.phases["wandb_init"] == waited  # a finished init is not waited for again


def no_wandb_service() -> Tracker:
    raise RuntimeError("W&B: no service")


def test_a_failed_wandb_init_is_the_trial_s_error_once():
    tracker = StartingTracker(no_wandb_service)
    with pytest.raises(RuntimeError, match="no service"):
        tracker.log_epoch({"epoch": 1})
    tracker.finish(1)  # the trial's failure path: nothing to finish, no second error
    unused = StartingTracker(no_wandb_service)
    with pytest.raises(RuntimeError, match="no service"):
        unused.finish(0)  # a trial that never logged still learns that its W&B run does not exist
