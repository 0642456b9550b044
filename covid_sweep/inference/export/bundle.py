"""The export folder: submission, probabilities, model/ and model card, built beside OUT and installed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, Sequence

from covid_sweep.core.files import install_entries, publish_dir, staged_dir
from covid_sweep.inference.estimate import EstimateVsTest, estimate_vs_test
from covid_sweep.inference.export.errors import ExportError
from covid_sweep.inference.export.gradcam import explain_if_labelled
from covid_sweep.inference.export.model_card import Provenance, model_card
from covid_sweep.inference.export.torchscript import TORCHSCRIPT, write_model_dir
from covid_sweep.inference.predict import Prediction, predict_split, sample_ids
from covid_sweep.inference.submission import probabilities_text, submission_text
from covid_sweep.model.artifact import LoadedArtifact
from covid_sweep.model.artifact_files import FILES, MANIFEST, OPTIONAL_FILES, update_metadata
from covid_sweep.model.ensemble_artifact import ENSEMBLE_FILE, MEMBERS, LoadedEnsemble

# What an export writes in OUT. Its folders are replaced whole by --force, so each is replaced only when every file
# in it is one an export writes there: a file of the user's in them is refused, never deleted with them.
EXPORT_FILES = ("submission.csv", "probabilities.csv", "model_card.md")
ARTIFACT_FILES = (*FILES, *OPTIONAL_FILES, MANIFEST)
MODEL_FILES = (*ARTIFACT_FILES, ENSEMBLE_FILE, TORCHSCRIPT)  # model/: a trial's or an ensemble's artifact
EXPLAIN_FILES = ("right-*.png", "wrong-*.png")  # explain/: the Grad-CAM overlays (inference/explain.py names them)


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    prediction: Prediction
    files: tuple[str, ...]
    estimate: EstimateVsTest


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Checked before any work, and again just before OUT changes: OUT is a new folder, an empty one, or, with
    force, one whose entries that an export replaces hold nothing but an export's files."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink():  # the export is renamed into place: that replaces a link, not the folder it points to
        raise ExportError(f"{out_dir}: a symbolic link (to {os.readlink(out_dir)}); give the folder itself as --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise ExportError(f"{out_dir}: not empty; pass --force to replace the exported files in it")
        foreign = first_foreign_file(out_dir)
        if foreign is not None:
            raise ExportError(f"{foreign}: not written by export-best, and --force would delete it with the rest "
                              f"of {foreign.relative_to(out_dir).parts[0]}; move it out of {out_dir} first")


def first_foreign_file(out_dir: Path) -> Path | None:
    """The first path in an entry of OUT that an export replaces which an export does not write there."""
    for name in EXPORT_FILES:
        path = out_dir / name
        if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
            return path
    for name, ours in (("model", _model_file), ("explain", _explain_file)):
        folder = out_dir / name
        if not os.path.lexists(folder):
            continue
        if folder.is_symlink() or not folder.is_dir():
            return folder
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not ours(path.relative_to(folder).parts, path.is_dir()):
                return path
    return None


def _model_file(parts: tuple[str, ...], is_dir: bool) -> bool:
    """model/: the artifact's files, its TorchScript file, and an ensemble's members/TRIAL/ artifact files."""
    if parts[0] == MEMBERS:
        if len(parts) < 3:  # members/ and members/TRIAL/
            return is_dir
        return len(parts) == 3 and not is_dir and parts[2] in ARTIFACT_FILES
    return len(parts) == 1 and not is_dir and parts[0] in MODEL_FILES


def _explain_file(parts: tuple[str, ...], is_dir: bool) -> bool:
    return len(parts) == 1 and not is_dir and any(fnmatch(parts[0], pattern) for pattern in EXPLAIN_FILES)


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


def export_bundle(artifact: LoadedArtifact | LoadedEnsemble, data_dir: Path, out_dir: Path, provenance: Provenance,
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
        if provenance.selection:  # what the choice is worth travels with the promoted model
            update_metadata(staging / "model", {"selection_estimate": provenance.selection,
                                                "promotion_choice": provenance.choice})
        explained = explain_if_labelled(artifact, data_dir, staging / "explain")
        estimate = estimate_vs_test(artifact, data_dir, prediction)
        (staging / "model_card.md").write_text(model_card(artifact, provenance, prediction, explained, estimate))
        files = tuple(sorted(os.listdir(staging)))
        if before_install is not None:
            before_install()
        install(staging, out_dir, force)
    return ExportResult(out_dir=out_dir, prediction=prediction, files=files, estimate=estimate)
