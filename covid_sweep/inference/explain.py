"""Grad-CAM overlays for the most confident right and wrong predictions of a model artifact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch import nn

from covid_sweep.data.layout import CLASS_NAMES, Split, decode_resized
from covid_sweep.model.artifact import LoadedArtifact
from covid_sweep.model.ensemble_artifact import LoadedEnsemble
from covid_sweep.model.networks import Ensemble
from covid_sweep.model.preprocessing import Preprocessing, to_model_input
from covid_sweep.model.runtime import predict_probs


@dataclass
class Explained:
    file_name: str
    label: int
    prob: float
    correct: bool
    path: Path


def _last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return convs[-1]


def grad_cam(model: nn.Module, images_uint8: np.ndarray, preprocessing: Preprocessing | None = None) -> np.ndarray:
    """(N, H, W) heat maps in [0, 1] for the COVID class; an ensemble's maps are averaged over members."""
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    maps = np.mean([_grad_cam_one(m.eval(), images_uint8, preprocessing) for m in members], axis=0)
    return maps


def _grad_cam_one(model: nn.Module, images_uint8: np.ndarray, preprocessing: Preprocessing | None) -> np.ndarray:
    layer = _last_conv(model)
    saved: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        output.register_hook(lambda grad: saved.__setitem__("grad", grad))
        saved["act"] = output

    handle = layer.register_forward_hook(keep)
    try:
        device = next(model.parameters()).device
        norm = (preprocessing.mean, preprocessing.std) if preprocessing else ()
        x = to_model_input(torch.from_numpy(np.ascontiguousarray(images_uint8)).to(device), *norm).requires_grad_(True)
        logits = model(x)
        model.zero_grad(set_to_none=True)
        logits[:, 1].sum().backward()
    finally:
        handle.remove()
    weights = saved["grad"].mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * saved["act"]).sum(dim=1)).detach()
    size = images_uint8.shape[1:3]
    cam = nn.functional.interpolate(cam[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-8)[:, None, None]
    return (cam / peak).cpu().numpy()


def overlay(image_rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image_rgb, 1 - alpha, heat, alpha, 0)


def most_confident(probs: np.ndarray, labels: np.ndarray, threshold: float, n: int) -> list[int]:
    """Indices of the n most confident right and the n most confident wrong predictions."""
    preds = (probs >= threshold).astype(int)
    confidence = np.abs(probs - threshold)
    right = [i for i in np.argsort(-confidence) if preds[i] == labels[i]][:n]
    wrong = [i for i in np.argsort(-confidence) if preds[i] != labels[i]][:n]
    return right + wrong


def _single_view(artifact: LoadedArtifact, split: Split) -> tuple[np.ndarray, np.ndarray, Callable]:
    """(images at the model's size, P(COVID), chosen indices -> heat maps)."""
    preprocessing = artifact.preprocessing
    images = decode_resized(split, preprocessing.input_size)
    device = next(artifact.model.parameters()).device
    probs = predict_probs(artifact.model, images, artifact.config.batch_size, device, preprocessing.mean, preprocessing.std)
    return images, probs, lambda chosen: grad_cam(artifact.model, images[chosen], preprocessing)


def _ensemble_view(ensemble: LoadedEnsemble, split: Split) -> tuple[np.ndarray, np.ndarray, Callable]:
    """As _single_view, for a weighted ensemble: each member sees its own input size; its maps are resized to the
    largest and averaged with the members' weights, as their probabilities are."""
    size = max(ensemble.input_sizes)
    views = [(m.weight, _single_view(m.artifact, split)) for m in ensemble.members]
    probs = sum(weight * view[1].astype(np.float64) for weight, view in views)

    def cams(chosen: list[int]) -> np.ndarray:
        resized = [weight * np.stack([cv2.resize(cam, (size, size), interpolation=cv2.INTER_LINEAR)
                                      for cam in view[2](chosen)]) for weight, view in views]
        return np.clip(sum(resized), 0, 1)

    return decode_resized(split, size), probs, cams


def explain(artifact: LoadedArtifact | LoadedEnsemble, split: Split, labels: np.ndarray, out: Path,
            n: int = 4) -> list[Explained]:
    images, probs, heat_maps = (_ensemble_view(artifact, split) if isinstance(artifact, LoadedEnsemble)
                                else _single_view(artifact, split))
    chosen = most_confident(probs, labels, artifact.threshold, n)
    out.mkdir(parents=True, exist_ok=True)
    cams = heat_maps(chosen) if chosen else []
    written = []
    for index, cam in zip(chosen, cams):
        correct = int(probs[index] >= artifact.threshold) == labels[index]
        verdict = "right" if correct else "wrong"
        name = f"{verdict}-{CLASS_NAMES[labels[index]]}-p{probs[index]:.2f}-{Path(split.ids[index]).stem}.png"
        path = out / name
        cv2.imwrite(str(path), cv2.cvtColor(np.hstack([images[index], overlay(images[index], cam)]), cv2.COLOR_RGB2BGR))
        written.append(Explained(split.ids[index], int(labels[index]), float(probs[index]), bool(correct), path))
    return written
