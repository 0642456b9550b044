"""The augmentation toggles as batched torch ops on the training device, random parameters drawn per image.

training/augment.py (albumentations, per image on the CPU) is the reference; each op here reproduces its
albumentations counterpart with the same parameters (tests/test_device_augment.py) on float images in
[0, 1], without albumentations' rounding to uint8 between ops:

  random_resized_crop, hflip, rotate   one bilinear resampling of the batch (their affine maps composed)
  blur                                 box filter, reflect-101 border (cv2.blur)
  brightness_contrast, gamma, sepia    per-pixel arithmetic
  cutout                               rectangles set to 0 (CoarseDropout)

CLAHE has no good batched device version: it stays an albumentations op, applied by the batch loader on
the CPU before the device ops (albumentations applies it after the geometric ops and blur).

Parameters are drawn on the CPU from a seeded torch.Generator (reproducible whatever the device; a few
small tensors per batch), one set per image: torchvision.transforms.v2 on a batch tensor would draw one
set for the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from covid_sweep.core.config import TrialConfig

# ToSepia's matrix (albumentations), rows = output R, G, B
SEPIA = ((0.393, 0.769, 0.189), (0.349, 0.686, 0.168), (0.272, 0.534, 0.131))
MAX_HOLES = 4


@dataclass
class Params:
    """One row per image. An op that is off (toggle or coin flip) has identity values."""

    crop: torch.Tensor     # (N, 4) float: x0, y0, width, height in input pixels (the whole image when off)
    flip: torch.Tensor     # (N,) bool
    angle: torch.Tensor    # (N,) float degrees, albumentations' sign
    blur: torch.Tensor     # (N,) int box size; 1 = none
    alpha: torch.Tensor    # (N,) float contrast factor; 1 = none
    beta: torch.Tensor     # (N,) float brightness shift, in units of the maximum value; 0 = none
    gamma: torch.Tensor    # (N,) float exponent; 1 = none
    sepia: torch.Tensor    # (N,) bool
    holes: torch.Tensor    # (N, MAX_HOLES, 4) int x0, y0, x1, y1 (end exclusive); empty rectangles = none


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def _coin(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def sample_crop(n: int, height: int, width: int, enabled: bool, g: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop(scale=(0.7, 1.0), ratio=(0.9, 1.1)): area and log-aspect uniform, position uniform.
    albumentations redraws a box wider or taller than the image; here it is cut to the image's side."""
    full = torch.tensor([[0.0, 0.0, width, height]], dtype=torch.float64).repeat(n, 1)
    if not enabled:
        return full
    area = _uniform(n, 0.7, 1.0, g) * height * width
    aspect = torch.exp(_uniform(n, math.log(0.9), math.log(1.1), g))
    w = torch.sqrt(area * aspect).round().clamp(1, width)
    h = torch.sqrt(area / aspect).round().clamp(1, height)
    x0 = torch.floor(torch.rand(n, generator=g, dtype=torch.float64) * (width - w + 1))
    y0 = torch.floor(torch.rand(n, generator=g, dtype=torch.float64) * (height - h + 1))
    return torch.stack([x0, y0, w, h], dim=1)


def sample_holes(n: int, height: int, width: int, enabled: bool, g: torch.Generator) -> torch.Tensor:
    """CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15)), p=0.5."""
    holes = torch.zeros(n, MAX_HOLES, 4, dtype=torch.long)
    if not enabled:
        return holes
    on = _coin(n, 0.5, g)
    count = torch.randint(1, MAX_HOLES + 1, (n,), generator=g)
    hole_h = (height * _uniform(n * MAX_HOLES, 0.05, 0.15, g)).long().view(n, MAX_HOLES)
    hole_w = (width * _uniform(n * MAX_HOLES, 0.05, 0.15, g)).long().view(n, MAX_HOLES)
    y0 = (torch.rand(n, MAX_HOLES, generator=g, dtype=torch.float64) * (height - hole_h + 1)).long()
    x0 = (torch.rand(n, MAX_HOLES, generator=g, dtype=torch.float64) * (width - hole_w + 1)).long()
    used = on[:, None] & (torch.arange(MAX_HOLES)[None, :] < count[:, None])
    holes[..., 0], holes[..., 1] = x0, y0
    holes[..., 2], holes[..., 3] = x0 + hole_w * used, y0 + hole_h * used
    return holes


def sample_params(config: TrialConfig, n: int, height: int, width: int, g: torch.Generator) -> Params:
    """Per-image parameters for the toggles on in config, with the probabilities of training/augment.py."""
    angle = _uniform(n, -15.0, 15.0, g) * _coin(n, 0.5, g) if config.rotate else torch.zeros(n, dtype=torch.float64)
    blur = torch.ones(n, dtype=torch.long)
    if config.blur:
        blur = torch.where(_coin(n, 0.3, g), 3 + 2 * torch.randint(0, 2, (n,), generator=g), blur)
    alpha, beta = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    if config.brightness_contrast:
        on = _coin(n, 0.5, g)
        alpha = torch.where(on, 1.0 + _uniform(n, -0.15, 0.15, g), alpha)
        beta = torch.where(on, _uniform(n, -0.15, 0.15, g), beta)
    gamma = torch.ones(n, dtype=torch.float64)
    if config.gamma:
        gamma = torch.where(_coin(n, 0.5, g), _uniform(n, 80, 120, g) / 100, gamma)
    return Params(crop=sample_crop(n, height, width, config.random_resized_crop, g),
                  flip=_coin(n, 0.5, g) if config.hflip else torch.zeros(n, dtype=torch.bool),
                  angle=angle, blur=blur, alpha=alpha, beta=beta, gamma=gamma,
                  sepia=_coin(n, 0.3, g) if config.sepia else torch.zeros(n, dtype=torch.bool),
                  holes=sample_holes(n, height, width, config.cutout, g))


# ------------------------------------------------------------------------------------------------
# the ops: float (N, 3, H, W) in [0, 1] on any device, per-image parameters from Params


def _rotation_inverse(angle: torch.Tensor) -> torch.Tensor:
    """(N, 2, 2): output -> input coordinates of albumentations' rotation about the centre."""
    rad = torch.deg2rad(angle % 360)
    cos, sin = torch.cos(rad), torch.sin(rad)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def geometry(x: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, angle: torch.Tensor, size: int) -> torch.Tensor:
    """Crop (x0, y0, w, h) resized to size x size, then horizontal flip, then rotation, in one bilinear resampling.

    In grid_sample's normalised coordinates (align_corners=False: -1/+1 are the outer pixel edges, the
    same half-pixel centres as cv2.resize and cv2.warpAffine), each step is affine, so their composition is
    one grid. Only the images some step changes are resampled; a flip alone is an exact index reversal."""
    n, _, height, width = x.shape
    full = (crop == torch.tensor([0.0, 0.0, width, height], dtype=crop.dtype)).all(1)
    if (height, width) == (size, size) and full.all() and (angle == 0).all():
        if not flip.any():
            return x
        out = x.clone()
        idx = _on(flip, x.device)
        out[idx] = x.index_select(0, idx).flip(-1)
        return out
    if (height, width) != (size, size):
        moved = torch.ones(n, dtype=torch.bool)
    else:
        moved = ~full | flip | (angle != 0)
    out = x.clone() if not moved.all() else torch.empty(n, 3, size, size, device=x.device, dtype=x.dtype)
    idx = _on(moved, x.device)
    out[idx] = _resample(x.index_select(0, idx), crop[moved], flip[moved], angle[moved], size)
    return out


def _resample(x: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, angle: torch.Tensor, size: int) -> torch.Tensor:
    n, _, height, width = x.shape
    dtype = torch.float64
    rotate = _rotation_inverse(angle.to(dtype))
    mirror = torch.where(flip, -1.0, 1.0).to(dtype)
    x0, y0, w, h = crop.to(dtype).unbind(1)
    scale = torch.stack([w / width * mirror, h / height], 1)
    shift = torch.stack([(2 * x0 + w) / width - 1, (2 * y0 + h) / height - 1], 1)
    theta = torch.cat([scale[:, :, None] * rotate, shift[:, :, None]], 2)
    grid = F.affine_grid(_to(theta, x, theta.shape), [n, 3, size, size], align_corners=False)
    cropped = (crop[:, 2:] != torch.tensor([width, height], dtype=crop.dtype)).any(1) | (crop[:, :2] != 0).any(1)
    if not cropped.any():
        # the rotation's BORDER_CONSTANT 0 is grid_sample's zero padding, bilinear against the border alike
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # a crop's resize clamps at its border (cv2.resize); the rotation still fills with 0 outside its square:
    # that is the weight `inside`, bilinear against a zero border in the rotation's own frame
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if (angle == 0).all():
        return out
    rotated = torch.cat([rotate, torch.zeros(n, 2, 1, dtype=dtype)], 2)
    points = F.affine_grid(_to(rotated, x, rotated.shape), [n, 1, size, size], align_corners=False)
    pixels = (points + 1) * size / 2 - 0.5  # pixel-centre coordinates in the rotation's square
    outside = F.relu(-pixels) + F.relu(pixels - (size - 1))
    inside = (1 - outside).clamp(0, 1).prod(dim=-1)
    return out * inside[:, None]


def _on(mask: torch.Tensor, device: torch.device) -> torch.Tensor:
    # from CPU parameters: the device never syncs to learn which images an op touches
    return mask.nonzero().flatten().to(device, non_blocking=True)


def _to(values: torch.Tensor, like: torch.Tensor, shape=(-1, 1, 1, 1)) -> torch.Tensor:
    """CPU parameters onto like's device and dtype without waiting for the device: a blocking host->GPU copy
    synchronises the stream, and the CPU could no longer queue the next batch while the GPU works."""
    return values.to(like.dtype).view(shape).to(like.device, non_blocking=True)


def box_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """cv2.blur(ksize=(k, k)) per image, reflect-101 border; kernel 1 leaves the image as it is."""
    out = x.clone()
    for k in kernel.unique().tolist():
        if k <= 1:
            continue
        idx = _on(kernel == k, x.device)
        padded = F.pad(x.index_select(0, idx), (k // 2,) * 4, mode="reflect")
        out[idx] = F.avg_pool2d(padded, k, stride=1)
    return out


def brightness_contrast(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """RandomBrightnessContrast (brightness by max): x * alpha + beta, clipped."""
    return (x * _to(alpha, x) + _to(beta, x)).clamp_(0, 1)


def gamma(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """RandomGamma: x ** gamma."""
    return x.clamp(min=0).pow(_to(exponent, x))


def sepia(x: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """ToSepia: the fixed colour matrix on RGB, clipped."""
    if not bool(on.any()):
        return x
    idx = _on(on, x.device)
    matrix = _to(torch.tensor(SEPIA), x, (3, 3))
    out = x.clone()
    out[idx] = torch.einsum("oc,nchw->nohw", matrix, x.index_select(0, idx)).clamp_(0, 1)
    return out


def cutout(x: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """CoarseDropout with fill 0: every [x0, x1) x [y0, y1) rectangle of each image set to 0."""
    if not bool((holes[..., 2] > holes[..., 0]).any()):
        return x
    _, _, height, width = x.shape
    h = holes.to(x.device, non_blocking=True)[:, :, :, None, None]
    ys = torch.arange(height, device=x.device).view(1, 1, height, 1)
    xs = torch.arange(width, device=x.device).view(1, 1, 1, width)
    hit = (xs >= h[:, :, 0]) & (xs < h[:, :, 2]) & (ys >= h[:, :, 1]) & (ys < h[:, :, 3])
    return x.masked_fill(hit.any(dim=1, keepdim=True), 0.0)


def apply_params(x: torch.Tensor, p: Params, size: int) -> torch.Tensor:
    """The ops in training/augment.py's order (CLAHE, done on the CPU before, aside)."""
    x = geometry(x, p.crop, p.flip, p.angle, size)
    x = box_blur(x, p.blur)
    if (p.alpha != 1).any() or (p.beta != 0).any():
        x = brightness_contrast(x, p.alpha, p.beta)
    if (p.gamma != 1).any():
        x = gamma(x, p.gamma)
    x = sepia(x, p.sepia)
    return cutout(x, p.holes)


class DeviceAugment:
    """uint8 (N, H, W, 3) batch on the training device -> augmented float (N, 3, size, size) in [0, 1]."""

    def __init__(self, config: TrialConfig):
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)

    def __call__(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        n, height, width, _ = batch_uint8.shape
        x = batch_uint8.permute(0, 3, 1, 2).float().div_(255.0)
        params = sample_params(self.config, n, height, width, self.generator)
        return apply_params(x, params, self.config.input_size)
