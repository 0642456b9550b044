"""The TorchScript file holds the whole prediction: uint8 RGB images (N, H, W, 3) at the model's input
size -> normalisation (as `preprocessing.to_model_input`) -> backbone -> softmax -> P(COVID) (N,). It loads
with plain `torch.jit.load`, without covid_sweep or torchvision.

A weighted ensemble of trials is one scripted module too. Its members may differ in input size, and each
must see the images resized from the originals as in its training (a resize of a resize is another image),
so it takes a list: one uint8 batch per input size, ascending (its extra file lists the sizes).
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import warnings
from pathlib import Path
from typing import List

import numpy as np
import torch
from torch import nn

from covid_sweep import __version__
from covid_sweep.core.files import disk_errors, ensure_free_space
from covid_sweep.inference.export.errors import ExportError
from covid_sweep.inference.predict import predict_images
from covid_sweep.model.artifact import MANIFEST, LoadedArtifact, listed_files
from covid_sweep.model.ensemble_artifact import LoadedEnsemble
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


class WeightedProbabilities(nn.Module):
    """[uint8 (N, S, S, 3) for each input size S, ascending] -> the weighted mean of the members' P(COVID)."""

    def __init__(self, members: list[nn.Module], slots: list[int], weights: list[float]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("slots", torch.tensor(slots, dtype=torch.int64))  # member i reads images[slots[i]]
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def forward(self, images: List[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(images[0].shape[0], device=images[0].device)
        for i, member in enumerate(self.members):
            total = total + self.weights[i] * member(images[int(self.slots[i])])
        return total


def _trace(model: nn.Module, preprocessing: Preprocessing, rng: np.random.Generator) -> torch.jit.ScriptModule:
    size = preprocessing.input_size
    wrapper = ProbabilityModel(copy.deepcopy(model).cpu().eval(), preprocessing).eval()
    example = torch.from_numpy(rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.x: "torch.jit.trace is deprecated"
        return torch.jit.trace(wrapper, example, check_trace=False)


def _scripted(artifact: LoadedArtifact | LoadedEnsemble, rng: np.random.Generator):
    """The scripted module, the eager prediction it must reproduce (images -> probabilities), its example
    input maker, and the metadata its extra file carries."""
    if isinstance(artifact, LoadedEnsemble):
        sizes = artifact.input_sizes
        members = [_trace(m.artifact.model, m.artifact.preprocessing, rng) for m in artifact.members]
        slots = [sizes.index(m.artifact.preprocessing.input_size) for m in artifact.members]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.script(WeightedProbabilities(members, slots, [m.weight for m in artifact.members]))

        def eager(batches: list[np.ndarray]) -> np.ndarray:
            return sum(m.weight * predict_images(copy.deepcopy(m.artifact.model).cpu(), batches[slot], 3,
                                                 torch.device("cpu"), preprocessing=m.artifact.preprocessing)
                       for m, slot in zip(artifact.members, slots))

        meta = {"input": "a list of uint8 (N, S, S, 3) RGB batches, the same N images, one per S in input_sizes",
                "input_sizes": sizes, "members": [{"trial": m.trial, "weight": m.weight,
                                                   "backbone": m.artifact.config.backbone} for m in artifact.members]}
        return module, eager, sizes, meta
    size = artifact.preprocessing.input_size
    traced = _trace(artifact.model, artifact.preprocessing, rng)

    def eager_single(batches: list[np.ndarray]) -> np.ndarray:
        return predict_images(copy.deepcopy(artifact.model).cpu(), batches[0], batch_size=3,
                              device=torch.device("cpu"), preprocessing=artifact.preprocessing)

    meta = {"input": f"uint8 (N, {size}, {size}, 3) RGB", "input_size": size, "backbone": artifact.config.backbone}
    return traced, eager_single, [size], meta


def export_torchscript(artifact: LoadedArtifact | LoadedEnsemble, target: Path) -> Path:
    """Script the eval-mode model (on the CPU) into `target` and check it against the eager prediction."""
    rng = np.random.default_rng(0)
    module, eager, sizes, meta = _scripted(artifact, rng)
    # another batch size than the traced one: the batch dimension must stay free
    check = [rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8) for size in sizes]
    inputs = [torch.from_numpy(batch) for batch in check]
    with torch.no_grad():
        got = (module(inputs) if isinstance(artifact, LoadedEnsemble) else module(inputs[0])).numpy()
    want = eager(check)
    if got.shape != want.shape or not np.allclose(got, want, atol=PARITY_ATOL):
        raise ExportError(f"TorchScript export of {target.name} disagrees with the eager model "
                          f"(max |diff| {np.abs(got - want).max() if got.shape == want.shape else 'shape'})")
    meta = {**meta, "output": "P(COVID) (N,)", "threshold": artifact.threshold,
            "class_map": artifact.metadata.get("class_map"), "covid_sweep_version": __version__}
    traced = module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        buffer = io.BytesIO()
        # into memory first: torch's C++ file writer aborts the whole process (exit 134) on a full disk
        torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(meta)})
    ensure_free_space(target, buffer.getbuffer().nbytes)
    with disk_errors(target), open(target, "wb") as fh:
        fh.write(buffer.getbuffer())
    return target


def write_model_dir(artifact: LoadedArtifact | LoadedEnsemble, target: Path) -> Path:
    """target/: the artifact's files as its manifest lists them (an ensemble: the whole folder, members
    included), and model.torchscript.pt."""
    if isinstance(artifact, LoadedEnsemble):
        shutil.copytree(artifact.path, target, dirs_exist_ok=True)
    else:
        target.mkdir(parents=True, exist_ok=True)
        for name in (*listed_files(artifact.path), MANIFEST):
            shutil.copyfile(artifact.path / name, target / name)
    export_torchscript(artifact, target / TORCHSCRIPT)
    return target
