"""The prediction job (probabilities, TTA, submission) and the export (TorchScript, model card, folder),
against a real model trained for one epoch on tiny generated images."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.faults import failing_on_call
from helpers.torchscript import scripted_probs

from covid_sweep.cli import main
from covid_sweep.core.config import build_config
from covid_sweep.core.errors import UserError
from covid_sweep.core.files import umask_mode
from covid_sweep.data.layout import DataError, decode_resized, load_split
from covid_sweep.inference import export as export_mod
from covid_sweep.inference.export import ExportError, Provenance, export_bundle
from covid_sweep.inference.predict import TTA, VIEWS, predict_images, predict_split, run_predict, views_for
from covid_sweep.inference.submission import SubmissionError, read_probabilities, read_submission
from covid_sweep.model.artifact import load_artifact, write_artifact
from covid_sweep.model.networks import Ensemble, build_model
from covid_sweep.model.runtime import predict_probs

CPU = torch.device("cpu")


def _provenance(artifact: Path) -> Provenance:
    return Provenance(sweep_id="sw1", trial_id="sw1-001", source="test", artifact=str(artifact),
                      metric="val_auc", goal="maximize", value=0.75, promotion="alias 'best' (test)")


# ---- probabilities and TTA -------------------------------------------------------------------------

def test_predictions_follow_the_sample_order_and_the_threshold(trained):
    data, artifact_dir = trained
    artifact = load_artifact(artifact_dir)
    prediction = predict_split(artifact, data)
    split = load_split(data, "test")
    assert prediction.ids == split.ids
    direct = predict_probs(artifact.model, decode_resized(split, 32), 4, CPU)
    assert np.allclose(prediction.probs, direct, atol=1e-6)
    assert prediction.threshold == json.loads((artifact_dir / "metrics.json").read_text())["threshold"]
    assert prediction.labels.tolist() == [int(p >= prediction.threshold) for p in prediction.probs]


def test_tta_is_the_mean_over_identity_and_flips(trained):
    data, artifact_dir = trained
    artifact = load_artifact(artifact_dir)
    images = decode_resized(load_split(data, "test"), 32)
    plain = predict_probs(artifact.model, images, 4, CPU)
    flipped = predict_probs(artifact.model, np.ascontiguousarray(images[:, :, ::-1]), 4, CPU)
    upside_down = predict_probs(artifact.model, np.ascontiguousarray(images[:, ::-1]), 4, CPU)
    assert np.ptp(plain) > 1e-4 and not np.allclose(plain, flipped)  # a real model; the flip is another view
    assert np.allclose(predict_split(artifact, data, views=TTA).probs, (plain + flipped) / 2, atol=1e-6)
    three = predict_images(artifact.model, images, 4, CPU, ("identity", "hflip", "vflip"))
    assert np.allclose(three, (plain + flipped + upside_down) / 3, atol=1e-6)


def test_zoom_views_scale_about_the_centre_and_keep_the_shape():
    image = np.zeros((1, 40, 40, 3), dtype=np.uint8)
    image[0, 15:25, 15:25] = 255  # a bright 10x10 square in the centre
    image[0, 0, :] = 255          # and a bright top row, which a zoom-in pushes out of the frame
    zoomed_in, zoomed_out = VIEWS["zoom_in"](image), VIEWS["zoom_out"](image)
    for view in (zoomed_in, zoomed_out):
        assert view.shape == image.shape and view.dtype == np.uint8
    bright = lambda a: int((a[0, 5:35, 5:35, 0] > 127).sum())  # noqa: E731  (the square only)
    assert bright(zoomed_in) > bright(image) > bright(zoomed_out)  # 1.1x larger / smaller about the centre
    assert bright(zoomed_in) == pytest.approx(100 * 1.1 ** 2, rel=0.25)
    assert zoomed_in[0, 0].max() == 0                              # the edge row left the frame
    assert zoomed_out[0, 0].max() == 0 and zoomed_out[0, 2, 5:35].min() > 127  # the edge row moved in
    assert (zoomed_in[0, 20, 20] == 255).all() and (zoomed_out[0, 20, 20] == 255).all()


def test_named_views_are_parsed_checked_and_averaged(trained):
    data, artifact_dir = trained
    artifact = load_artifact(artifact_dir)
    images = decode_resized(load_split(data, "test"), 32)
    assert views_for(False) == ("identity",) and views_for(True) == TTA
    assert views_for(True, "identity, zoom_in,zoom_out") == ("identity", "zoom_in", "zoom_out")  # the list wins
    for empty in ("", ()):
        with pytest.raises(UserError, match=r"TTA views \(none\)"):
            views_for(True, empty)
    for bad in ("spin", "hflip,hflip", ""):
        with pytest.raises(UserError, match="name each once, from identity, hflip, vflip, zoom_in, zoom_out"):
            predict_images(artifact.model, images, 4, CPU, tuple(bad.split(",")) if bad else ())
    plain = predict_probs(artifact.model, images, 4, CPU)
    bigger = predict_probs(artifact.model, VIEWS["zoom_in"](images), 4, CPU)
    assert not np.allclose(plain, bigger)
    assert np.allclose(predict_images(artifact.model, images, 4, CPU, ("identity", "zoom_in")), (plain + bigger) / 2,
                       atol=1e-6)


def test_predict_command_takes_named_views_and_refuses_unknown_ones(trained, tmp_path):
    data, artifact_dir = trained
    out = tmp_path / "submission.csv"
    runner = CliRunner()
    bad = runner.invoke(main, ["predict", "--model", str(artifact_dir), "--data", str(data), "--out", str(out),
                               "--tta-views", "hflip,spin"])
    assert bad.exit_code != 0 and "TTA views hflip, spin" in bad.output and "Traceback" not in bad.output
    assert not out.exists()
    good = runner.invoke(main, ["predict", "--model", str(artifact_dir), "--data", str(data), "--out", str(out),
                                "--tta-views", "identity,zoom_in,zoom_out"])
    assert good.exit_code == 0, good.output
    assert "views: identity + zoom_in + zoom_out" in good.output
    expected = predict_split(load_artifact(artifact_dir), data, views=("identity", "zoom_in", "zoom_out")).probs
    written = read_probabilities(tmp_path / "submission.probabilities.csv")
    assert np.allclose(list(written.values()), expected, atol=1e-6)


def test_predict_command_writes_submission_and_probabilities(trained, tmp_path):
    data, artifact_dir = trained
    out = tmp_path / "sub" / "submission.csv"
    runner = CliRunner()
    result = runner.invoke(main, ["predict", "--model", str(artifact_dir), "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    probs_file = tmp_path / "sub" / "submission.probabilities.csv"
    submission = read_submission(out)
    sample = [r.split(",")[0] for r in (data / "sample_submission.csv").read_text().splitlines()[1:]]
    assert list(submission.ids) == sample and set(submission.labels) <= {0, 1}
    assert list(read_probabilities(probs_file)) == sample
    before = out.read_text(), probs_file.read_text()

    again = runner.invoke(main, ["predict", "--model", str(artifact_dir), "--data", str(data), "--out", str(out), "--tta"])
    assert again.exit_code == 1 and "already exists; pass --force" in again.output
    assert (out.read_text(), probs_file.read_text()) == before

    forced = runner.invoke(main, ["predict", "--model", str(artifact_dir), "--data", str(data), "--out", str(out),
                                  "--tta", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "views: identity + hflip" in forced.output
    assert probs_file.read_text() != before[1]
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.csv", "submission.probabilities.csv"]


# ---- export ---------------------------------------------------------------------------------------

def _card_code(card: str) -> str:
    return re.search(r"```python\n(.*?)```", card, re.S).group(1)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """One export folder (with TTA) shared by the tests that only read it."""
    data, artifact_dir = trained
    out = tmp_path_factory.mktemp("exported") / "export"
    result = export_bundle(load_artifact(artifact_dir), data, out, _provenance(artifact_dir), views=TTA)
    return out, result


def test_model_card_shows_grad_cam_overlays_of_right_and_wrong(exported):
    out, _ = exported
    card = (out / "model_card.md").read_text()
    images = sorted((out / "explain").glob("*.png"))
    assert images and "## Grad-CAM" in card
    for image in images:
        assert f"](explain/{image.name})" in card


def test_exported_torchscript_runs_in_a_fresh_process_without_covid_sweep(trained, exported):
    data, artifact_dir = trained
    out, result = exported
    assert sorted(result.files) == ["explain", "model", "model_card.md", "probabilities.csv", "submission.csv"]
    in_process = predict_split(load_artifact(artifact_dir), data)  # one view, as the card's code
    # the loading code of the model card itself, run where covid_sweep is never imported
    code = _card_code((out / "model_card.md").read_text()) + (
        "\nimport json, sys\n"
        "assert 'covid_sweep' not in sys.modules and 'torchvision' not in sys.modules, sorted(sys.modules)\n"
        f"prob, covid = predict({[str(p) for p in load_split(data, 'test').paths]!r})\n"
        "print(json.dumps({'prob': prob.tolist(), 'covid': covid.tolist()}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=out, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert np.allclose(fresh["prob"], in_process.probs, atol=1e-5)
    assert fresh["covid"] == in_process.labels.tolist()


def test_export_folder_contents_and_model_card(trained, exported):
    data, artifact_dir = trained
    out, result = exported
    artifact = load_artifact(artifact_dir)
    # the submission and probabilities are the TTA prediction
    tta = predict_split(artifact, data, views=TTA)
    written = read_probabilities(out / "probabilities.csv")
    assert np.allclose([written[i] for i in tta.ids], tta.probs, atol=1e-6)
    assert list(read_submission(out / "submission.csv").labels) == tta.labels.tolist()
    model = out / "model"
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "manifest.json", "metadata.json", "metrics.json",
                                                        "model.safetensors", "model.torchscript.pt",
                                                        "val_predictions.npz"]
    for name in ("config.json", "metrics.json", "metadata.json", "model.safetensors", "manifest.json",
                 "val_predictions.npz"):
        assert (model / name).read_bytes() == (artifact_dir / name).read_bytes()
    # the copied artifact is itself a loadable artifact, the TorchScript file carries its own metadata
    assert load_artifact(model).config == artifact.config
    extra = {export_mod.EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.x deprecates torch.jit
        torch.jit.load(str(model / "model.torchscript.pt"), _extra_files=extra)
    meta = json.loads(extra[export_mod.EXTRA_FILE])
    assert meta["input_size"] == 32 and meta["threshold"] == artifact.threshold
    card = (out / "model_card.md").read_text()
    metadata = json.loads((artifact_dir / "metadata.json").read_text())
    for needle in ("`sw1`", "`sw1-001`", metadata["data_fingerprint"], f"{artifact.threshold:.6g}",
                   '"backbone": "resnet18"', "val_auc", "torch.jit.load", "views: identity + hflip"):
        assert needle in card, needle
    assert out.stat().st_mode & 0o777 == umask_mode(0o777)  # not mkdtemp's 0700


def test_model_card_shows_the_validation_estimate_beside_the_test_score(trained, exported):
    from sklearn.metrics import roc_auc_score

    data, artifact_dir = trained
    out, result = exported
    artifact = load_artifact(artifact_dir)
    card = (out / "model_card.md").read_text()
    assert "Validation split: **grouped holdout (near-duplicates only)**." in card
    assert "| validation | grouped holdout (near-duplicates only); 3 images, seed 0; groups: 12 groups" in card
    rows = list(csv.DictReader((data / "test_labels.csv").open()))
    probs = read_probabilities(out / "probabilities.csv")
    test_auc = roc_auc_score([int(r["COVID"]) for r in rows], [probs[r["file_name"]] for r in rows])
    val_auc = artifact.metrics["best"]["val_auc"]
    assert f"| auc | {val_auc:.3f} | {test_auc:.3f} | {val_auc - test_auc:+.3f} |" in card
    assert result.estimate.gap("auc") == pytest.approx(val_auc - test_auc)


def test_a_k_fold_ensemble_exports_to_one_torchscript_model(tmp_path):
    """folds > 1 artifacts hold an Ensemble (log of the mean probability): the export gives that mean."""
    config = build_config({"backbone": "resnet18", "input_size": 32, "folds": 2, "device": "cpu"})
    members = [build_model("resnet18") for _ in range(2)]
    state = Ensemble(members).state_dict()
    path = write_artifact(tmp_path / "ensemble", state, config, {"threshold": 0.5}, {"trial": "k2"})
    artifact = load_artifact(path)
    target = export_mod.export_torchscript(artifact, tmp_path / "model.pt")  # checks eager == traced itself
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    got = scripted_probs(target, images)
    mean = np.mean([predict_probs(m.eval(), images, 5, CPU) for m in load_artifact(path).model.members], axis=0)
    assert np.allclose(got, mean, atol=1e-5)


def test_export_refuses_a_non_empty_folder_and_force_keeps_other_files(trained, tmp_path):
    data, artifact_dir = trained
    artifact = load_artifact(artifact_dir)
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "submission.csv").write_text("old")
    with pytest.raises(ExportError, match="not empty; pass --force"):
        export_bundle(artifact, data, out, _provenance(artifact_dir), views=("identity",))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "submission.csv"]
    export_bundle(artifact, data, out, _provenance(artifact_dir), views=("identity",), force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert read_submission(out / "submission.csv").ids == load_split(data, "test").ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging or backup folder left


def test_a_failed_export_loses_nothing(trained, exported, tmp_path, monkeypatch):
    data, artifact_dir = trained
    artifact = load_artifact(artifact_dir)
    out = tmp_path / "export"
    shutil.copytree(exported[0], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def refuse():
        raise RuntimeError("promotion failed")

    with pytest.raises(RuntimeError, match="promotion failed"):
        export_bundle(artifact, data, out, _provenance(artifact_dir), views=TTA, force=True, before_install=refuse)
    # an error in the middle of moving the new files in puts the old ones back
    monkeypatch.setattr(os, "replace", failing_on_call(os.replace, 4, lambda: OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        export_bundle(artifact, data, out, _provenance(artifact_dir), views=TTA, force=True)
    monkeypatch.undo()
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_export_rejects_a_file_as_folder(trained, tmp_path):
    data, artifact_dir = trained
    (tmp_path / "export").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        export_bundle(load_artifact(artifact_dir), data, tmp_path / "export", _provenance(artifact_dir), views=TTA)


def test_a_missing_test_image_fails_before_writing(trained, tmp_path):
    data, artifact_dir = trained
    (tmp_path / "d" / "test").mkdir(parents=True)
    (tmp_path / "d" / "sample_submission.csv").write_text("file_name,COVID\nnope.png,0\n")
    with pytest.raises(DataError, match="nope.png"):
        export_bundle(load_artifact(artifact_dir), tmp_path / "d", tmp_path / "export", _provenance(artifact_dir), views=TTA)
    assert not (tmp_path / "export").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_predict_needs_a_file_path(trained, tmp_path):
    data, artifact_dir = trained
    with pytest.raises(SubmissionError, match="is a directory"):
        run_predict(artifact_dir, data, tmp_path)
