"""Promotion from the embedded store: best *finished* trial only, alias `best` moves, export-best end to end."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.sweeps import MINIMIZE, add_trial, new_store
from rich.console import Console

from covid_sweep.cli import main
from covid_sweep.core import paths
from covid_sweep.data.layout import DataError
from covid_sweep.inference.export import ExportError
from covid_sweep.inference.submission import read_submission
from covid_sweep.sweep.control.promote import PromotionError, best_finished_trial, export_best
from covid_sweep.sweep.store import StoreError
from covid_sweep.sweep.views.status import objective_line, status_table


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def fake_artifact(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "artifacts" / name
    folder.mkdir(parents=True)
    return folder


# ---- choosing the winner ---------------------------------------------------------------------------

def test_only_finished_trials_are_promoted(tmp_path, home):
    store = new_store(home)
    add_trial(store, "a", "finished", [0.6, 0.7], fake_artifact(tmp_path, "a"))
    winner = add_trial(store, "b", "finished", [0.8, 0.75], fake_artifact(tmp_path, "b"))  # best epoch counts
    add_trial(store, "c", "failed", [0.99], fake_artifact(tmp_path, "c"))
    add_trial(store, "d", "stopped", [0.95], fake_artifact(tmp_path, "d"))
    add_trial(store, "e", "interrupted", [0.97], fake_artifact(tmp_path, "e"))
    add_trial(store, "f", "running", [0.98], None)
    add_trial(store, "g", "pending", [], None)
    add_trial(store, "h", "finished", [0.8], fake_artifact(tmp_path, "h"))  # a tie: the earlier trial wins
    assert best_finished_trial(store, store.sweep("sw1")).id == winner.id


def test_minimize_goal(tmp_path, home):
    store = new_store(home, MINIMIZE)
    add_trial(store, "a", "finished", [0.5, 0.4], fake_artifact(tmp_path, "a"))
    add_trial(store, "b", "finished", [0.3, 0.6], fake_artifact(tmp_path, "b"))
    add_trial(store, "c", "failed", [0.01], fake_artifact(tmp_path, "c"))
    assert best_finished_trial(store, store.sweep("sw1")).name == "b"


def test_no_finished_trial_is_a_clear_error(tmp_path, home):
    store = new_store(home)
    add_trial(store, "a", "failed", [0.9], None)
    add_trial(store, "b", "running", [0.8], None)
    add_trial(store, "c", "stopped", [0.8], fake_artifact(tmp_path, "c"))
    with pytest.raises(PromotionError, match=r"sweep sw1: no finished trial with a val_auc value to promote "
                                             r"\(1 failed, 1 running, 1 stopped\)"):
        best_finished_trial(store, store.sweep("sw1"))


def test_a_winner_without_its_artifact_is_named(tmp_path, home):
    store = new_store(home)
    add_trial(store, "a", "finished", [0.9], tmp_path / "gone")
    with pytest.raises(PromotionError, match=r"best finished trial a has no model artifact \(expected at .*gone\)"):
        best_finished_trial(store, store.sweep("sw1"))


def test_a_sweep_without_metric_cannot_promote(home):
    store = new_store(home, {"method": "grid", "parameters": {}})
    with pytest.raises(PromotionError, match="has no metric"):
        best_finished_trial(store, store.sweep("sw1"))


# ---- export-best: the alias moves, nothing moves on error -------------------------------------------

def test_alias_moves_to_each_new_winner(trained, tmp_path, home):
    data, artifact = trained
    store = new_store(home)
    first = add_trial(store, "sw1-001", "finished", [0.6], artifact)
    out = tmp_path / "out"
    result = export_best("sw1", data, out, home=home)
    assert store.alias("sw1", "best") == first.id and result.previous is None
    assert result.provenance.trial_id == "sw1-001" and result.provenance.value == pytest.approx(0.6)
    assert sorted(p.name for p in out.iterdir()) == ["explain", "model", "model_card.md", "probabilities.csv",
                                                     "submission.csv"]

    second = add_trial(store, "sw1-002", "finished", [0.7], artifact)
    add_trial(store, "sw1-003", "failed", [0.99], artifact)
    add_trial(store, "sw1-004", "running", [0.98], None)
    result = export_best("sw1", data, out, home=home, force=True)
    assert store.alias("sw1", "best") == second.id and result.previous == "sw1-001"
    assert "`sw1-002`" in (out / "model_card.md").read_text()
    table = status_table(store.snapshot("sw1"))
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    assert "sw1-002 [best]" in console.export_text()
    assert objective_line(store.snapshot("sw1")) == "val_auc measured on: grouped holdout (near-duplicates only)"

    # a failed export (non-empty folder without --force) moves no alias and touches no file
    third = add_trial(store, "sw1-005", "finished", [0.9], artifact)
    before = (out / "model_card.md").read_text()
    with pytest.raises(ExportError, match="not empty; pass --force"):
        export_best("sw1", data, out, home=home)
    assert store.alias("sw1", "best") == second.id and (out / "model_card.md").read_text() == before
    # nor does an export whose prediction job fails (a test image is missing)
    (data / "test" / "0.png").rename(tmp_path / "0.png")
    try:
        with pytest.raises(DataError, match="0.png"):
            export_best("sw1", data, out, home=home, force=True)
    finally:
        (tmp_path / "0.png").rename(data / "test" / "0.png")
    assert store.alias("sw1", "best") == second.id and (out / "model_card.md").read_text() == before
    result = export_best("sw1", data, out, home=home, force=True)
    assert store.alias("sw1", "best") == third.id and result.previous == "sw1-002"
    assert export_best("sw1", data, out, home=home, force=True).previous is None  # same winner: nothing moved


def test_local_sweep_errors(trained, tmp_path, home):
    data, artifact = trained
    with pytest.raises(PromotionError, match=r"sweeps.db: no embedded sweep store here; pass --home"):
        export_best("sw1", data, tmp_path / "out", home=home)
    assert not paths.store_path(home).exists()  # looking did not create an empty store
    store = new_store(home)
    add_trial(store, "a", "finished", [0.6], artifact)
    with pytest.raises(StoreError, match=r"no sweep 'nope' \(sweeps here: sw1\)"):
        export_best("nope", data, tmp_path / "out", home=home)
    with pytest.raises(PromotionError, match="--registry links a W&B model artifact"):
        export_best("sw1", data, tmp_path / "out", home=home, registry="covid-ct")
    assert not (tmp_path / "out").exists() and store.alias("sw1", "best") is None


def test_export_best_and_score_commands(trained, tmp_path, home):
    data, artifact = trained
    store = new_store(home)
    add_trial(store, "sw1-001", "finished", [0.6], artifact)
    winner = add_trial(store, "sw1-002", "finished", [0.8], artifact)
    out = tmp_path / "x"
    runner = CliRunner()
    result = runner.invoke(main, ["export-best", "sw1", "--data", str(data), "--out", str(out), "--home", str(home), "--tta"])
    assert result.exit_code == 0, result.output
    assert "best finished trial of sweep sw1: sw1-002 (val_auc=0.8000, maximize)" in result.output
    assert "views: identity + hflip" in result.output
    assert store.alias("sw1", "best") == winner.id
    expected = tuple(line.split(",")[0] for line in (data / "sample_submission.csv").read_text().split()[1:])
    assert len(expected) == 6 and read_submission(out / "submission.csv").ids == expected

    again = runner.invoke(main, ["export-best", "sw1", "--data", str(data), "--out", str(out), "--home", str(home)])
    assert again.exit_code == 1 and again.output.strip().count("\n") == 0 and "pass --force" in again.output

    scored = runner.invoke(main, ["score", str(out / "submission.csv"), str(data / "test_labels.csv"),
                                  "--probs", str(out / "probabilities.csv")])
    assert scored.exit_code == 0, scored.output
    assert "accuracy" in scored.output and "AUC " in scored.output and "probabilities.csv" in scored.output
