"""Shuffled batches of the decoded uint8 cache for device-side augmentation: one gather per batch.

With the random ops on the device, a batch needs no per-image Python on the CPU: it is one fancy index
into the (memory-mapped) cache, or, when the images were put on the GPU once for the fit (runtime.resident_images),
one index on the GPU: no gather, pinning or copy per batch on the host. The only per-image CPU op left is CLAHE
(no good batched version), done with albumentations on the images whose coin says so.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch

from covid_sweep.core.config import TrialConfig


class CachedBatches:
    """Iterable of (uint8 (B, H, W, 3), int64 labels (B,)) in a fresh seeded order every epoch, like
    DataLoader(shuffle=True, drop_last=...) over the same arrays; len() is the number of batches.

    images: a numpy array (batches are gathered on the CPU), or a tensor already on the device, whose batches
    are gathered there, with the same images in the same order for the same seed."""

    def __init__(self, config: TrialConfig, images: np.ndarray | torch.Tensor, labels: np.ndarray,
                 pin_memory: bool = False):
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.batch_size = min(config.batch_size, len(self.labels))
        # a fixed batch shape lets cudnn tune once; the dropped tail is reshuffled into later epochs
        self.drop_last = len(self.labels) > config.batch_size
        self.pin_memory = pin_memory
        self.generator = torch.Generator().manual_seed(config.seed)
        self.clahe = A.CLAHE(clip_limit=2.0, p=1.0) if config.clahe else None
        self.rng = np.random.default_rng(config.seed)
        self.resident = isinstance(images, torch.Tensor)
        if self.resident and self.clahe is not None:
            raise ValueError("CLAHE runs per image on the CPU: pass the images as a numpy array")
        self.device_labels = torch.from_numpy(self.labels).to(images.device) if self.resident else None

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.labels), generator=self.generator).numpy()
        # sorted: the memory-mapped rows are read in file order; the order inside a batch does not matter
        picks = [np.sort(order[b * self.batch_size:(b + 1) * self.batch_size]) for b in range(len(self))]
        if self.resident:
            yield from self._on_device(picks)
            return
        for idx in picks:
            batch = self.images[idx]  # a copy, never the read-only cache
            if self.clahe is not None:
                self._clahe(batch)
            images = torch.from_numpy(batch)
            yield (images.pin_memory() if self.pin_memory else images), torch.from_numpy(self.labels[idx])

    def _on_device(self, picks: list[np.ndarray]):
        # the epoch's indices go to the device in one copy, not one per batch
        on_device = torch.from_numpy(np.concatenate(picks)).to(self.images.device)
        for idx in on_device.split(self.batch_size):
            yield self.images.index_select(0, idx), self.device_labels.index_select(0, idx)

    def _clahe(self, batch: np.ndarray) -> None:
        """CLAHE(clip_limit=2.0) on each image with probability 0.5, in place, as training/augment.py."""
        for i in np.flatnonzero(self.rng.random(len(batch)) < 0.5):
            batch[i] = self.clahe(image=batch[i])["image"]
