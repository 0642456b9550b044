"""Fault injection (issue 26, item 2): output paths that hold something of the user's.

A command never overwrites a file it was not told to (report, like export-best, refuses an existing --out
unless --force), --force replaces only what export-best itself writes, and an --out it cannot write into is
one line before any expensive work.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers.cli import one_line_error
from helpers.fakes import METRIC

from covid_sweep.cli import main
from covid_sweep.core import paths
from covid_sweep.inference.export import bundle
from covid_sweep.sweep.store import Store


def _store_with_winner(home, artifact=None) -> None:
    """A sweep `sw1` whose one finished trial (artifact: its model) is the one to promote."""
    store = Store(paths.store_path(home))
    store.create_sweep("sw1", "test", "t.yaml", {"method": "random", "metric": METRIC, "parameters": {}}, None, 0)
    trial = store.add_trial("sw1", "sw1-001", {"lr": 1e-3}, owner="test:1")
    store.mark_running(trial.id, pid=1)
    store.log_epoch(trial.id, {"epoch": 1, "val_auc": 0.8}, "val_auc", "maximize")
    store.end_trial(trial.id, "finished", artifact=str(artifact) if artifact else None)
    store.close()


def _export_best(data, out, home, *options):
    return CliRunner().invoke(main, ["export-best", "sw1", "--data", str(data), "--out", str(out), "--home", str(home),
                                     *options])


def test_report_over_an_existing_file_is_refused_without_force(tmp_path):
    home, out = tmp_path / "home", tmp_path / "notes.html"
    _store_with_winner(home)
    out.write_text("my notes\n")
    refused = CliRunner().invoke(main, ["report", "sw1", "--home", str(home), "--out", str(out)])
    one_line_error(refused, str(out), "--force")
    assert out.read_text() == "my notes\n"
    forced = CliRunner().invoke(main, ["report", "sw1", "--home", str(home), "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_export_best_force_refuses_to_delete_a_users_file_inside_model(trained, tmp_path):
    data, artifact = trained
    home, out = tmp_path / "home", tmp_path / "best"
    _store_with_winner(home, artifact)
    first = _export_best(data, out, home)
    assert first.exit_code == 0, first.output
    notes = out / "model" / "notes.txt"
    notes.write_text("why I chose this model\n")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))

    one_line_error(_export_best(data, out, home, "--force"), str(notes), "move it out")
    assert notes.read_text() == "why I chose this model\n"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before

    notes.unlink()  # what export-best itself wrote is still replaced with --force
    again = _export_best(data, out, home, "--force")
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("foreign", ["model/extra/readme.md", "explain/my-figure.png", "submission.csv/"])
def test_export_best_force_names_the_first_file_it_did_not_write(tmp_path, foreign):
    out = tmp_path / "best"
    (out / "model").mkdir(parents=True)
    (out / "model" / "config.json").write_text("{}")  # an export's own file: replaced, not refused
    target = out / foreign.rstrip("/")
    if foreign.endswith("/"):
        target.mkdir(parents=True)  # a folder where export-best writes a file
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("mine")
    with pytest.raises(bundle.ExportError, match="not written by export-best"):
        bundle.check_out_dir(out, force=True)
    assert bundle.first_foreign_file(out) in (target, target.parent)


def test_export_best_out_a_symlink_to_an_empty_folder_is_one_line_before_any_prediction(trained, tmp_path,
                                                                                          monkeypatch):
    data, artifact = trained
    home, target, out = tmp_path / "home", tmp_path / "real-best", tmp_path / "best"
    _store_with_winner(home, artifact)
    target.mkdir()
    out.symlink_to(target)

    def no_prediction(*args, **kwargs):
        raise AssertionError("predicted before refusing --out")

    monkeypatch.setattr(bundle, "predict_split", no_prediction)
    one_line_error(_export_best(data, out, home), str(out), "symbolic link")
    assert out.is_symlink() and list(target.iterdir()) == []
