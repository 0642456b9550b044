"""Inference repeats the preprocessing the artifact recorded (metadata.json), not what the code would do today."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.torchscript import scripted_probs

from covid_sweep.core.config import build_config
from covid_sweep.data.layout import decode_resized, labels_for, load_split
from covid_sweep.inference.explain import explain
from covid_sweep.inference.export import export_torchscript, loading_code
from covid_sweep.inference.predict import predict_split
from covid_sweep.model.artifact import ArtifactError, load_artifact, write_artifact
from covid_sweep.model.networks import build_model
from covid_sweep.model.preprocessing import MEAN, STD, preprocessing_spec
from covid_sweep.model.runtime import predict_probs

CPU = torch.device("cpu")
# a spec unlike today's defaults: other mean/std. Its size must be config.input_size (40): an artifact
# whose config and metadata disagree on the size is refused as tampered (tests/test_faults.py)
SPEC = {**preprocessing_spec(40), "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.25]}


def _artifact(tmp_path, spec):
    torch.manual_seed(0)
    config = build_config({"backbone": "resnet18", "input_size": 40, "device": "cpu"})
    path = write_artifact(tmp_path / "model", build_model("resnet18").state_dict(), config, {"threshold": 0.5},
                          {"trial": "t", "preprocessing": spec})
    return load_artifact(path)


def test_predict_and_explain_use_the_recorded_size_and_normalisation(tiny_data, tmp_path):
    artifact = _artifact(tmp_path, SPEC)
    split = load_split(tiny_data, "test")
    images = decode_resized(split, 40)
    recorded = predict_probs(artifact.model, images, 8, CPU, SPEC["mean"], SPEC["std"])
    today = predict_probs(artifact.model, decode_resized(split, 32), 8, CPU, MEAN, STD)
    assert not np.allclose(recorded, today, atol=1e-4)  # the two recipes really differ for this model
    assert np.allclose(predict_split(artifact, tiny_data).probs, recorded, atol=1e-6)
    explained = explain(artifact, split, labels_for(split, tiny_data / "test_labels.csv"), tmp_path / "cams", 1)
    assert explained
    for item in explained:
        assert item.prob == pytest.approx(float(recorded[split.ids.index(item.file_name)]), abs=1e-6)


def test_torchscript_and_loading_code_use_the_recorded_preprocessing(tmp_path):
    artifact = _artifact(tmp_path, SPEC)
    target = export_torchscript(artifact, tmp_path / "model.pt")
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    got = scripted_probs(target, images)
    assert np.allclose(got, predict_probs(artifact.model, images, 3, CPU, SPEC["mean"], SPEC["std"]), atol=1e-5)
    assert "SIZE, THRESHOLD = 40," in loading_code(artifact)


def test_a_spec_this_version_cannot_reproduce_is_refused_at_load(tmp_path):
    with pytest.raises(ArtifactError, match="metadata.json.*resize_interpolation"):
        _artifact(tmp_path, {**SPEC, "resize_interpolation": "bilinear"})
