"""The promoted model's section of the report: its validation numbers (from its artifact), and, from the folder
`export-best` wrote, the test score, confusion matrix and ROC curve when test labels exist, and the Grad-CAM
overlays. The test numbers are shown after the choice, as the model card shows them: nothing here chose anything.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from covid_sweep.core.errors import UserError
from covid_sweep.core.split_record import recorded_split_kind
from covid_sweep.sweep.views.report_data import SweepRecord

VALIDATION_KEYS = ("val_auc", "val_acc", "val_f1", "val_sensitivity", "val_specificity", "val_loss")


@dataclass
class PromotedModel:
    trial_id: str
    artifact: str | None
    split: str
    best_epoch: int | None
    threshold: float | None
    validation: dict[str, float]  # val_* of the best epoch, and *_at_threshold
    test: dict[str, float] | None = None  # acc, auc, f1, sensitivity, specificity on test_labels.csv
    confusion: list[list[int]] | None = None  # rows true 0/1, columns predicted 0/1
    roc: tuple[list[float], list[float]] | None = None  # false positive rates, true positive rates
    gradcam: list[tuple[str, str]] = field(default_factory=list)  # (caption, data: URI of the PNG)
    notes: list[str] = field(default_factory=list)  # what is missing, and why
    members: dict[str, float] = field(default_factory=dict)  # an exported ensemble's trials and weights
    selection: dict | None = None  # the export's selection-corrected estimate, as export-best recorded it
    choice: str | None = None  # why export-best promoted what it did


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not readable JSON ({err})") from None


def _artifact_dir(trial_artifact: str | None, export_dir: Path | None) -> Path | None:
    """The trial's own artifact folder where it still exists, else the copy inside the export folder."""
    for candidate in (Path(trial_artifact) if trial_artifact else None, export_dir / "model" if export_dir else None):
        if candidate is not None and (candidate / "metrics.json").is_file():
            return candidate
    return None


def _check_export(export_dir: Path, trial_id: str) -> None:
    metadata = _read_json(export_dir / "model" / "metadata.json")
    if metadata is None:
        raise UserError(f"{export_dir}: --export is not a folder export-best wrote (no model/metadata.json)")
    if metadata.get("trial") not in (None, trial_id):
        raise UserError(f"{export_dir}: --export holds trial {metadata.get('trial')}, but the sweep's promoted "
                        f"trial is {trial_id}; export it again with `covid-sweep export-best`")


def _validation(metrics: dict) -> dict[str, float]:
    best = metrics.get("best", {})
    values = {k: best[k] for k in VALIDATION_KEYS if isinstance(best.get(k), (int, float))}
    values.update({k: v for k, v in metrics.items() if k.endswith("_at_threshold") and isinstance(v, (int, float))})
    return values


def gradcam_caption(stem: str) -> str:
    """export-best names an overlay RIGHT-LABEL-pPROB-IMAGE (e.g. wrong-non-covid-p0.92-64): say it in words."""
    match = re.fullmatch(r"(right|wrong)-(.+)-p([0-9.]+)-(.+)", stem)
    if match is None:
        return stem
    verdict, label, prob, image = match.groups()
    return f"{verdict}: {image} is {label}, P(COVID) = {prob}"


def _gradcam(export_dir: Path) -> list[tuple[str, str]]:
    """Every overlay export-best wrote, embedded: the report stays one file."""
    images = []
    for png in sorted((export_dir / "explain").glob("*.png")):
        caption = gradcam_caption(png.stem)
        images.append((caption, "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()))
    return images


def _test_labels(data_dir: Path) -> Path | None:
    labels = data_dir / "test_labels.csv"
    return labels if labels.is_file() else None


def _score_test(model: PromotedModel, export_dir: Path, labels: Path) -> None:
    import numpy as np
    from sklearn.metrics import roc_curve

    from covid_sweep.data.layout import read_label_csv
    from covid_sweep.inference.submission import read_probabilities, score

    result = score(export_dir / "submission.csv", labels, export_dir / "probabilities.csv")
    model.test = {"acc": result.accuracy, "auc": result.auc, "f1": result.f1, "sensitivity": result.sensitivity,
                  "specificity": result.specificity, "n": result.n}
    model.confusion = [list(row) for row in result.confusion]
    ids, y_true = read_label_csv(labels)
    probs = read_probabilities(export_dir / "probabilities.csv")
    fpr, tpr, _ = roc_curve(np.asarray(y_true), np.asarray([probs[i] for i in ids]))
    model.roc = ([float(x) for x in fpr], [float(y) for y in tpr])


def promoted_model(record: SweepRecord, export_dir: Path | None = None, data_dir: Path | None = None) -> PromotedModel | None:
    """The promoted trial's section, or None when the sweep has no promoted trial."""
    trial = record.promoted
    if trial is None:
        return None
    export_dir = Path(export_dir) if export_dir else None
    if export_dir is not None:
        _check_export(export_dir, trial.id)
    exported_ensemble = export_dir is not None and (export_dir / "model" / "ensemble.json").is_file()
    # an exported ensemble is the promoted model: its own numbers, not its best member's
    artifact = export_dir / "model" if exported_ensemble else _artifact_dir(trial.artifact, export_dir)
    metrics = _read_json(artifact / "metrics.json") if artifact else None
    metadata = (_read_json(artifact / "metadata.json") if artifact else None) or {}
    model = PromotedModel(trial_id=trial.id, artifact=str(artifact) if artifact else trial.artifact,
                          split=recorded_split_kind(metadata) if metadata else record.objective_split,
                          best_epoch=(metrics or {}).get("best_epoch", trial.best_epoch),
                          threshold=(metrics or {}).get("threshold"), validation=_validation(metrics or {}),
                          members=dict((metrics or {}).get("members") or {}) if exported_ensemble else {})
    if export_dir is not None:
        exported = _read_json(export_dir / "model" / "metadata.json") or {}
        model.selection, model.choice = exported.get("selection_estimate"), exported.get("promotion_choice")
    if metrics is None:
        model.notes.append(f"its artifact ({trial.artifact or 'no path recorded'}) is not here: validation numbers "
                           "unavailable; pass --export DIR (the folder export-best wrote)")
    if export_dir is None:
        model.notes.append("no --export DIR given: the test score, confusion matrix, ROC curve and Grad-CAM overlays "
                           "come from the folder `covid-sweep export-best` wrote")
        return model
    model.gradcam = _gradcam(export_dir)
    if not model.gradcam:
        model.notes.append(f"{export_dir / 'explain'}: no Grad-CAM overlays (export-best writes them only when "
                           "DATA/test_labels.csv exists)")
    known = data_dir or metadata.get("data_dir") or record.data_dir
    labels = _test_labels(Path(known)) if known else None
    if labels is None:
        where = f"no {Path(known) / 'test_labels.csv'}" if known else "no data folder recorded"
        model.notes.append(f"{where}: no test score, confusion matrix or ROC curve (pass --data DATA where the "
                           "test labels are)")
    else:
        _score_test(model, export_dir, labels)
    return model
