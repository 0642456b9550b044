"""What every model input gets, between a decoded uint8 image and the backbone, and its recorded form.

Training records the spec in each artifact's metadata.json; everything that predicts from an
artifact (predict, explain, the TorchScript wrapper, the model card) reads it back from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# ImageNet statistics: pretrained torchvision backbones expect them, from-scratch ones don't mind.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# the only values of the spec's fixed fields this code implements
_FIXED = {"color": "RGB", "resize_interpolation": "area", "layout": "NCHW"}


class PreprocessingError(ValueError):
    """A recorded preprocessing spec this version cannot reproduce."""


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


@dataclass(frozen=True)
class Preprocessing:
    input_size: int
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    @classmethod
    def from_spec(cls, spec: dict) -> "Preprocessing":
        """Read a recorded spec; refuse one whose steps differ from what to_model_input does."""
        wrong = {k: spec.get(k) for k, v in _FIXED.items() if spec.get(k) != v}
        height, width = spec["resize"]
        if wrong or height != width or abs(float(spec["scale"]) - 1 / 255) > 1e-12:
            raise PreprocessingError(f"preprocessing {spec}: only square RGB, INTER_AREA resize, 1/255 scale "
                                     f"and NCHW are implemented (differs: {wrong or 'resize/scale'})")
        return cls(input_size=int(height), mean=tuple(map(float, spec["mean"])), std=tuple(map(float, spec["std"])))


def to_model_input(batch_uint8: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """(N, H, W, 3) uint8 on any device -> normalised float (N, 3, H, W), channels_last memory."""
    return normalize(batch_uint8.permute(0, 3, 1, 2).float().div_(255.0), mean, std)


def normalize(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """float (N, 3, H, W) in [0, 1] -> normalised, channels_last memory (what training's device augmentation hands on)."""
    # non-blocking: a blocking host->GPU copy would wait for the GPU's queue every batch
    mean = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1).to(x.device, non_blocking=True)
    std = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1).to(x.device, non_blocking=True)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)
