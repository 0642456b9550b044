"""sweeps/transfer.yaml: ImageNet weights, checked before the first trial. No download is possible here, so a
small real state dict is put where torch.hub keeps downloads and goes through the real loading code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from covid_sweep.cli import main
from covid_sweep.core.config import build_config
from covid_sweep.model.networks import build_model, missing_weights, weights_file
from covid_sweep.sweep.control.spec import load_spec, pretrained_backbones
from covid_sweep.sweep.control.weights import MissingWeightsError, check_weights
from covid_sweep.training.trial import run_trial

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _fetched(name: str) -> dict:
    """What prefetch-weights leaves behind: the ImageNet state dict under its download name (here random)."""
    from torchvision.models import get_model

    torch.manual_seed(0)
    state = get_model(name, weights=None).state_dict()  # ImageNet's shape: a 1000-class head
    path = weights_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_only_sweeps_that_can_train_from_imagenet_weights_need_them():
    transfer = load_spec(SWEEPS / "transfer.yaml")
    assert transfer["parameters"]["pretrained"]["value"] is True
    assert pretrained_backbones(transfer) == transfer["parameters"]["backbone"]["values"]
    assert pretrained_backbones(load_spec(SWEEPS / "smoke.yaml")) == []
    assert pretrained_backbones({"parameters": {"pretrained": {"values": [False, True]}}}) == ["resnet18"]


def test_a_sweep_without_its_weights_stops_before_the_first_trial(torch_home, tiny_data, tmp_path):
    home = tmp_path / "home"
    done = CliRunner().invoke(main, ["sweep", str(SWEEPS / "transfer.yaml"), "--data", str(tiny_data),
                                     "--home", str(home)])
    assert done.exit_code != 0 and "Traceback" not in done.output
    message = " ".join(done.output.split())
    assert "ImageNet weights for resnet18, resnet50" in message and "covid-sweep prefetch-weights --backbone" in message
    assert not (home / "logs").exists()  # no trial was launched


def test_validate_says_which_weights_are_missing(torch_home):
    done = CliRunner().invoke(main, ["validate", str(SWEEPS / "transfer.yaml")])
    assert done.exit_code == 0 and "valid bayes sweep" in done.output and "prefetch-weights" in done.output


def test_fetched_weights_go_through_the_real_loading_code(torch_home, tiny_data, tmp_path):
    name = "mobilenet_v3_small"
    assert missing_weights([name]) == [name]
    state = _fetched(name)
    assert missing_weights([name]) == []
    config = {"parameters": {"pretrained": {"value": True}, "backbone": {"values": [name]}}}
    assert check_weights(config, "t.yaml") == [name]
    with pytest.raises(MissingWeightsError, match="resnet18"):
        check_weights({"parameters": {"pretrained": {"value": True}, "backbone": {"values": [name, "resnet18"]}}}, "t")
    model = build_model(name, pretrained=True)
    loaded = model.state_dict()
    body = [k for k in state if not k.startswith("classifier.3")]  # the 1000-class head is replaced by ours
    assert all(torch.equal(loaded[k], state[k]) for k in body) and loaded["classifier.3.weight"].shape[0] == 2
    # and a pretrained trial starts from them
    trial = build_config({"backbone": name, "pretrained": True, "input_size": 32, "epochs": 1, "batch_size": 8,
                          "val_fraction": 0.25, "amp": False, "device": "cpu", "data_dir": str(tiny_data)})
    assert run_trial(trial, tmp_path / "artifact", progress=False).state == "finished"
