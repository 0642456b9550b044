"""Device, precision and batched probabilities: what training's validation and every prediction share.

Prediction, explanation and promotion import this, never the training loop.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from covid_sweep.core.errors import UserError
from covid_sweep.model.preprocessing import MEAN, STD, to_model_input


class DeviceError(UserError, RuntimeError):
    """The device asked for is not available on this machine."""


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """auto (or None) -> cuda when available, else cpu; an explicit cuda without CUDA is an error."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device={name} was asked for but CUDA is not available")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls/convs run in hardware on this device.

    Without it (a CPU lacking AVX512-BF16/AMX) autocast emulates bf16 and is slower than fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def bf16_autocast(device: torch.device, enabled: bool = True):
    # bf16 keeps fp32's exponent range, so unlike fp16 it needs no loss scaling
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and native_bf16(device))


# a fit keeps its folds' images on the GPU, validation first, then training (with device augmentation), within
# this many bytes for all folds (1 GiB: ~7,000 images at 224 px); what does not fit is sent batch by batch
RESIDENT_BYTES = 1 << 30


def resident_images(images: np.ndarray, device: torch.device, limit: int = RESIDENT_BYTES) -> np.ndarray | torch.Tensor:
    """uint8 images a fit uses every epoch (validation, or training batches with device augmentation): on the
    device once when they fit `limit`, else as they are."""
    if device.type == "cpu" or images.nbytes > limit:
        return np.ascontiguousarray(images)
    return torch.from_numpy(np.require(images, requirements=["W", "C"])).to(device)  # torch wraps no read-only array


def _batch_on(images: np.ndarray | torch.Tensor, start: int, stop: int, device: torch.device) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images[start:stop].to(device)
    # np.require copies only a read-only (memory-mapped) slice, which torch will not wrap
    return torch.from_numpy(np.require(images[start:stop], requirements=["W", "C"])).to(device)


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int, device: torch.device,
                  mean=MEAN, std=STD) -> np.ndarray:
    """P(COVID) for uint8 images (N, H, W, 3) already at the model's input size, in fp32 on every device:
    validation, predict and the exported TorchScript model all give the same numbers. images: a numpy
    array, or a tensor already on the device (resident_images)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        logits = model(to_model_input(_batch_on(images, start, start + batch_size, device), mean, std))
        # kept on the device: a .cpu() per batch would make the host wait for the GPU before launching the next
        out.append(torch.softmax(logits.float(), dim=1)[:, 1])
    return torch.cat(out).cpu().numpy() if out else np.zeros(0, dtype=np.float32)
