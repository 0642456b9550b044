"""The TorchScript file holds the whole prediction: uint8 RGB images (N, H, W, 3) at the model's input
size -> normalisation (as `preprocessing.to_model_input`) -> backbone -> softmax -> P(COVID) (N,). It loads
with plain `torch.jit.load`, without covid_sweep or torchvision.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from covid_sweep import __version__
from covid_sweep.core.files import disk_errors, ensure_free_space
from covid_sweep.inference.export.errors import ExportError
from covid_sweep.inference.predict import predict_images
from covid_sweep.model.artifact import MANIFEST, LoadedArtifact, listed_files
from covid_sweep.model.preprocessing import Preprocessing

TORCHSCRIPT = "model.torchscript.pt"
EXTRA_FILE = "covid_sweep.json"  # torch.jit.load(path, _extra_files={EXTRA_FILE: ""}) reads it back
PARITY_ATOL = 1e-5


class ProbabilityModel(nn.Module):
    """uint8 (N, H, W, 3) RGB at the input size -> P(COVID) (N,).

    The normalisation is `preprocessing.to_model_input`'s, with mean/std as buffers so that `.to("cuda")`
    on the loaded TorchScript module moves them too. `export_torchscript` checks that the traced model
    gives the same probabilities as `runtime.predict_probs` (which calls to_model_input itself).
    """

    def __init__(self, model: nn.Module, preprocessing: Preprocessing):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div(255.0)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return torch.softmax(self.model(x).float(), dim=1)[:, 1]


def export_torchscript(artifact: LoadedArtifact, target: Path) -> Path:
    """Trace the eval-mode model (on the CPU) into `target` and check it against the eager prediction."""
    preprocessing = artifact.preprocessing
    size = preprocessing.input_size
    model = copy.deepcopy(artifact.model).cpu().eval()
    wrapper = ProbabilityModel(model, preprocessing).eval()
    rng = np.random.default_rng(0)
    example = torch.from_numpy(rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.x: "torch.jit.trace is deprecated"
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    # another batch size than the traced one: the batch dimension must stay free
    check = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    with torch.no_grad():
        got = traced(torch.from_numpy(check)).numpy()
    want = predict_images(model, check, batch_size=3, device=torch.device("cpu"), preprocessing=preprocessing)
    if got.shape != want.shape or not np.allclose(got, want, atol=PARITY_ATOL):
        raise ExportError(f"TorchScript export of {artifact.config.backbone} disagrees with the eager model "
                          f"(max |diff| {np.abs(got - want).max() if got.shape == want.shape else 'shape'})")
    meta = {"input": f"uint8 (N, {size}, {size}, 3) RGB", "output": "P(COVID) (N,)",
            "input_size": size, "threshold": artifact.threshold, "backbone": artifact.config.backbone,
            "class_map": artifact.metadata.get("class_map"), "covid_sweep_version": __version__}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        buffer = io.BytesIO()
        # into memory first: torch's C++ file writer aborts the whole process (exit 134) on a full disk
        torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(meta)})
    ensure_free_space(target, buffer.getbuffer().nbytes)
    with disk_errors(target), open(target, "wb") as fh:
        fh.write(buffer.getbuffer())
    return target


def write_model_dir(artifact: LoadedArtifact, target: Path) -> Path:
    """target/: model.safetensors, model.torchscript.pt, config.json, metrics.json, metadata.json."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (*listed_files(artifact.path), MANIFEST):
        shutil.copyfile(artifact.path / name, target / name)
    export_torchscript(artifact, target / TORCHSCRIPT)
    return target
