"""export-best with the selection-corrected estimate and --ensemble: a sweep of real (untrained) artifacts whose
validation predictions are written by hand, so which model validation favours is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.data import make_dataset
from helpers.sweeps import add_trial, new_store
from helpers.torchscript import scripted_probs

from covid_sweep.cli import main
from covid_sweep.core.config import build_config
from covid_sweep.core.metrics import choose_threshold
from covid_sweep.data.layout import content_fingerprint, decode_resized, load_split
from covid_sweep.inference.explain import explain
from covid_sweep.inference.predict import predict_images, predict_split
from covid_sweep.inference.submission import read_probabilities
from covid_sweep.inference.tta_report import score_view_sets, validation_images
from covid_sweep.model.artifact import load_artifact, write_artifact
from covid_sweep.model.ensemble_artifact import LoadedEnsemble, write_ensemble
from covid_sweep.model.networks import build_model
from covid_sweep.model.preprocessing import preprocessing_spec
from covid_sweep.model.val_predictions import ValPredictions
from covid_sweep.sweep.control.promote import export_best
from covid_sweep.training.trial import run_trial

N_VAL = 24
LABELS = np.arange(N_VAL) % 2
GROUPS = (np.arange(N_VAL) // 2).astype(str)  # 12 patients, one slice of each class


def _predictions(correct: np.ndarray, seed: int) -> ValPredictions:
    """Two epochs; confident and right where `correct`, a coin toss elsewhere."""
    rng = np.random.default_rng(seed)
    sure = np.where(LABELS == 1, rng.uniform(0.7, 0.95, N_VAL), rng.uniform(0.05, 0.3, N_VAL))
    probs = np.where(correct, sure, rng.uniform(0.3, 0.7, N_VAL))
    return ValPredictions.build([f"{i}.png" for i in range(N_VAL)], LABELS, np.zeros(N_VAL, int), GROUPS, [1, 2],
                                [np.full(N_VAL, 0.5), probs])


def _trained_on(data) -> str:
    """The fingerprint a trial on data's train/ records (export-best promotes only trials trained on it)."""
    return content_fingerprint(load_split(data, "train"))


def _artifact(root, name, backbone, size, predictions, fingerprint):
    torch.manual_seed(len(name))
    config = build_config({"backbone": backbone, "input_size": size, "device": "cpu", "batch_size": 4})
    best = {"epoch": 2, "val_auc": 0.0}
    metrics = {"best_epoch": 2, "threshold": 0.5, "best": best, "monitor": "val_auc", "goal": "maximize"}
    metadata = {"trial": name, "preprocessing": preprocessing_spec(size), "data_fingerprint": fingerprint,
                "validation": {"split": "grouped holdout (test)", "split_key": predictions.split_key, "n_val": N_VAL,
                               "seed": 0, "groups": "12 patients"}}
    return write_artifact(root / name, build_model(backbone).state_dict(), config, metrics, metadata, predictions)


@pytest.fixture(scope="module")
def sweep_home(tmp_path_factory):
    """HOME with sweep sw1: trials a and b are each right on a different half of the patients (together they are
    right on all), c is right on a third; c is the sweep's best single trial by a hair."""
    root = tmp_path_factory.mktemp("ens")
    data = make_dataset(root / "data", n_train=N_VAL, n_test=6, seed=5)
    half = GROUPS.astype(int) < 6
    trials = {"a": ("resnet18", 32, _predictions(half, 1), 0.80),
              "b": ("mobilenet_v3_small", 40, _predictions(~half, 2), 0.81),
              "c": ("resnet18", 32, _predictions(GROUPS.astype(int) % 3 == 0, 3), 0.82)}
    home = root / "home"
    store = new_store(home, data_dir=str(data))
    for name, (backbone, size, predictions, value) in trials.items():
        add_trial(store, name, "finished", [0.5, value],
                  _artifact(root / "artifacts", name, backbone, size, predictions, _trained_on(data)))
    store.close()
    return home, data


def test_without_ensemble_the_best_trial_is_promoted_with_its_estimate(sweep_home, tmp_path):
    home, data = sweep_home
    result = export_best("sw1", data, tmp_path / "out", home=home, samples=200)
    assert result.choice.kind == "single" and result.choice.trial == "c"
    single = result.choice.selection["single"]
    assert single["selected_value"] > single["estimate"] and single["low"] <= single["estimate"] <= single["high"]
    metadata = json.loads((tmp_path / "out" / "model" / "metadata.json").read_text())
    assert metadata["selection_estimate"]["single"] == single  # and the manifest still vouches for it:
    load_artifact(tmp_path / "out" / "model")
    card = (tmp_path / "out" / "model_card.md").read_text()
    assert "selection-corrected" in card and f"{single['estimate']:.3f}" in card


def test_the_ensemble_is_promoted_where_validation_favours_it(sweep_home, tmp_path):
    home, data = sweep_home
    out = tmp_path / "out"
    result = export_best("sw1", data, out, home=home, ensemble=True, samples=200)
    choice = result.choice
    assert choice.kind == "ensemble", choice.note
    assert set(choice.selection["members"]) == {"a", "b"}
    assert choice.selection["ensemble"]["estimate"] > choice.selection["single"]["estimate"]
    ensemble = load_artifact(out / "model")
    assert isinstance(ensemble, LoadedEnsemble) and ensemble.input_sizes == [32, 40]
    # the submission is the weighted mean of the members' own predictions, each at its own input size
    written = read_probabilities(out / "probabilities.csv")
    members = sum(m.weight * predict_split(m.artifact, data).probs for m in ensemble.members)
    ids = load_split(data, "test").ids
    assert np.allclose([written[i] for i in ids], members, atol=1e-6)
    # the TorchScript module takes one batch per input size and gives the same probabilities
    split = load_split(data, "test")
    scripted = scripted_probs(out / "model" / "model.torchscript.pt",
                              [decode_resized(split, size) for size in ensemble.input_sizes])
    assert np.allclose(scripted, predict_split(ensemble, data).probs, atol=1e-5)
    card = (out / "model_card.md").read_text()
    assert "weighted ensemble of 2 trials" in card and "greedy ensemble" in card and "SIZES, THRESHOLD = [32, 40]" in card
    assert list((out / "explain").glob("*.png"))  # Grad-CAM overlays of the ensemble


def test_tta_and_grad_cam_work_on_an_ensemble(sweep_home, tmp_path):
    home, data = sweep_home
    export_best("sw1", data, tmp_path / "out", home=home, ensemble=True, samples=100)
    ensemble = load_artifact(tmp_path / "out" / "model")
    plain, flipped = predict_split(ensemble, data), predict_split(ensemble, data, views=("identity", "hflip"))
    each = sum(m.weight * predict_split(m.artifact, data, views=("identity", "hflip")).probs for m in ensemble.members)
    assert np.allclose(flipped.probs, each, atol=1e-6) and not np.allclose(flipped.probs, plain.probs)
    split = load_split(data, "test")
    written = explain(ensemble, split, np.asarray([i % 2 for i in range(6)]), tmp_path / "cams", n=1)
    assert written and all(item.path.is_file() for item in written)


def test_a_dominant_trial_is_promoted_alone(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=N_VAL, n_test=4, seed=6)
    home = tmp_path / "home"
    store = new_store(home, data_dir=str(data))
    everyone = np.ones(N_VAL, bool)
    for name, correct, value in (("a", GROUPS.astype(int) < 3, 0.6), ("b", everyone, 0.99)):
        add_trial(store, name, "finished", [0.5, value],
                  _artifact(tmp_path / "artifacts", name, "resnet18", 32, _predictions(correct, 7), _trained_on(data)))
    store.close()
    result = export_best("sw1", data, tmp_path / "out", home=home, ensemble=True, samples=100)
    assert result.choice.kind == "single" and result.choice.trial == "b"
    assert "single trial" in result.choice.note or "alone" in result.choice.note


def test_export_best_json_says_what_was_promoted_and_why(sweep_home, tmp_path):
    home, data = sweep_home
    done = CliRunner().invoke(main, ["export-best", "sw1", "--data", str(data), "--out", str(tmp_path / "out"),
                                     "--home", str(home), "--ensemble", "--samples", "100", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["promoted"]["kind"] == "ensemble" and set(report["promoted"]["members"]) == {"a", "b"}
    assert report["selection_estimate"]["ensemble"]["samples"] > 50 and "beats" in report["why"]
    assert report["test"]["auc"] is not None  # scored after the choice, shown beside it


def test_the_summary_line_carries_the_interval(sweep_home, tmp_path):
    home, data = sweep_home
    done = CliRunner().invoke(main, ["export-best", "sw1", "--data", str(data), "--out", str(tmp_path / "out"),
                                     "--home", str(home), "--samples", "100"])
    assert done.exit_code == 0, done.output
    first = done.output.splitlines()[0]
    assert first.startswith("best finished trial of sweep sw1: c (val_auc=0.8200, maximize) · selection-corrected ")
    assert "[" in first and "]" in first


def test_tta_report_scores_an_ensemble_on_its_members_shared_validation_images(tmp_path):
    # two real 1-epoch trials on one split: the ensemble's validation accuracy comes from its members' models
    data = make_dataset(tmp_path / "data", n_train=16, n_test=2, seed=8)
    trials = []
    for name, size in (("r32", 32), ("r40", 40)):
        config = build_config({"backbone": "resnet18", "input_size": size, "epochs": 1, "batch_size": 4,
                               "val_fraction": 0.25, "amp": False, "device": "cpu", "data_dir": str(data)})
        trials.append((name, run_trial(config, tmp_path / name, progress=False, trial_name=name).artifact, 0.5))
    singles = [load_artifact(path) for _, path, _ in trials]
    probs = 0.5 * sum(np.concatenate([predict_images(m, im, 4, torch.device("cpu"), preprocessing=a.preprocessing)
                                      for m, im, _ in validation_images(a, data)]) for a in singles)
    labels = np.concatenate([lab for _, _, lab in validation_images(singles[0], data)])
    threshold = choose_threshold(labels, probs)  # a cut between probabilities: float noise cannot flip a decision
    folder = write_ensemble(tmp_path / "ensemble", trials, {"threshold": threshold}, {"data_dir": str(data)})
    score = score_view_sets(load_artifact(folder), data, [("identity",)])[0]
    assert score.n == 4 and score.metrics["acc"] == pytest.approx(((probs >= threshold) == labels).mean())
