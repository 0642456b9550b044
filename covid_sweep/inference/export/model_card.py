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
from covid_sweep.model.ensemble_artifact import LoadedEnsemble

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

# an ensemble's members may differ in input size: its module takes one batch per size, each resized from the originals
ENSEMBLE_PREDICT = '''\
def predict(paths):
    """P(COVID) and COVID 0/1 for image files."""
    images = [read_rgb(p) for p in paths]
    batches = [torch.from_numpy(np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
                                          for image in images])) for size in SIZES]
    with torch.no_grad():
        prob = model(batches).numpy()
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
    selection: dict | None = None  # the selection-corrected estimate (SweepEstimate.as_dict), where computed
    choice: str | None = None  # why this model (a single trial or the ensemble) was promoted


def loading_code(artifact: LoadedArtifact | LoadedEnsemble) -> str:
    if isinstance(artifact, LoadedEnsemble):
        code = LOADING_CODE.format(torchscript=TORCHSCRIPT, size=0, threshold=artifact.threshold)
        code = code.replace("SIZE, THRESHOLD = 0,", f"SIZES, THRESHOLD = {artifact.input_sizes},").replace(
            "# input size; decision", "# the members' input sizes; decision")
        return code[:code.index("def predict(paths):")] + ENSEMBLE_PREDICT
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


def _title(artifact: LoadedArtifact | LoadedEnsemble, provenance: Provenance) -> str:
    if isinstance(artifact, LoadedEnsemble):
        return f"# COVID-19 CT classifier: weighted ensemble of {len(artifact.members)} trials of sweep {provenance.sweep_id}"
    config = artifact.config
    members = f", ensemble of {config.folds} fold models" if getattr(config, "folds", 1) > 1 else ""
    return f"# COVID-19 CT classifier: {config.backbone}{members}, trial {provenance.trial_id}"


def _what(artifact: LoadedArtifact | LoadedEnsemble) -> str:
    if isinstance(artifact, LoadedEnsemble):
        return "the weighted ensemble of the sweep's trials chosen by greedy selection on validation"
    return "the best finished trial"


def selection_section(selection: dict | None, choice: str | None, test: dict | None) -> list[str]:
    """The selection-corrected estimate beside the value the sweep reported, and the test score (not used)."""
    lines = ["## What the choice is worth: the selection-corrected estimate", ""]
    if choice:
        lines += [choice, ""]
    if not selection:
        return lines + ["Not computed for this export.", ""]
    if "unavailable" in selection:
        return lines + [f"Not available: {selection['unavailable']}.", ""]
    lines += ["The value the sweep reports is the best of many comparisons on one validation set, so it is "
              "optimistic. The estimate replays the sweep's whole choice (trial and epoch; for an ensemble, the "
              "greedy selection too) on bootstrap samples of the validation groups and scores it on the groups "
              "left out (BBC-CV, Tsamardinos et al. 2018).", "",
              "| model | sweep metric on validation | selection-corrected (mean) | 95 % interval | samples |",
              "|---|---|---|---|---|"]
    for label, key in (("best single trial", "single"), ("greedy ensemble", "ensemble")):
        row = selection.get(key)
        if row:
            lines.append(f"| {label} | {row['selected_value']:.3f} | {row['estimate']:.3f} | "
                         f"[{row['low']:.3f}, {row['high']:.3f}] | {row['samples']} |")
    single = selection["single"]
    lines += ["", f"Compared: {len(selection['compared'])} finished trial(s) on {single['images']} validation images "
                  f"in {single['groups']} groups (metric {single['metric']})."]
    if selection.get("left_out"):
        lines.append("Left out (not comparable): " + "; ".join(f"`{k}`: {v}" for k, v in selection["left_out"].items()))
    if test is not None and single["metric"] == "val_auc" and test.get("auc") is not None:
        key = "ensemble" if selection.get("promoted_ensemble") else "single"
        row = selection.get(key) or single
        inside = row["low"] <= test["auc"] <= row["high"]
        lines += ["", f"Test AUC {test['auc']:.3f} (`test_labels.csv`, scored once after the choice) lies "
                      f"{'inside' if inside else 'outside'} the interval; its gap to the estimate is "
                      f"{row['estimate'] - test['auc']:+.3f}."]
    return lines + [""]


def _configuration(artifact: LoadedArtifact | LoadedEnsemble) -> list[str]:
    if not isinstance(artifact, LoadedEnsemble):
        return ["## Configuration (TrialConfig)", "", "```json", artifact.config.to_json(), "```", ""]
    lines = ["## Members", "", "| trial | weight | backbone | input size | folds | its validation value |",
             "|---|---|---|---|---|---|"]
    for m in artifact.members:
        best = m.artifact.metrics.get("best", {})
        value = best.get(m.artifact.metrics.get("monitor", ""), "-")
        lines.append(f"| `{m.trial}` | {m.weight:.3f} | {m.artifact.config.backbone} | "
                     f"{m.artifact.preprocessing.input_size} | {m.artifact.config.folds} | {_fmt(value)} |")
    lines += ["", "Each member's TrialConfig is in `model/members/TRIAL/config.json`.", ""]
    return lines


def _preprocessing(artifact: LoadedArtifact | LoadedEnsemble) -> list[str]:
    if isinstance(artifact, LoadedEnsemble):
        sizes = ", ".join(f"{m.trial}: {m.artifact.preprocessing.input_size}x{m.artifact.preprocessing.input_size}"
                          for m in artifact.members)
        return ["## Preprocessing", "", "Decode to RGB uint8 (gray and RGBA converted, 16-bit rescaled min-max), then "
                f"for each member resize to its own input size with `cv2.INTER_AREA` ({sizes}); scaling and each "
                "member's normalisation happen inside the exported model.", ""]
    prep = artifact.preprocessing
    size = prep.input_size
    return ["## Preprocessing", "",
            f"Decode to RGB uint8 (gray and RGBA converted, 16-bit rescaled min-max), resize to "
            f"{size}x{size} with `cv2.INTER_AREA`, stack as uint8 (N, H, W, 3). Scaling to "
            f"[0, 1] and normalisation (mean {list(prep.mean)}, std {list(prep.std)}) happen inside the exported model.",
            ""]


def _model_files(artifact: LoadedArtifact | LoadedEnsemble) -> list[str]:
    if isinstance(artifact, LoadedEnsemble):
        return [f"- `model/model.torchscript.pt`: TorchScript (scripted, eval mode, CPU); a list of uint8 "
                f"(N, S, S, 3) batches, one per input size S in {artifact.input_sizes} -> P(COVID) (N,), the "
                f"weighted mean of the members'. Its extra file `{EXTRA_FILE}` holds sizes, members, threshold, "
                "class map.",
                "- `model/ensemble.json`: members and weights; `model/members/TRIAL/`: each member's own artifact "
                "(`covid_sweep.model.artifact.load_artifact(\"model\")` reloads the whole ensemble).",
                "- `model/metrics.json`, `model/metadata.json`: the ensemble's validation values and threshold; "
                "data fingerprint, the shared validation split, the selection-corrected estimate."]
    return ["- `model/model.torchscript.pt`: TorchScript (traced, eval mode, CPU); uint8 (N, H, W, 3) -> P(COVID) (N,).",
            f"  Its extra file `{EXTRA_FILE}` holds input size, threshold and class map.",
            "- `model/model.safetensors` + `config.json`: weights and the TrialConfig that made them "
            "(`covid_sweep.model.artifact.load_artifact(\"model\")` reloads them).",
            "- `model/metrics.json`, `model/metadata.json`: validation history and threshold; preprocessing, data "
            "fingerprint."]


def model_card(artifact: LoadedArtifact | LoadedEnsemble, provenance: Provenance, prediction: Prediction,
               explained: Sequence = (), estimate: EstimateVsTest | None = None) -> str:
    metrics, metadata = artifact.metrics, artifact.metadata
    best = metrics.get("best", {})
    val_rows = [(k, v) for k, v in best.items() if k.startswith("val_")]
    val_rows += [(k, v) for k, v in metrics.items() if k.endswith("_at_threshold")]
    scored = (f"{provenance.metric} ({provenance.goal}) = {_fmt(provenance.value)}"
              if provenance.metric else "-")
    tta = " + ".join(prediction.views)
    positives = int(prediction.labels.sum())
    data_dir = metadata.get("data_dir", getattr(getattr(artifact, "config", None), "data_dir", None))
    epoch = (f"best epoch {metrics.get('best_epoch', '-')}, monitor {metrics.get('monitor', '-')}"
             if not isinstance(artifact, LoadedEnsemble) else "each member at the epoch it kept")
    lines = [
        _title(artifact, provenance),
        "",
        f"Exported {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by covid-sweep {__version__}: {_what(artifact)} "
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
        f"| training data | `{data_dir}` |",
        f"| validation | {validation_summary(metadata)} |",
        f"| class map | {json.dumps(metadata.get('class_map', {}))} |",
        "",
        "## Decision threshold",
        "",
        f"**{artifact.threshold:.6g}**: COVID = 1 when P(COVID) >= {artifact.threshold:.6g}. Chosen on validation "
        "(out-of-fold predictions for a K-fold ensemble), not on test data: of the cuts within one standard error "
        "of the best validation accuracy, the one closest to 0.5.",
        "",
        f"## Validation metrics ({epoch})",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {_fmt(v)} |" for k, v in val_rows),
        "",
        *selection_section(provenance.selection, provenance.choice, estimate.test if estimate else None),
        *(card_section(estimate, prediction.views) if estimate else []),
        *_configuration(artifact),
        *_preprocessing(artifact),
        "## Files",
        "",
        *_model_files(artifact),
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
