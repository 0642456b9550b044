"""Augmentation toggles -> albumentations pipelines.

Random ops run on uint8 images on the CPU; normalisation (covid_sweep.model.preprocessing) runs on the
batch on the training device (a quarter of the host->device bytes, no per-sample float work on the CPU).
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from covid_sweep.core.config import TrialConfig


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


def apply(transform: A.Compose, image: np.ndarray) -> np.ndarray:
    return transform(image=np.ascontiguousarray(image))["image"]
