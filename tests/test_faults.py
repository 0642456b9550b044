"""Fault injection: the faults a long sweep meets (issue 15), one test each, named after the fault.

Each test reproduces the fault as it happens in the field (a signal to the whole process group, a
recycled pid, a full disk, an edited or truncated file) and checks what is guaranteed: trials are
retried rather than imputed, nothing already saved is lost or overwritten, no temporary file stays
behind, and a user's fault is one line naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import fake_trial
import numpy as np
import pytest
from click.testing import CliRunner
from helpers.cli import one_line_error
from helpers.fakes import METRIC, fake_controller
from helpers.faults import failing_on_call, failing_when
from helpers.polling import wait_for
from helpers.sweeps import add_trial, new_store

from covid_sweep.cli import main
from covid_sweep.core import paths
from covid_sweep.sweep.control.controller import new_sweep
from covid_sweep.sweep.control.launcher import ForkLauncher
from covid_sweep.sweep.control.promote import PromotionError, export_best
from covid_sweep.sweep.store import Store

HERE = Path(__file__).parent


def _two_trial_grid(tmp_path):
    """A store with a grid sweep of two slow fake trials (40 epochs of 0.2 s): long enough to signal mid-run."""
    store = Store(tmp_path / "home" / "sweeps.db")
    config = {"method": "grid", "metric": METRIC,
              "parameters": {"quality": {"values": [0.3, 0.6]}, "epochs": {"value": 40}, "epoch_s": {"value": 0.2}}}
    return store, new_sweep(store, config, "t.yaml", None, seed=0)


def _controller_process(store, sweep, tmp_path):
    """The real controller with 2 agents in its own process group, as `timeout` or systemd start it."""
    return subprocess.Popen([sys.executable, str(HERE / "run_fake_controller.py"), str(store.path), sweep.id,
                             str(tmp_path / "home"), "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- 1. SIGTERM to the controller (timeout, docker stop, systemd, Kubernetes) ------------------

def test_sigterm_to_the_controller_process_group_interrupts_trials_and_resume_retries_them(tmp_path):
    store, sweep = _two_trial_grid(tmp_path)
    # as `timeout` does: the controller leads its own process group, and the signal goes to the whole group
    controller = _controller_process(store, sweep, tmp_path)
    try:
        assert wait_for(lambda: sum(t.state == "running" and t.epochs >= 1 for t in store.trials(sweep.id)) == 2,
                        timeout=60), [(t.name, t.state, t.epochs) for t in store.trials(sweep.id)]
        os.killpg(controller.pid, signal.SIGTERM)
        output = controller.communicate(timeout=60)[0]
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
    trials = store.trials(sweep.id)
    assert [t.state for t in trials] == ["interrupted", "interrupted"], (output, [t.error for t in trials])
    assert all(len(store.history(t.id)) >= 1 for t in trials)  # what they logged is kept

    outcome = fake_controller(store, sweep, tmp_path / "home", agents=2).run()
    retries = [t for t in store.trials(sweep.id) if t.retry_of is not None]
    assert sorted(t.name for t in retries) == sorted(f"{t.name}-r2" for t in trials)  # the README's name
    assert all(t.state == "finished" for t in retries), (outcome, [(t.state, t.error) for t in retries])


def test_sigterm_to_every_process_as_systemd_sends_it_interrupts_trials_rather_than_stopping_them(tmp_path):
    store, sweep = _two_trial_grid(tmp_path)
    controller = _controller_process(store, sweep, tmp_path)
    try:
        assert wait_for(lambda: sum(t.state == "running" and t.epochs >= 1 for t in store.trials(sweep.id)) == 2,
                        timeout=60), [(t.name, t.state, t.epochs) for t in store.trials(sweep.id)]
        for trial in store.trials(sweep.id):  # systemd's KillMode=control-group: every process, own session or not
            os.kill(trial.pid, signal.SIGTERM)
        os.killpg(controller.pid, signal.SIGTERM)
        output = controller.communicate(timeout=60)[0]
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
    assert [t.state for t in store.trials(sweep.id)] == ["interrupted", "interrupted"], output


# ---- 2. resume must not signal a recycled pid ---------------------------------------------------

def test_resume_after_a_reboot_never_signals_the_stranger_that_now_holds_a_trials_pid(tmp_path):
    store = Store(tmp_path / "home" / "sweeps.db")
    config = {"method": "grid", "metric": METRIC,
              "parameters": {"quality": {"values": [0.4]}, "epochs": {"value": 1}, "epoch_s": {"value": 0.05}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    dead_owner = f"{socket.gethostname()}:{2**22 + 12345}"
    stranger = subprocess.Popen(["sleep", "60"])  # now holds the pid the dead trial had
    # the orphaned trial itself, still running; SIGINT at its default (a CI job started in the background, as
    # `nohup cmd &` does, passes SIGINT down ignored, and the signal would then be sent but have no effect)
    ours = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        recycled = store.add_trial(sweep.id, f"{sweep.id}-001", {"quality": 0.4}, owner=dead_owner)
        store.mark_running(recycled.id, pid=stranger.pid)
        try:  # what was recorded is the identity of the earlier process with that pid
            store.conn.execute("UPDATE trials SET pid_start='another-boot:123' WHERE id=?", (recycled.id,))
        except sqlite3.OperationalError:
            pass  # a store without process identities has nothing to tell them apart
        orphan = store.add_trial(sweep.id, f"{sweep.id}-002", {"quality": 0.4}, owner=dead_owner)
        store.mark_running(orphan.id, pid=ours.pid)

        reaped = fake_controller(store, sweep, tmp_path / "home").reap_orphans()
        assert sorted(reaped) == [recycled.name, orphan.name]
        assert ours.wait(timeout=10) == -signal.SIGINT  # the real orphan is told to stop
        assert stranger.poll() is None  # the stranger is left alone
    finally:
        stranger.kill()
        ours.kill()
        stranger.wait()
        ours.wait()


# ---- 3. a full disk during export-best and predict ----------------------------------------------

FULL_DISK_EXPORT = textwrap.dedent("""
    import collections, os, shutil, sys
    import torch
    real_save = torch.jit.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            os.abort()  # what torch's C++ file writer does on a full disk (exit 134)
        return real_save(obj, f, *args, **kwargs)

    torch.jit.save = save
    Usage = collections.namedtuple("Usage", "total used free")
    shutil.disk_usage = lambda path: Usage(10**9, 10**9 - 4096, 4096)  # a nearly full disk
    from covid_sweep.cli import main
    main(sys.argv[1:], prog_name="covid-sweep")
""")


def _store_with_winner(home: Path, artifact: Path) -> None:
    store = new_store(home)
    add_trial(store, "sw1-001", "finished", [0.8], artifact)
    store.close()


def test_full_disk_during_the_torchscript_save_of_export_best_is_one_line_and_leaves_no_temp_folder(trained, tmp_path):
    data, artifact = trained
    home, out = tmp_path / "home", tmp_path / "exports" / "best"
    _store_with_winner(home, artifact)
    out.mkdir(parents=True)
    (out / "submission.csv").write_text("old\n")  # a previous export, to be kept
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_EXPORT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(script), "export-best", "sw1", "--data", str(data), "--out", str(out),
                          "--home", str(home), "--force"], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 1, (run.returncode, run.stderr[-2000:])
    error = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and "model.torchscript.pt: could not write" in error[0], run.stderr[-2000:]
    assert _hidden_leftovers(out.parent) == [] and _hidden_leftovers(out) == []  # the disk is not left fuller
    assert (out / "submission.csv").read_text() == "old\n"
    assert Store(paths.store_path(home)).alias("sw1", "best") is None  # not promoted either


def test_full_disk_while_writing_the_export_folder_is_one_line_and_keeps_the_old_export(trained, tmp_path, monkeypatch):
    data, artifact = trained
    home, out = tmp_path / "home", tmp_path / "exports" / "best"
    _store_with_winner(home, artifact)
    out.mkdir(parents=True)
    (out / "submission.csv").write_text("old\n")
    monkeypatch.setattr(Path, "write_text", failing_when(Path.write_text, lambda path, *_, **__: path.name == "model_card.md"))
    result = CliRunner().invoke(main, ["export-best", "sw1", "--data", str(data), "--out", str(out),
                                       "--home", str(home), "--force"])
    monkeypatch.undo()
    one_line_error(result, str(out), "No space left on device")
    assert _hidden_leftovers(out.parent) == [] and sorted(p.name for p in out.iterdir()) == ["submission.csv"]
    assert (out / "submission.csv").read_text() == "old\n"


def test_full_disk_during_predict_writes_neither_file_and_a_rerun_works(trained, tmp_path, monkeypatch):
    data, artifact = trained
    out = tmp_path / "sub.csv"
    monkeypatch.setattr(os, "fsync", failing_on_call(os.fsync, 2))  # the disk fills up at the second file
    result = CliRunner().invoke(main, ["predict", "--model", str(artifact), "--data", str(data), "--out", str(out)])
    monkeypatch.undo()
    one_line_error(result, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == []  # neither file, no temp file
    again = CliRunner().invoke(main, ["predict", "--model", str(artifact), "--data", str(data), "--out", str(out)])
    assert again.exit_code == 0, again.output  # nothing left over makes the rerun refuse
    assert out.is_file() and (tmp_path / "sub.probabilities.csv").is_file()


# ---- 4. a tampered artifact ---------------------------------------------------------------------

def _copy_artifact(artifact: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(artifact, dest)
    return dest


def test_tampered_artifact_input_size_is_a_one_line_error_not_a_silently_wrong_prediction(trained, tmp_path):
    data, artifact = trained
    model = _copy_artifact(artifact, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    config["input_size"] = 64
    (model / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["predict", "--model", str(model), "--data", str(data),
                                       "--out", str(tmp_path / "sub.csv")])
    one_line_error(result, str(model / "config.json"))
    assert not (tmp_path / "sub.csv").exists()


# ---- 5. metric.goal that contradicts the monitor --------------------------------------------------

def test_flipped_metric_goal_is_rejected_by_validate(tmp_path):
    sweep = tmp_path / "flipped.yaml"
    sweep.write_text("method: random\nmetric: {name: val_auc, goal: minimize}\n"
                     "parameters:\n  lr: {values: [0.001]}\n")
    result = CliRunner().invoke(main, ["validate", str(sweep)])
    one_line_error(result, "metric.goal", "maximize")


# ---- 6. tracebacks where one line is promised ----------------------------------------------------

def test_non_utf8_train_csv_is_one_line_naming_it(tiny_data):
    rows = (tiny_data / "train.csv").read_text().splitlines()
    rows[3] = "caf\xe9.png,0"  # Latin-1, as a spreadsheet export might write it
    (tiny_data / "train.csv").write_bytes("\n".join(rows).encode("latin-1") + b"\n")
    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])
    one_line_error(result, str(tiny_data / "train.csv"), "row 4", "UTF-8")


@pytest.mark.parametrize("manifest", [True, False], ids=["with-manifest", "legacy-no-manifest"])
@pytest.mark.parametrize("damage", ["truncated-weights", "zero-byte-weights", "invalid-json-config",
                                    "wrong-backbone-config"])
def test_damaged_artifact_file_is_one_line_naming_it(trained, tmp_path, damage, manifest):
    data, artifact = trained
    model = _copy_artifact(artifact, tmp_path / "model")
    if not manifest:  # an artifact from before manifests: no manifest, and no version that promises one
        (model / "manifest.json").unlink(missing_ok=True)
        metadata = json.loads((model / "metadata.json").read_text())
        metadata.pop("covid_sweep_version", None)
        (model / "metadata.json").write_text(json.dumps(metadata))
    weights, config = model / "model.safetensors", model / "config.json"
    if damage == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "zero-byte-weights":
        weights.write_bytes(b"")
    elif damage == "invalid-json-config":
        config.write_text(config.read_text()[:-10])
    else:
        config.write_text(json.dumps({**json.loads(config.read_text()), "backbone": "resnet34"}))
    named = weights if "weights" in damage else config
    if damage == "wrong-backbone-config" and not manifest:
        named = weights  # a valid config: the weights are what do not fit it
    result = CliRunner().invoke(main, ["predict", "--model", str(model), "--data", str(data),
                                       "--out", str(tmp_path / "sub.csv")])
    one_line_error(result, str(named))


def _store_file_with_a_sweep(home: Path) -> Path:
    store = new_store(home)
    for i in range(200):  # enough rows for several pages
        store.add_trial("sw1", f"sw1-{i:03d}", {"lr": i, "pad": "x" * 200}, owner="test:1")
    store.close()
    return paths.store_path(home)


@pytest.mark.parametrize("damage", ["zero-byte", "truncated", "garbage"])
def test_damaged_sweeps_db_is_one_line_and_never_taken_for_a_new_store(tmp_path, damage):
    home = tmp_path / "home"
    db = _store_file_with_a_sweep(home)
    if damage == "zero-byte":
        db.write_bytes(b"")
    elif damage == "truncated":
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    else:
        db.write_bytes(os.urandom(8192))
    before = db.read_bytes()
    for command in (["status", "--home", str(home)], ["sweep", "--resume", "sw1", "--home", str(home)]):
        one_line_error(CliRunner().invoke(main, command), str(db))
    assert db.read_bytes() == before  # not "repaired" into an empty store


# ---- 7. a data set every trial fails on ----------------------------------------------------------

def test_trials_that_all_fail_before_their_first_epoch_stop_the_sweep_after_5(tmp_path):
    store = Store(tmp_path / "home" / "sweeps.db")
    config = {"method": "random", "metric": METRIC,  # no run_cap: it would run failing trials forever
              "parameters": {"quality": {"min": 0.1, "max": 0.9}, "epochs": {"value": 2}, "epoch_s": {"value": 0.02},
                             "crash_at": {"value": 1}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    outcome = fake_controller(store, sweep, tmp_path / "home", count=12).run()  # count: a bound for the old behaviour
    assert len(outcome.launched) == 5, outcome
    assert "5 trials in a row failed before their first epoch" in outcome.reason
    assert outcome.failed  # the one reason that makes `covid-sweep sweep` exit non-zero
    assert [t.state for t in store.trials(sweep.id)] == ["failed"] * 5


def test_check_data_refuses_a_single_class_train_set(tiny_data):
    rows = (tiny_data / "train.csv").read_text().splitlines()
    (tiny_data / "train.csv").write_text("\n".join([rows[0]] + [r.rsplit(",", 1)[0] + ",0" for r in rows[1:]]) + "\n")
    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])
    one_line_error(result, str(tiny_data / "train.csv"), "covid 0")


# ---- 8. smaller ones -----------------------------------------------------------------------------

def test_status_with_a_mistyped_home_creates_no_store(tmp_path):
    typo = tmp_path / "hoem"
    one_line_error(CliRunner().invoke(main, ["status", "--home", str(typo)]), str(typo / "sweeps.db"))
    assert not typo.exists()


def test_truncated_jpeg_fails_check_data_instead_of_decoding_half_grey(tiny_data):
    jpeg = tiny_data / "train" / "2.jpg"
    assert jpeg.read_bytes()[:2] == b"\xff\xd8"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size * 2 // 3])
    one_line_error(CliRunner().invoke(main, ["check-data", str(tiny_data)]), str(jpeg), "truncated")


def test_whole_jpeg_with_bytes_after_its_end_marker_still_passes_check_data(tiny_data):
    jpeg = tiny_data / "train" / "2.jpg"
    jpeg.write_bytes(jpeg.read_bytes() + b"trailing camera data")
    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])
    assert result.exit_code == 0, result.output


def test_retried_trial_is_named_r2_as_the_readme_says(tmp_path):
    store = Store(tmp_path / "home" / "sweeps.db")
    config = {"method": "grid", "metric": METRIC,
              "parameters": {"quality": {"values": [0.4]}, "epochs": {"value": 1}, "epoch_s": {"value": 0.05}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    dead = store.add_trial(sweep.id, f"{sweep.id}-001", {"quality": 0.4, "epochs": 1, "epoch_s": 0.05},
                           owner=f"{socket.gethostname()}:{2**22 + 12345}")
    store.mark_running(dead.id, pid=2**22 + 12346)
    fake_controller(store, sweep, tmp_path / "home").run()
    assert [t.name for t in store.trials(sweep.id) if t.retry_of == dead.id] == [f"{sweep.id}-001-r2"]
    assert "`NAME-r2`" in (Path(__file__).parents[1] / "README.md").read_text()


# ---- issue 26, item 15: a stop for a trial that has just ended --------------------------------------

def test_a_stop_sent_to_a_trial_that_already_ended_is_a_normal_outcome_not_a_crash(tmp_path, monkeypatch):
    launcher = ForkLauncher(fake_trial.report_preloaded, preload=())
    handle = launcher.start([str(tmp_path / "out.json")], tmp_path / "log", dict(os.environ))
    assert handle.wait(60) == 0
    assert wait_for(lambda: not Path(f"/proc/{handle.pid}").exists())  # reaped: its pid is free for anyone
    # hyperband's race: the controller has not seen the exit yet when it decides to stop the trial
    monkeypatch.setattr(handle, "poll", lambda: None)
    assert handle.send_signal(signal.SIGTERM) is False


def test_a_long_hyperband_sweep_of_fast_trials_ends_without_a_traceback(tmp_path):
    store = Store(tmp_path / "home" / "sweeps.db")
    config = {"method": "random", "metric": METRIC, "run_cap": 120,
              "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
              "parameters": {"quality": {"min": 0.1, "max": 0.9}, "epochs": {"value": 6},
                             "epoch_s": {"values": [0.0, 0.01, 0.03]}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=4)
    outcome = fake_controller(store, sweep, tmp_path / "home", agents=4).run()
    assert outcome.reason == "run_cap 120 reached"
    states = {str(t.state) for t in store.trials(sweep.id)}
    assert states <= {"finished", "stopped"} and "failed" not in states


# ---- issue 26, item 6: train images replaced while a sweep runs ---------------------------------------

def _replace_a_train_image(data: Path) -> None:
    """What a user re-exporting the data set does: an image of train/ is rewritten with other pixels."""
    cv2.imwrite(str(data / "train" / "0.png"), np.full((48, 48), 17, np.uint8))


def test_train_images_replaced_while_a_sweep_runs_are_warned_about_when_a_trial_on_them_finishes(tmp_path, tiny_data):
    store = Store(tmp_path / "home" / "sweeps.db")
    config = {"method": "grid", "metric": METRIC,
              "parameters": {"quality": {"values": [0.3, 0.5, 0.7]}, "epochs": {"value": 1},
                             "epoch_s": {"value": 0.05}, "data": {"value": str(tiny_data)}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    lines = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith(f"trial {sweep.id}-001 finished"):  # one agent: trial 002 starts after this
            _replace_a_train_image(tiny_data)

    fake_controller(store, sweep, tmp_path / "home", agents=1, log=log).run()
    assert [t.state for t in store.trials(sweep.id)] == ["finished"] * 3
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1, lines  # trial 003 was trained on the same new images as 002: said once
    assert f"trial {sweep.id}-002 was trained on other train images than trial {sweep.id}-001" in warnings[0]

    # a resumed sweep says it again, from what its trials recorded
    resumed = []
    fake_controller(store, store.sweep(sweep.id), tmp_path / "home", log=resumed.append).run()
    assert [line for line in resumed if line.startswith("warning:")] == warnings


def test_export_best_after_train_images_were_replaced_promotes_only_a_trial_trained_on_the_current_ones(
        trained, tmp_path):
    from helpers.trials import TINY

    from covid_sweep.core.config import build_config
    from covid_sweep.training.trial import run_trial

    data, old_artifact = trained
    current = tmp_path / "data"
    shutil.copytree(data, current)
    _replace_a_train_image(current)
    config = build_config({**TINY, "epochs": 1, "val_fraction": 0.25, "data_dir": str(current)})
    new_artifact = run_trial(config, tmp_path / "new", progress=False, trial_name="sw1-002").artifact
    home = tmp_path / "home"
    store = new_store(home)
    add_trial(store, "sw1-001", "finished", [0.9], old_artifact)  # the better score, on the images since replaced
    new = add_trial(store, "sw1-002", "finished", [0.6], new_artifact)

    result = export_best("sw1", current, tmp_path / "out", home=home)
    assert result.provenance.trial_id == "sw1-002" and store.alias("sw1", "best") == new.id
    assert "were left out (train/ changed during or after the sweep): sw1-001" in result.choice.note
    # export-best with the images the old trial was trained on still promotes it
    assert export_best("sw1", data, tmp_path / "old", home=home).provenance.trial_id == "sw1-001"

    only_old = new_store(home, sweep_id="sw2")
    add_trial(only_old, "sw2-001", "finished", [0.9], old_artifact, sweep_id="sw2")
    with pytest.raises(PromotionError, match=r"every finished trial was trained on other train images than .*sw2-001"):
        export_best("sw2", current, tmp_path / "none", home=home)
    assert not (tmp_path / "none").exists() and only_old.alias("sw2", "best") is None
