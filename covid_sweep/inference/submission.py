"""Submission files: validate before writing, write atomically, read back, score against labels.

A submission is the competition's `file_name,COVID` CSV: every id of sample_submission.csv exactly
once, in its order, COVID 0 or 1. It may carry a `prob` column (P(COVID)) for AUC.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

from covid_sweep.core import files
from covid_sweep.core.errors import UserError
from covid_sweep.core.metrics import binary_metrics
from covid_sweep.data.layout import ID_COLUMN, LABEL_COLUMN, read_label_csv

PROB_COLUMN = "prob"


class SubmissionError(UserError, ValueError):
    """A submission or probabilities file that is not what it must be; the message names file and row/id."""


@dataclass(frozen=True)
class Submission:
    path: Path
    ids: tuple[str, ...]
    labels: tuple[int, ...]
    probs: tuple[float, ...] | None  # from a `prob` column, when there is one


# ---- validation ------------------------------------------------------------------------------------

def _preview(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_ids(source: str, ids: Sequence[str], expected: Sequence[str], expected_source: str) -> None:
    """Every expected id exactly once and nothing else; rows are numbered as in the CSV (header = row 1)."""
    seen: dict[str, int] = {}
    expected_set = set(expected)
    for row, name in enumerate(ids, start=2):
        if name in seen:
            raise SubmissionError(f"{source}: row {row}: duplicate {ID_COLUMN} {name!r} (first at row {seen[name]})")
        if name not in expected_set:
            raise SubmissionError(f"{source}: row {row}: extra {ID_COLUMN} {name!r} is not in {expected_source}")
        seen[name] = row
    missing = [name for name in expected if name not in seen]
    if missing:
        raise SubmissionError(f"{source}: {len(missing)} {ID_COLUMN}(s) of {expected_source} missing: {_preview(missing)}")


def validate_submission(ids: Sequence[str], labels: Sequence[int], expected_ids: Sequence[str],
                        source: str = "submission", expected_source: str = "sample_submission.csv") -> None:
    """What every written submission must satisfy: the expected ids once each, nothing extra, 0/1 only."""
    if len(ids) != len(labels):
        raise SubmissionError(f"{source}: {len(ids)} ids but {len(labels)} labels")
    check_ids(source, ids, expected_ids, expected_source)
    for row, (name, label) in enumerate(zip(ids, labels), start=2):
        if isinstance(label, bool) or label not in (0, 1) or int(label) != label:
            raise SubmissionError(f"{source}: row {row}: {LABEL_COLUMN} of {name!r} must be 0 or 1, got {label!r}")


def _check_probs(source: str, ids: Sequence[str], probs: Sequence[float]) -> None:
    for row, (name, p) in enumerate(zip(ids, probs), start=2):
        if not (isinstance(p, float) and math.isfinite(p) and 0.0 <= p <= 1.0):
            raise SubmissionError(f"{source}: row {row}: {PROB_COLUMN} of {name!r} must be a probability in [0, 1], got {p!r}")


# ---- writing ---------------------------------------------------------------------------------------

def _csv_text(header: Sequence[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def refuse_existing(path: Path, force: bool) -> None:
    path = Path(path)
    if path.is_dir():
        raise SubmissionError(f"{path}: is a directory; give a file path")
    if path.exists() and not force:
        raise SubmissionError(f"{path}: already exists; pass --force to overwrite it")


def write_text_atomically(path: Path, text: str, force: bool = False) -> Path:
    """Atomic (covid_sweep.core.files); without force an existing file is never replaced, not even one created meanwhile."""
    refuse_existing(path, force)
    try:
        return files.write_text_atomically(Path(path), text, force)
    except files.ExistsError as err:
        raise SubmissionError(str(err)) from None


def submission_text(ids: Sequence[str], labels: Sequence[int], expected_ids: Sequence[str],
                    expected_source: str = "sample_submission.csv") -> str:
    """Validated CSV text in the order of expected_ids (the sample submission's order)."""
    validate_submission(ids, labels, expected_ids, "submission", expected_source)
    by_id = dict(zip(ids, labels))
    return _csv_text([ID_COLUMN, LABEL_COLUMN], ((name, int(by_id[name])) for name in expected_ids))


def write_submission(path: Path, ids: Sequence[str], labels: Sequence[int], expected_ids: Sequence[str],
                     force: bool = False, expected_source: str = "sample_submission.csv") -> Path:
    return write_text_atomically(path, submission_text(ids, labels, expected_ids, expected_source), force)


def probabilities_text(ids: Sequence[str], probs: Sequence[float]) -> str:
    probs = [float(p) for p in probs]
    _check_probs("probabilities", ids, probs)
    # %.9g round-trips float32 exactly
    return _csv_text([ID_COLUMN, PROB_COLUMN], ((name, f"{p:.9g}") for name, p in zip(ids, probs)))


def write_probabilities(path: Path, ids: Sequence[str], probs: Sequence[float], force: bool = False) -> Path:
    return write_text_atomically(path, probabilities_text(ids, probs), force)


# ---- reading ---------------------------------------------------------------------------------------

def _read_rows(path: Path, required: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise SubmissionError(f"{path}: missing column {', '.join(map(repr, missing))} (found {columns or 'no header'})")
        reader.fieldnames = columns
        rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise SubmissionError(f"{path}: no rows")
    for row_number, row in enumerate(rows, start=2):
        if not row.get(ID_COLUMN):
            raise SubmissionError(f"{path}: row {row_number}: empty {ID_COLUMN}")
    return columns, rows


def _parse_prob(path: Path, row_number: int, name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise SubmissionError(f"{path}: row {row_number}: {PROB_COLUMN} of {name!r} must be a probability in [0, 1], got {raw!r}")
    return value


def _no_duplicates(path: Path, ids: Sequence[str]) -> None:
    seen: dict[str, int] = {}
    for row, name in enumerate(ids, start=2):
        if name in seen:
            raise SubmissionError(f"{path}: row {row}: duplicate {ID_COLUMN} {name!r} (first at row {seen[name]})")
        seen[name] = row


def read_submission(path: Path) -> Submission:
    path = Path(path)
    columns, rows = _read_rows(path, (ID_COLUMN, LABEL_COLUMN))
    ids = [row[ID_COLUMN] for row in rows]
    _no_duplicates(path, ids)
    labels = []
    for row_number, row in enumerate(rows, start=2):
        raw = row[LABEL_COLUMN]
        if raw not in ("0", "1"):
            raise SubmissionError(f"{path}: row {row_number}: {LABEL_COLUMN} of {row[ID_COLUMN]!r} must be 0 or 1, got {raw!r}")
        labels.append(int(raw))
    probs = None
    if PROB_COLUMN in columns:
        probs = tuple(_parse_prob(path, n, row[ID_COLUMN], row[PROB_COLUMN]) for n, row in enumerate(rows, start=2))
    return Submission(path=path, ids=tuple(ids), labels=tuple(labels), probs=probs)


def read_probabilities(path: Path) -> dict[str, float]:
    path = Path(path)
    _, rows = _read_rows(path, (ID_COLUMN, PROB_COLUMN))
    _no_duplicates(path, [row[ID_COLUMN] for row in rows])
    return {row[ID_COLUMN]: _parse_prob(path, n, row[ID_COLUMN], row[PROB_COLUMN]) for n, row in enumerate(rows, start=2)}


# ---- scoring ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Score:
    n: int
    accuracy: float
    f1: float
    sensitivity: float
    specificity: float
    auc: float | None  # None without probabilities
    auc_source: str | None
    confusion: tuple[tuple[int, int], tuple[int, int]]  # rows true 0/1, columns predicted 0/1

    def as_dict(self) -> dict:
        return {"n": self.n, "accuracy": self.accuracy, "f1": self.f1, "sensitivity": self.sensitivity,
                "specificity": self.specificity, "auc": self.auc, "auc_source": self.auc_source,
                "confusion_matrix": {"labels": [0, 1], "rows": "true", "columns": "predicted",
                                     "matrix": [list(r) for r in self.confusion]}}


def score(submission_path: Path, labels_path: Path, probs_path: Path | None = None) -> Score:
    """Score a submission against a `file_name,COVID` label file (e.g. test_labels.csv)."""
    submission = read_submission(submission_path)
    label_ids, labels = read_label_csv(Path(labels_path), require_labels=True)
    check_ids(str(submission.path), submission.ids, label_ids, Path(labels_path).name)
    predicted = dict(zip(submission.ids, submission.labels))
    y_true = np.asarray(labels, dtype=int)
    y_pred = np.asarray([predicted[name] for name in label_ids], dtype=int)
    # the hard labels as "probabilities" at threshold 0.5: accuracy, F1, sensitivity, specificity
    metrics = binary_metrics(y_true, y_pred.astype(float), threshold=0.5)

    probs, auc_source = None, None
    if probs_path is not None:
        by_id = read_probabilities(Path(probs_path))
        check_ids(str(probs_path), list(by_id), label_ids, Path(labels_path).name)
        probs, auc_source = np.asarray([by_id[name] for name in label_ids]), str(probs_path)
    elif submission.probs is not None:
        by_id = dict(zip(submission.ids, submission.probs))
        probs, auc_source = np.asarray([by_id[name] for name in label_ids]), f"{submission.path} ({PROB_COLUMN} column)"
    auc = None
    if probs is not None and len(np.unique(y_true)) == 2:
        auc = float(roc_auc_score(y_true, probs))
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel())
    return Score(n=len(label_ids), accuracy=metrics["acc"], f1=metrics["f1"], sensitivity=metrics["sensitivity"],
                 specificity=metrics["specificity"], auc=auc, auc_source=auc_source if auc is not None else None,
                 confusion=((tn, fp), (fn, tp)))
