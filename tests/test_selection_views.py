"""The selection-corrected estimate wherever a best value is shown: status, status --json, the live view, the
HTML report."""

from __future__ import annotations

import io

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.artifacts import recorded_artifact
from helpers.sweeps import add_trial, new_store
from rich.console import Console
from sklearn.metrics import roc_auc_score

from covid_sweep.cli import main
from covid_sweep.sweep.views.live import CorrectedEstimate, LiveState, render
from covid_sweep.sweep.views.report_data import from_store
from covid_sweep.sweep.views.report_html import render as render_html
from covid_sweep.sweep.views.status import status_json, status_view

LABELS = np.tile([0, 1], 12)
GROUPS = np.repeat(np.arange(12), 2).astype(str)


def _probs(skill: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-(skill * (LABELS - 0.5) * 4 + rng.normal(0, 1, (2, 24)))))


@pytest.fixture
def sweep(tmp_path):
    """Three finished trials with recorded validation predictions, one still running, one failed."""
    home = tmp_path / "home"
    store = new_store(home)
    for i, skill in enumerate((0.3, 0.5, 0.4), start=1):
        probs = _probs(skill, i)
        values = [roc_auc_score(LABELS, epoch) for epoch in probs]  # as the trial logged them
        artifact = recorded_artifact(tmp_path / "artifacts" / f"t{i}", probs, LABELS, groups=GROUPS,
                                     best_epoch=int(np.argmax(values)) + 1)
        add_trial(store, f"t{i}", "finished", values, artifact)
    add_trial(store, "t4", "running", [0.99], None)
    add_trial(store, "t5", "failed", [], None)
    return home, store


def _text(renderable, width=200) -> str:
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(renderable)
    return console.export_text()


def test_status_shows_the_interval_beside_the_best_finished_value(sweep):
    _, store = sweep
    text = _text(status_view(store.snapshot("sw1"), 200))
    line = next(row for row in text.splitlines() if "selection-corrected" in row)
    best = store.trial(2).best
    assert line.startswith(f"best val_auc {best:.3f} (t2) · selection-corrected ")
    assert "3 trial(s), 12 validation groups" in line


def test_status_json_carries_the_estimate(sweep):
    _, store = sweep
    estimate = status_json(store.snapshot("sw1"))["sweep"]["selection_estimate"]
    assert estimate["promoted"] == "t2" and estimate["compared"] == ["t1", "t2", "t3"]
    single = estimate["single"]
    assert single["low"] <= single["estimate"] <= single["high"] and single["samples"] > 1000


def test_status_says_why_there_is_no_estimate(tmp_path):
    home = tmp_path / "home"
    store = new_store(home)
    add_trial(store, "t1", "finished", [0.7], recorded_artifact(tmp_path / "a", _probs(1.0, 1), LABELS,
                                                                predictions=False))
    done = CliRunner().invoke(main, ["status", "--home", str(home)])
    assert done.exit_code == 0, done.output
    assert ("selection-corrected estimate: not available (the promoted trial t1 kept no validation predictions"
            in " ".join(done.output.split()))


def test_the_live_view_shows_the_corrected_estimate_once_computed(sweep):
    _, store = sweep
    corrected = CorrectedEstimate(store.sweep("sw1"))
    corrected.update(store.trials("sw1"))
    for _ in range(600):  # computed in a thread of its own
        if corrected.text:
            break
        import time
        time.sleep(0.05)
    assert corrected.text and corrected.text.startswith("selection-corrected ")
    state = LiveState(done=3, target=6, best=("t4", 0.99), corrected=corrected.text)
    assert "best so far: t4 val_auc=0.99 · selection-corrected " in _text(render(state, "val_auc"))


def test_the_report_header_carries_the_estimate(sweep):
    _, store = sweep
    record = from_store(store, "sw1")
    page = render_html(record, None)
    assert f"Best val_auc {store.trial(2).best:.3f} (t2) · selection-corrected " in page
    assert "bootstrap samples of 12 validation groups" in page
