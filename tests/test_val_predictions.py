"""Every trial keeps its validation predictions: every scored epoch, every validation image, in its artifact."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers.trials import tiny_trial

from covid_sweep.core.metrics import binary_metrics
from covid_sweep.data.layout import load_split
from covid_sweep.model.artifact import ArtifactError, load_artifact
from covid_sweep.model.val_predictions import VAL_PREDICTIONS, PredictionsError, ValPredictions, load, save, split_key


@pytest.fixture(scope="module")
def two_fold(tmp_path_factory):
    """A 2-fold trial of 3 epochs on the tiny data set."""
    return tiny_trial(tmp_path_factory.mktemp("kfold"), {"epochs": 3, "patience": 3, "batch_size": 8, "folds": 2},
                      n_train=24, n_test=4, seed=3, name="k2")


def test_every_epoch_of_every_out_of_fold_image_is_kept(two_fold):
    data, result = two_fold
    artifact = load_artifact(result.artifact)
    predictions = artifact.val_predictions
    metrics = json.loads((result.artifact / "metrics.json").read_text())
    train = load_split(data, "train")
    # 2 folds: every training image once, in the fold its split record names
    assert sorted(predictions.files.tolist()) == sorted(train.ids)
    recorded = artifact.metadata["validation"]["val_files"]
    for k, files in enumerate(recorded):
        assert sorted(predictions.files[predictions.folds == k].tolist()) == sorted(files)
    assert predictions.epochs.tolist() == [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    labels = dict(zip(train.ids, train.labels))
    assert predictions.labels.tolist() == [labels[f] for f in predictions.files]
    # each epoch's row reproduces that epoch's logged metric: the mean of the folds' AUCs
    for epoch, record in zip(predictions.epochs, metrics["history"]):
        probs = predictions.at_epoch(epoch)
        per_fold = [binary_metrics(predictions.labels[predictions.folds == k], probs[predictions.folds == k])["auc"]
                    for k in (0, 1)]
        assert np.nanmean(per_fold) == pytest.approx(record["val_auc"], abs=1e-6)
    assert predictions.split_key == artifact.metadata["validation"]["split_key"]


def test_groups_come_with_the_predictions(two_fold):
    _, result = two_fold
    predictions = load_artifact(result.artifact).val_predictions
    # the tiny set has no groups.csv and no near-duplicates: every image its own group, no group in two folds
    assert len(set(predictions.groups.tolist())) == len(predictions.files)
    for group in set(predictions.groups.tolist()):
        assert len(set(predictions.folds[predictions.groups == group].tolist())) == 1


def test_the_predictions_file_is_in_the_manifest(two_fold, tmp_path):
    _, result = two_fold
    copy = shutil.copytree(result.artifact, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    assert VAL_PREDICTIONS in manifest["sha256"]
    predictions = load(copy / VAL_PREDICTIONS)
    changed = ValPredictions.build(predictions.files, predictions.labels, predictions.folds, predictions.groups,
                                   predictions.epochs, predictions.probs[::-1])
    save(changed, copy / VAL_PREDICTIONS)
    with pytest.raises(ArtifactError, match="val_predictions.npz: changed since"):
        load_artifact(copy)
    (copy / VAL_PREDICTIONS).unlink()
    with pytest.raises(ArtifactError, match="val_predictions.npz: missing, but listed"):
        load_artifact(copy)


def test_a_predictions_file_added_after_the_artifact_is_refused(trained, tmp_path):
    _, artifact_dir = trained
    copy = shutil.copytree(artifact_dir, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    predictions = load(copy / VAL_PREDICTIONS)
    del manifest["sha256"][VAL_PREDICTIONS]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    save(predictions, copy / VAL_PREDICTIONS)
    with pytest.raises(ArtifactError, match="val_predictions.npz: not in manifest.json"):
        load_artifact(copy)


def test_split_key_tells_the_same_split_from_another():
    files, folds = ["a", "b", "c", "d"], [0, 0, 1, 1]
    assert split_key(files, folds) == split_key(files[::-1], folds[::-1])  # order of saving does not matter
    assert split_key(files, folds) != split_key(files, [0, 1, 0, 1])
    assert split_key(files, folds) != split_key(["a", "b", "c", "e"], folds)


def test_a_damaged_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / VAL_PREDICTIONS
    bad.write_bytes(b"not a zip")
    with pytest.raises(PredictionsError, match=f"{VAL_PREDICTIONS}: not a readable"):
        load(bad)
    with pytest.raises(PredictionsError, match="probs of shape"):
        ValPredictions(files=np.array(["a", "b"]), labels=np.array([0, 1]), folds=np.array([0, 0]),
                       groups=np.array(["g", "h"]), epochs=np.array([1]), probs=np.zeros((1, 3)))
