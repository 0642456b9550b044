"""The exported model (safetensors + TorchScript) and its model card, and the export folder they live in.

The TorchScript file holds the whole prediction: uint8 RGB images (N, H, W, 3) at the model's input
size -> normalisation (as `preprocessing.to_model_input`) -> backbone -> softmax -> P(COVID) (N,). It loads
with plain `torch.jit.load`, without covid_sweep or torchvision.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from covid_sweep import __version__
from covid_sweep.core.errors import UserError
from covid_sweep.core.files import disk_errors, ensure_free_space, install_entries, publish_dir, staged_dir
from covid_sweep.data.layout import labels_for, load_split
from covid_sweep.inference.estimate import EstimateVsTest, card_section, estimate_vs_test
from covid_sweep.inference.explain import explain
from covid_sweep.inference.predict import Prediction, predict_images, predict_split, sample_ids
from covid_sweep.inference.submission import probabilities_text, submission_text
from covid_sweep.model.artifact import FILES, MANIFEST, LoadedArtifact
from covid_sweep.model.preprocessing import Preprocessing

TORCHSCRIPT = "model.torchscript.pt"
EXTRA_FILE = "covid_sweep.json"  # torch.jit.load(path, _extra_files={EXTRA_FILE: ""}) reads it back
PARITY_ATOL = 1e-5


class ExportError(UserError, RuntimeError):
    """The export folder cannot be written, or the exported model disagrees with the original."""


class ProbabilityModel(nn.Module):
    """uint8 (N, H, W, 3) RGB at the input size -> P(COVID) (N,).

    The normalisation is `preprocessing.to_model_input`'s, with mean/std as buffers so that `.to("cuda")`
    on the loaded TorchScript module moves them too. `export_torchscript` checks that the traced model
    gives the same probabilities as `inference.predict_probs` (which calls to_model_input itself).
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
    for name in (*FILES, MANIFEST):
        shutil.copyfile(artifact.path / name, target / name)
    export_torchscript(artifact, target / TORCHSCRIPT)
    return target


# ---- model card ------------------------------------------------------------------------------------

LOADING_CODE = '''\
import cv2
import numpy as np
import torch

MODEL = "model/{torchscript}"  # relative to this export folder
SIZE, THRESHOLD = {size}, {threshold!r}  # input size; decision threshold chosen on validation


def read_rgb(path):
    """Any PNG/JPEG (gray, RGB, RGBA, 16-bit) -> HxWx3 uint8 RGB, as in training."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)


model = torch.jit.load(MODEL, map_location="cpu").eval()


def predict(paths):
    """P(COVID) and COVID 0/1 for image files."""
    batch = np.stack([cv2.resize(read_rgb(p), (SIZE, SIZE), interpolation=cv2.INTER_AREA) for p in paths])
    with torch.no_grad():
        prob = model(torch.from_numpy(batch)).numpy()
    return prob, (prob >= THRESHOLD).astype(int)
'''


@dataclass(frozen=True)
class Provenance:
    """Where the exported model came from."""

    sweep_id: str
    trial_id: str
    source: str  # e.g. "embedded store /home/x/sweeps.db" or "W&B run entity/project/abc123"
    artifact: str  # the artifact directory or W&B artifact name
    metric: str | None = None
    goal: str | None = None
    value: float | None = None
    promotion: str | None = None  # what was recorded (alias, registry link)


def loading_code(artifact: LoadedArtifact) -> str:
    return LOADING_CODE.format(torchscript=TORCHSCRIPT, size=artifact.preprocessing.input_size, threshold=artifact.threshold)


def validation_summary(metadata: dict) -> str:
    """Split kind, groups and size; the per-fold file lists stay in metadata.json."""
    validation = metadata.get("validation", metadata.get("val_split", {}))
    if "split" not in validation:
        return f"ungrouped (recorded before grouped splits): {json.dumps(validation)}"
    return (f"{validation['split']}; {validation['n_val']} images, seed {validation['seed']}; groups: "
            f"{validation['groups']}; each fold's files: `model/metadata.json`")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _gradcam_section(explained: Sequence) -> list[str]:
    if not explained:
        return ["## Grad-CAM", "", "No overlays: the data has no `test_labels.csv` to tell right from wrong "
                "(`covid-sweep explain --labels FILE` makes them).", ""]
    lines = ["## Grad-CAM: most confident right and wrong test predictions", "",
             "Each image: the input slice, then the Grad-CAM heat map of the COVID logit over it.", ""]
    for item in explained:
        verdict = "right" if item.correct else "wrong"
        lines += [f"**{verdict}**, label {item.label}, P(COVID) = {item.prob:.3f}, `{item.file_name}`", "",
                  f"![{verdict} {item.file_name}](explain/{item.path.name})", ""]
    return lines


def model_card(artifact: LoadedArtifact, provenance: Provenance, prediction: Prediction,
               explained: Sequence = (), estimate: EstimateVsTest | None = None) -> str:
    config, metrics, metadata = artifact.config, artifact.metrics, artifact.metadata
    prep = artifact.preprocessing  # as recorded with the model
    size = prep.input_size
    best = metrics.get("best", {})
    val_rows = [(k, v) for k, v in best.items() if k.startswith("val_")]
    val_rows += [(k, v) for k, v in metrics.items() if k.endswith("_at_threshold")]
    scored = (f"{provenance.metric} ({provenance.goal}) = {_fmt(provenance.value)}"
              if provenance.metric else "-")
    tta = " + ".join(prediction.views)
    positives = int(prediction.labels.sum())
    members = f", ensemble of {config.folds} fold models" if getattr(config, "folds", 1) > 1 else ""
    lines = [
        f"# COVID-19 CT classifier: {config.backbone}{members}, trial {provenance.trial_id}",
        "",
        f"Exported {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by covid-sweep {__version__}: the best finished trial "
        f"of sweep `{provenance.sweep_id}`. Input: an axial chest-CT slice; output: P(COVID).",
        "",
        "## Provenance",
        "",
        "| | |",
        "|---|---|",
        f"| sweep | `{provenance.sweep_id}` |",
        f"| trial | `{provenance.trial_id}` |",
        f"| source | {provenance.source} |",
        f"| artifact | `{provenance.artifact}` |",
        f"| sweep metric | {scored} |",
        f"| promotion | {provenance.promotion or '-'} |",
        f"| training data fingerprint | `{metadata.get('data_fingerprint', '-')}` |",
        f"| training data | `{metadata.get('data_dir', config.data_dir)}` |",
        f"| validation | {validation_summary(metadata)} |",
        f"| class map | {json.dumps(metadata.get('class_map', {}))} |",
        "",
        "## Decision threshold",
        "",
        f"**{artifact.threshold:.6g}**: COVID = 1 when P(COVID) >= {artifact.threshold:.6g}. Chosen on validation "
        "(out-of-fold predictions for a K-fold ensemble), not on test data: of the cuts within one standard error "
        "of the best validation accuracy, the one closest to 0.5.",
        "",
        f"## Validation metrics (best epoch {metrics.get('best_epoch', '-')}, monitor {metrics.get('monitor', '-')})",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {_fmt(v)} |" for k, v in val_rows),
        "",
        *(card_section(estimate, prediction.views) if estimate else []),
        "## Configuration (TrialConfig)",
        "",
        "```json",
        config.to_json(),
        "```",
        "",
        "## Preprocessing",
        "",
        f"Decode to RGB uint8 (gray and RGBA converted, 16-bit rescaled min-max), resize to "
        f"{size}x{size} with `cv2.INTER_AREA`, stack as uint8 (N, H, W, 3). Scaling to "
        f"[0, 1] and normalisation (mean {list(prep.mean)}, std {list(prep.std)}) happen inside the exported model.",
        "",
        "## Files",
        "",
        "- `model/model.torchscript.pt`: TorchScript (traced, eval mode, CPU); uint8 (N, H, W, 3) -> P(COVID) (N,).",
        f"  Its extra file `{EXTRA_FILE}` holds input size, threshold and class map.",
        "- `model/model.safetensors` + `config.json`: weights and the TrialConfig that made them "
        "(`covid_sweep.model.artifact.load_artifact(\"model\")` reloads them).",
        "- `model/metrics.json`, `model/metadata.json`: validation history and threshold; preprocessing, data fingerprint.",
        f"- `submission.csv`: {len(prediction.ids)} test ids in `sample_submission.csv` order, COVID 0/1 "
        f"({positives} predicted COVID); views: {tta}.",
        "- `probabilities.csv`: `file_name,prob` with P(COVID) behind each label.",
        "",
        "## Load the TorchScript model (needs only torch, numpy, opencv)",
        "",
        "```python",
        loading_code(artifact).rstrip(),
        "```",
        "",
        f"`model.to(\"cuda\")` moves it to a GPU. This code predicts one view per image; `submission.csv` used "
        f"the mean P(COVID) over: {tta}.",
        "",
        *_gradcam_section(explained),
    ]
    return "\n".join(lines)


# ---- the export folder -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    prediction: Prediction
    files: tuple[str, ...]
    estimate: EstimateVsTest


def check_out_dir(out_dir: Path, force: bool) -> None:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"{out_dir}: not empty; pass --force to replace the exported files in it")


def install(staging: Path, out_dir: Path, force: bool) -> None:
    """Move the staged entries into out_dir. A new or empty out_dir is one rename. With force, each entry
    it already has is first moved aside and only deleted once every new entry is in place; on any error
    the old entries are put back. Entries of out_dir we do not write are left alone."""
    check_out_dir(out_dir, force)
    if not out_dir.exists() or not any(out_dir.iterdir()):
        if out_dir.exists():
            out_dir.rmdir()
        publish_dir(staging, out_dir)
        return
    install_entries(staging, out_dir, replace=True)


def _explain_if_labelled(artifact: LoadedArtifact, data_dir: Path, out: Path, n: int = 2) -> list:
    """Grad-CAM overlays for the card, where DATA/test_labels.csv tells right from wrong (never used to choose)."""
    labels_csv = Path(data_dir) / "test_labels.csv"
    if not labels_csv.is_file():
        return []
    split = load_split(Path(data_dir), "test")
    return explain(artifact, split, labels_for(split, labels_csv), out, n)


def export_bundle(artifact: LoadedArtifact, data_dir: Path, out_dir: Path, provenance: Provenance,
                  views: Sequence[str], force: bool = False,
                  before_install: Callable[[], None] | None = None) -> ExportResult:
    """OUT/submission.csv, probabilities.csv, model/, model_card.md; all built beside OUT, then moved in.

    `before_install` runs once everything is built and checked, just before OUT changes (promotion
    goes there: if it fails, OUT is untouched)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, force)
    expected = sample_ids(data_dir)
    prediction = predict_split(artifact, data_dir, "test", views)
    # validated before anything is written
    submission = submission_text(prediction.ids, prediction.labels.tolist(), expected)
    probabilities = probabilities_text(prediction.ids, prediction.probs)
    with staged_dir(out_dir) as staging:
        (staging / "submission.csv").write_text(submission)
        (staging / "probabilities.csv").write_text(probabilities)
        write_model_dir(artifact, staging / "model")
        explained = _explain_if_labelled(artifact, data_dir, staging / "explain")
        estimate = estimate_vs_test(artifact, data_dir, prediction)
        (staging / "model_card.md").write_text(model_card(artifact, provenance, prediction, explained, estimate))
        files = tuple(sorted(os.listdir(staging)))
        if before_install is not None:
            before_install()
        install(staging, out_dir, force)
    return ExportResult(out_dir=out_dir, prediction=prediction, files=files, estimate=estimate)
