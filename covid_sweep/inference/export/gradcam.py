"""The model card's Grad-CAM section: overlays of the most confident right and wrong test predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from covid_sweep.data.layout import labels_for, load_split
from covid_sweep.inference.explain import explain
from covid_sweep.model.artifact import LoadedArtifact


def gradcam_section(explained: Sequence) -> list[str]:
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


def explain_if_labelled(artifact: LoadedArtifact, data_dir: Path, out: Path, n: int = 2) -> list:
    """Grad-CAM overlays for the card, where DATA/test_labels.csv tells right from wrong (never used to choose)."""
    labels_csv = Path(data_dir) / "test_labels.csv"
    if not labels_csv.is_file():
        return []
    split = load_split(Path(data_dir), "test")
    return explain(artifact, split, labels_for(split, labels_csv), out, n)
