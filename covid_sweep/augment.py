"""Augmentation toggles -> albumentations pipelines, and the normalisation every model input gets.

Random ops run on uint8 images on the CPU; normalisation runs on the batch on the training device
(a quarter of the host->device bytes, and no per-sample float work on the CPU).
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from covid_sweep.config import TrialConfig

# ImageNet statistics: pretrained torchvision backbones expect them, from-scratch ones don't mind.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _toggle_ops(config: TrialConfig) -> list[A.BasicTransform]:
    size = config.input_size
    ops: list[A.BasicTransform] = []
    if config.random_resized_crop:
        ops.append(A.RandomResizedCrop(size=(size, size), scale=(0.7, 1.0), ratio=(0.9, 1.1), p=1.0))
    if config.hflip:
        ops.append(A.HorizontalFlip(p=0.5))
    if config.rotate:
        ops.append(A.Rotate(limit=15, border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.5))
    if config.blur:
        ops.append(A.Blur(blur_limit=(3, 5), p=0.3))
    if config.clahe:
        ops.append(A.CLAHE(clip_limit=2.0, p=0.5))
    if config.brightness_contrast:
        ops.append(A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5))
    if config.gamma:
        ops.append(A.RandomGamma(gamma_limit=(80, 120), p=0.5))
    if config.sepia:
        ops.append(A.ToSepia(p=0.3))
    if config.cutout:
        # the seed's "Cutout" is CoarseDropout in albumentations 2
        ops.append(A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15),
                                   hole_width_range=(0.05, 0.15), fill=0, p=0.5))
    return ops


def train_transform(config: TrialConfig) -> A.Compose:
    size = config.input_size
    return A.Compose([*_toggle_ops(config), A.Resize(size, size)], seed=config.seed)


def eval_transform(config: TrialConfig) -> A.Compose:
    """No random op: the same image always gives the same input."""
    size = config.input_size
    return A.Compose([A.Resize(size, size)])


def preprocessing_spec(input_size: int) -> dict:
    """What a prediction must do to a raw image; stored with every model."""
    return {
        "color": "RGB",
        "resize": [input_size, input_size],
        "resize_interpolation": "area",
        "scale": 1 / 255,
        "mean": list(MEAN),
        "std": list(STD),
        "layout": "NCHW",
    }


def to_model_input(batch_uint8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 on any device -> normalised float (N, 3, H, W), channels_last memory."""
    mean = torch.tensor(MEAN, device=batch_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=batch_uint8.device).view(1, 3, 1, 1)
    x = batch_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def apply(transform: A.Compose, image: np.ndarray) -> np.ndarray:
    return transform(image=np.ascontiguousarray(image))["image"]
