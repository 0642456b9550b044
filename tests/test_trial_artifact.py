import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from covid_sweep.cli import main
from covid_sweep.core.config import ConfigError, build_config
from covid_sweep.data.layout import decode_resized, load_split
from covid_sweep.model.artifact import ArtifactError, load_artifact, write_dir_atomically
from covid_sweep.model.runtime import predict_probs
from covid_sweep.tracking.tracker import Tracker, resolve_mode
from covid_sweep.training import trial as trial_mod
from covid_sweep.training.train import fit_folds
from covid_sweep.training.trial import run_trial


def test_trial_writes_a_reloadable_artifact(tiny_config_values, tmp_path, monkeypatch):
    fitted = []

    def keep_fit_result(*args, **kwargs):
        fitted.append(fit_folds(*args, **kwargs))
        return fitted[-1]

    monkeypatch.setattr(trial_mod, "fit_folds", keep_fit_result)
    config = build_config(tiny_config_values)
    result = run_trial(config, tmp_path / "model", progress=False, trial_name="t1")
    assert result.state == "finished" and result.epochs_run == 2
    loaded = load_artifact(result.artifact)
    assert loaded.config == config
    metrics = json.loads((result.artifact / "metrics.json").read_text())
    assert metrics["best"]["epoch"] == result.best_epoch and len(metrics["history"]) == 2
    assert 0 <= loaded.threshold <= 1 and loaded.threshold == result.threshold
    assert loaded.metadata["preprocessing"]["resize"] == [32, 32]
    assert loaded.metadata["class_map"] == {"0": "non-covid", "1": "covid"}
    # the reloaded weights are the in-memory best state, and predict as it did on validation
    best_state = fitted[0].best_state
    reloaded = loaded.model.state_dict()
    assert set(reloaded) == set(best_state) and all(torch.equal(reloaded[k], best_state[k]) for k in best_state)
    split = load_split(config.data_dir, "train")
    images = decode_resized(split, 32)
    probs = predict_probs(loaded.model, images, 8, torch.device("cpu"))
    assert probs.shape == (24,) and np.all((probs >= 0) & (probs <= 1))


def test_missing_data_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data_dir: not set"):
        run_trial(build_config({"input_size": 32}), tmp_path / "m", progress=False)


def test_atomic_write_leaves_nothing_on_crash(tmp_path):
    def fill(folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_dir_atomically(tmp_path / "model", fill)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_gives_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_dir_atomically(tmp_path / "model", lambda folder: (folder / "w.bin").write_bytes(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "model" / "w.bin").stat().st_mode & 0o777 == 0o644


def test_existing_artifact_is_not_overwritten(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(ArtifactError, match="already exists"):
        write_dir_atomically(tmp_path / "model", lambda folder: None)


def test_incomplete_artifact_is_named(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="missing model.safetensors, metrics.json, metadata.json"):
        load_artifact(tmp_path / "model")


def test_offline_tracking_leaves_a_syncable_run_with_best_summary(tiny_config_values, tmp_path):
    config = build_config(tiny_config_values)
    tracker = Tracker.start(mode="offline", directory=tmp_path / "wb", config=config.model_dump(mode="json"), name="t-off")
    result = run_trial(config, tmp_path / "model", tracker, progress=False, trial_name="t-off")
    # the summary holds the best value (what best_run() sorts by), not the last epoch's
    assert tracker.run.summary["val_auc"] == pytest.approx(result.best["val_auc"])
    assert tracker.run.summary["best_val_acc"] == pytest.approx(result.best["val_acc"])
    assert tracker.run.summary["split"] == "grouped holdout (near-duplicates only)"  # what val_auc was measured on
    tracker.finish(0)
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode(None) == "online"
    assert resolve_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode(None) == "offline"


def test_train_cli_end_to_end(tiny_data, tmp_path):
    out = tmp_path / "cli-model"
    result = CliRunner().invoke(main, [
        "train", "--data", str(tiny_data), "--out", str(out), "--backbone", "mobilenet_v3_small",
        "--input-size", "32", "--epochs", "1", "--batch-size", "8", "--hflip", "--no-rotate",
        "--val-fraction", "0.25", "--wandb-mode", "disabled", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"artifact: {out}" in result.output
    config = load_artifact(out).config
    assert config.backbone == "mobilenet_v3_small" and config.hflip and not config.rotate


def test_train_cli_bad_value_is_one_clear_line(tiny_data):
    result = CliRunner().invoke(main, ["train", "--data", str(tiny_data), "--lr", "-3"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: TrialConfig: lr: Input should be greater than 0")
    assert "Traceback" not in result.output


def test_k_fold_trial_is_an_ensemble_of_its_folds(tiny_config_values, tmp_path):
    from covid_sweep.model.networks import Ensemble

    config = build_config({**tiny_config_values, "folds": 3})
    records = []
    result = run_trial(config, tmp_path / "ens", on_epoch=records.append, progress=False)
    assert [r["epoch"] for r in records] == [1, 2]  # one record per epoch: the mean over folds
    loaded = load_artifact(result.artifact)
    assert isinstance(loaded.model, Ensemble) and len(loaded.model.members) == 3
    assert loaded.metadata["validation"]["n_val"] == 24  # out-of-fold: every training image scored once
    images = decode_resized(load_split(config.data_dir, "train"), 32)
    x = torch.from_numpy(images[:5])
    from covid_sweep.model.preprocessing import to_model_input

    with torch.no_grad():
        member_probs = torch.stack([torch.softmax(m(to_model_input(x)), 1)[:, 1] for m in loaded.model.members])
    ensemble_probs = predict_probs(loaded.model, images[:5], 8, torch.device("cpu"))
    assert np.allclose(ensemble_probs, member_probs.mean(0).numpy(), atol=1e-6)


def test_k_fold_needs_enough_images_per_class(tiny_config_values, tmp_path):
    from covid_sweep.data.layout import DataError

    with pytest.raises(DataError, match="20 grouped folds need at least 20 groups holding class 0 \\(has 12\\)"):
        run_trial(build_config({**tiny_config_values, "folds": 20}), tmp_path / "m", progress=False)


def test_train_cli_retrains_from_an_artifact_config_as_k_fold(tiny_config_values, tmp_path):
    first = run_trial(build_config(tiny_config_values), tmp_path / "winner", progress=False)
    out = tmp_path / "ensemble"
    result = CliRunner().invoke(main, ["train", "--config", str(first.artifact / "config.json"), "--folds", "3",
                                       "--epochs", "1", "--out", str(out), "--wandb-mode", "disabled", "--quiet"])
    assert result.exit_code == 0, result.output
    config = load_artifact(out).config
    assert config.folds == 3 and config.data_dir == build_config(tiny_config_values).data_dir.absolute()
    missing = CliRunner().invoke(main, ["train", "--epochs", "1"])
    assert missing.exit_code == 1 and "--data is required" in missing.output
