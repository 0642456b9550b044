"""model_card.md: what the model is, how it was validated, and code that loads it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Sequence

from covid_sweep import __version__
from covid_sweep.core.split_record import PRE_GROUPED
from covid_sweep.inference.estimate import EstimateVsTest, card_section
from covid_sweep.inference.export.gradcam import gradcam_section
from covid_sweep.inference.export.torchscript import EXTRA_FILE, TORCHSCRIPT
from covid_sweep.inference.predict import Prediction
from covid_sweep.model.artifact import LoadedArtifact

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
        return f"{PRE_GROUPED}: {json.dumps(validation)}"
    return (f"{validation['split']}; {validation['n_val']} images, seed {validation['seed']}; groups: "
            f"{validation['groups']}; each fold's files: `model/metadata.json`")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


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
        *gradcam_section(explained),
    ]
    return "\n".join(lines)
