"""Backbone name -> torchvision model with a 2-class head."""

from __future__ import annotations

import socket
import urllib.error
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm

from covid_sweep.core.errors import UserError

NUM_CLASSES = 2


class ModelError(UserError, RuntimeError):
    """A backbone could not be built (unknown name, pretrained weights unreachable)."""


def _replace_last_linear(seq: nn.Sequential) -> None:
    index = max(i for i, layer in enumerate(seq) if isinstance(layer, nn.Linear))
    seq[index] = nn.Linear(seq[index].in_features, NUM_CLASSES)


def _head_fc(model: nn.Module) -> None:
    model.fc = nn.Linear(model.fc.in_features, NUM_CLASSES)


def _head_classifier_seq(model: nn.Module) -> None:
    _replace_last_linear(model.classifier)


def _head_classifier_linear(model: nn.Module) -> None:
    model.classifier = nn.Linear(model.classifier.in_features, NUM_CLASSES)


# name -> how to put a 2-class head on it, for every name of backbones.BACKBONE_NAMES
BACKBONES: dict[str, Callable[[nn.Module], None]] = {
    "vgg11_bn": _head_classifier_seq,
    "vgg16": _head_classifier_seq,
    "vgg16_bn": _head_classifier_seq,
    "resnet18": _head_fc,
    "resnet34": _head_fc,
    "resnet50": _head_fc,
    "googlenet": _head_fc,
    "densenet121": _head_classifier_linear,
    "efficientnet_b0": _head_classifier_seq,
    "convnext_tiny": _head_classifier_seq,
    "mobilenet_v3_small": _head_classifier_seq,
    "mobilenet_v3_large": _head_classifier_seq,
}


def _weights_for(name: str):
    return tvm.get_model_weights(name).DEFAULT


def _download_timeout(seconds: float):
    """Fail fast without network instead of hanging in torch.hub's urlopen."""

    class _Timeout:
        def __enter__(self):
            self.old = socket.getdefaulttimeout()
            socket.setdefaulttimeout(seconds)

        def __exit__(self, *exc):
            socket.setdefaulttimeout(self.old)

    return _Timeout()


def _load_pretrained(name: str) -> nn.Module:
    weights = _weights_for(name)
    kwargs = {"aux_logits": False} if name == "googlenet" else {}
    try:
        with _download_timeout(30):
            return tvm.get_model(name, weights=weights, **kwargs)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise ModelError(
            f"backbone {name}: could not download ImageNet weights {weights} from {weights.url} ({err}). "
            "Use pretrained=false, or fetch them on a machine with internet with "
            "`covid-sweep prefetch-weights --backbone " + name + "` and share TORCH_HOME."
        ) from None


def weights_file(name: str) -> Path:
    """Where torch.hub keeps backbone `name`'s ImageNet weights once downloaded (TORCH_HOME/hub/checkpoints)."""
    url = _weights_for(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def missing_weights(names: Iterable[str]) -> list[str]:
    """The backbones among `names` whose ImageNet weights are not on this box (a download would be needed)."""
    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        raise ModelError(f"unknown backbone {unknown[0]!r}; choose one of {', '.join(BACKBONES)}")
    return [name for name in dict.fromkeys(names) if not weights_file(name).is_file()]


def build_model(name: str, pretrained: bool = False, device: torch.device | str | None = None) -> nn.Module:
    """device: where a from-scratch model is built, i.e. where its random init runs (vgg16's 134M weights take
    ~1 s on one CPU core, milliseconds on a GPU). ImageNet weights are loaded on the CPU, as torch.hub gives them."""
    if name not in BACKBONES:
        raise ModelError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if pretrained:
        model = _load_pretrained(name)
        BACKBONES[name](model)
        return model
    # googlenet's aux heads only help ImageNet-scale training and change the forward output type
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    with torch.device(device or "cpu"):
        model = tvm.get_model(name, weights=None, **kwargs)
        BACKBONES[name](model)
    return model


class Ensemble(nn.Module):
    """K fold models predicting the mean probability.

    It returns log(mean softmax) as logits, so softmax of its output is exactly the mean probability
    and everything that consumes a single model's logits consumes an ensemble unchanged.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members]).mean(dim=0)
        return torch.log(probs.clamp_min(1e-12))


def build_for_folds(name: str, pretrained: bool, folds: int) -> nn.Module:
    """One model, or an Ensemble of `folds` models for a K-fold trial."""
    if folds <= 1:
        return build_model(name, pretrained)
    return Ensemble([build_model(name, pretrained) for _ in range(folds)])


def prefetch_weights(names: Iterable[str]) -> list[str]:
    """Download torchvision ImageNet weights into TORCH_HOME so later trials never download."""
    fetched = []
    for name in names:
        if name not in BACKBONES:
            raise ModelError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
        _load_pretrained(name)
        fetched.append(name)
    return fetched
