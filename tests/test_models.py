import pytest
import torch

from covid_sweep.core.backbones import BACKBONE_NAMES
from covid_sweep.model.networks import BACKBONES, ModelError, build_model

REQUIRED = ["vgg16", "vgg16_bn", "resnet18", "resnet50", "googlenet", "densenet121", "efficientnet_b0", "convnext_tiny"]


def test_required_backbones_are_offered():
    assert set(REQUIRED) <= set(BACKBONES)


def test_config_offers_exactly_the_backbones_models_can_build():
    # TrialConfig validates against the torch-free list; a name there without a builder fails only mid-sweep
    assert tuple(BACKBONES) == BACKBONE_NAMES


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_has_a_two_class_head(name):
    model = build_model(name, pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 2)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_a_from_scratch_model_is_built_where_it_will_train(name):
    # "meta" stands in for a GPU here: every weight, the replaced head's too, is created on the device asked for
    model = build_model(name, pretrained=False, device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_model_built_on_cuda_runs_there():
    model = build_model("resnet18", device="cuda").eval()
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64, device="cuda")).shape == (2, 2)


def test_unknown_backbone():
    with pytest.raises(ModelError, match="unknown backbone 'lenet'"):
        build_model("lenet")


@pytest.mark.timeout(120)  # a guard against a download that hangs instead of failing, not a timing check
def test_pretrained_without_network_fails_with_a_clear_message(tmp_path, monkeypatch):
    # an empty weight cache and a proxy that refuses connections: the real download path, offline
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with pytest.raises(ModelError) as err:
        build_model("resnet18", pretrained=True)
    message = str(err.value)
    assert "resnet18" in message and "download.pytorch.org" in message and "pretrained=false" in message
