"""The validation estimate beside the test score: how honest was the number the sweep maximised?

The test score is computed only when DATA/test_labels.csv exists, after the model was chosen; it is
shown, never used to choose anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from covid_sweep.core.metrics import binary_metrics
from covid_sweep.core.split_record import recorded_split_kind
from covid_sweep.data.layout import labels_for, load_split
from covid_sweep.inference.predict import Prediction
from covid_sweep.model.artifact import LoadedArtifact

ROWS = ("auc", "acc", "sensitivity", "specificity", "f1")


@dataclass(frozen=True)
class EstimateVsTest:
    split: str  # what validation was measured on
    validation: dict[str, float]
    test: dict[str, float] | None

    def gap(self, metric: str = "auc") -> float | None:
        if self.test is None or metric not in self.validation:
            return None
        return self.validation[metric] - self.test[metric]


def validation_estimate(artifact: LoadedArtifact) -> dict[str, float]:
    """AUC of the best epoch; the rest at the decision threshold, as the deployed model decides."""
    metrics = artifact.metrics
    values = {k: metrics[f"val_{k}_at_threshold"] for k in ROWS if f"val_{k}_at_threshold" in metrics}
    if "val_auc" in metrics.get("best", {}):
        values["auc"] = metrics["best"]["val_auc"]
    return values


def estimate_vs_test(artifact: LoadedArtifact, data_dir: Path, prediction: Prediction) -> EstimateVsTest:
    labels_csv = Path(data_dir) / "test_labels.csv"
    test = None
    if labels_csv.is_file():
        labels = labels_for(load_split(Path(data_dir), "test"), labels_csv)
        test = binary_metrics(labels, prediction.probs, prediction.threshold)
    return EstimateVsTest(recorded_split_kind(artifact.metadata), validation_estimate(artifact), test)


def card_section(result: EstimateVsTest, views: tuple[str, ...]) -> list[str]:
    """Markdown for the model card."""
    lines = ["## Validation estimate and test score", "",
             f"Validation split: **{result.split}**."]
    if result.test is None:
        return lines + ["No `test_labels.csv` beside the data: no test score.", ""]
    lines += [f"Test: `test_labels.csv`, scored once after the model was chosen (views: {' + '.join(views)}; "
              "validation used the identity view).", "",
              "| metric | validation | test | validation − test |", "|---|---|---|---|"]
    for metric in ROWS:
        if metric in result.validation:
            val, test = result.validation[metric], result.test[metric]
            lines.append(f"| {metric} | {val:.3f} | {test:.3f} | {val - test:+.3f} |")
    return lines + [""]
