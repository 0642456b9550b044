"""tta-report: TTA view sets scored on an artifact's own validation images, rebuilt from its config."""

from __future__ import annotations

import json
import shutil

import cv2
import pytest
from click.testing import CliRunner

from covid_sweep.cli import main
from covid_sweep.core.config import build_config
from covid_sweep.core.errors import UserError
from covid_sweep.inference.tta_report import DEFAULT_VIEW_SETS, score_view_sets
from covid_sweep.model.artifact import load_artifact
from covid_sweep.training.trial import run_trial


def _identity(artifact_dir, data):
    return score_view_sets(load_artifact(artifact_dir), data, [("identity",)])[0]


def test_holdout_identity_reproduces_the_trials_own_validation_score(trained):
    data, artifact_dir = trained
    metrics = json.loads((artifact_dir / "metrics.json").read_text())
    score = _identity(artifact_dir, data)
    assert score.n == 3  # 12 images, val_fraction 0.25
    assert score.metrics["acc"] == pytest.approx(metrics["val_acc_at_threshold"], abs=1e-9)
    assert score.metrics["auc"] == pytest.approx(metrics["best"]["val_auc"], abs=1e-6, nan_ok=True)


def test_k_fold_scores_each_image_with_the_member_that_never_saw_it(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("COVID_SWEEP_CACHE", str(tmp_path / "cache"))
    data = tiny_data
    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 1, "batch_size": 4, "folds": 2,
                           "amp": False, "device": "cpu", "data_dir": str(data)})
    result = run_trial(config, tmp_path / "ens", progress=False, trial_name="k2")
    metrics = json.loads((result.artifact / "metrics.json").read_text())
    score = _identity(result.artifact, data)
    # out-of-fold accuracy at the OOF threshold: only member i on fold i reproduces the trial's number
    assert score.n == 24
    assert score.metrics["acc"] == pytest.approx(metrics["val_acc_at_threshold"], abs=1e-9)


def test_other_data_is_refused_by_fingerprint(trained, tmp_path):
    data, artifact_dir = trained
    changed = shutil.copytree(data, tmp_path / "changed")
    first = sorted((changed / "train").iterdir())[0]
    image = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(first), 255 - image)
    with pytest.raises(UserError, match="is not the data .* was trained on"):
        _identity(artifact_dir, changed)


def test_command_prints_every_default_view_set_and_refuses_unknown_views(trained):
    data, artifact_dir = trained
    runner = CliRunner()
    result = runner.invoke(main, ["tta-report", "--model", str(artifact_dir), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "3 holdout validation images" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("identity")]
    assert [row.split("  ")[0].strip() for row in rows] == [" + ".join(v) for v in DEFAULT_VIEW_SETS]
    bad = runner.invoke(main, ["tta-report", "--model", str(artifact_dir), "--data", str(data), "--views", "hflip,spin"])
    assert bad.exit_code != 0 and "TTA views hflip, spin" in bad.output and "Traceback" not in bad.output
