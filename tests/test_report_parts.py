"""The report's parts without a browser: parameter importance, the W&B reading, the promoted-model notes."""

from __future__ import annotations

import random
import time

import pytest
from click.testing import CliRunner
from helpers.sweeps import MAXIMIZE, add_trial, new_store

from covid_sweep.cli import main
from covid_sweep.core.errors import UserError
from covid_sweep.sweep.views.importance import FEW_TRIALS, parameter_importance
from covid_sweep.sweep.views.report_data import from_store, from_wandb
from covid_sweep.sweep.views.report_html import render
from covid_sweep.sweep.views.report_model import promoted_model


def test_importance_finds_the_parameter_that_drives_the_metric_and_its_sign():
    rng = random.Random(0)
    params = [{"lr": rng.uniform(0, 1), "noise": rng.uniform(0, 1), "backbone": rng.choice(["a", "b"]),
               "fixed": 3} for _ in range(40)]
    metric = [1 - p["lr"] + (0.3 if p["backbone"] == "b" else 0) + 0.01 * rng.random() for p in params]
    result = parameter_importance(params, metric, ["lr", "noise", "backbone", "fixed"], "val_auc")
    rows = {r.feature: r for r in result.rows}
    assert set(rows) == {"lr", "noise", "backbone=a", "backbone=b"}  # a categorical is one-hot
    assert result.rows[0].feature == "lr" and rows["lr"].correlation < -0.7  # lower lr, better metric
    assert rows["backbone=b"].correlation > 0 and rows["backbone=a"].correlation < 0
    assert rows["noise"].importance < rows["lr"].importance
    assert sum(r.importance for r in result.rows) == pytest.approx(1.0)
    assert "fixed" not in rows  # equal in every trial: left out
    assert "40 scored trials" in result.note and "mostly noise" not in result.note


def test_importance_says_when_trials_are_too_few():
    params = [{"lr": x} for x in (0.1, 0.2)]
    assert parameter_importance(params, [0.5, 0.6], ["lr"]).rows == []
    assert "Not computed: 2 scored trial(s)" in parameter_importance(params, [0.5, 0.6], ["lr"]).note
    few = [{"lr": x / 10} for x in range(FEW_TRIALS - 1)]
    result = parameter_importance(few, [x / 10 for x in range(FEW_TRIALS - 1)], ["lr"])
    assert result.rows and "mostly noise" in result.note
    unscored = parameter_importance([{"lr": 1}, {"lr": 2}, {"lr": 3}, {"lr": 4}], [None, 0.5, None, 0.7], ["lr"])
    assert unscored.rows == [] and "2 scored" in unscored.note


def _store_with_trials(tmp_path, promote=True):
    store = new_store(tmp_path / "home", {**MAXIMIZE, "method": "random", "parameters": {"lr": {"min": 0.1, "max": 1.0}}})
    for i, lr in enumerate((0.2, 0.5, 0.9)):
        name = f"sw1-00{i + 1}"
        # the store's clock has millisecond resolution: a trial must last long enough to have a time
        add_trial(store, name, "finished", [lr], tmp_path / "gone" / name, params={"lr": lr},
                  epoch_time=2.0, before_end=lambda: time.sleep(0.01))
    if promote:
        store.set_alias("sw1", "best", 3)
    return store


def test_promoted_model_without_artifact_or_export_says_what_is_missing(tmp_path):
    record = from_store(_store_with_trials(tmp_path), "sw1")
    model = promoted_model(record)
    assert model.trial_id == "sw1-003" and model.validation == {}
    assert any("artifact" in n and "not here" in n for n in model.notes)
    assert any("no --export DIR given" in n for n in model.notes)
    page = render(record, model)
    assert "sw1-003 [best]" in page and "no --export DIR given" in page
    assert promoted_model(from_store(_store_with_trials(tmp_path / "b", promote=False), "sw1")) is None


def test_export_of_another_trial_is_refused(tmp_path):
    record = from_store(_store_with_trials(tmp_path), "sw1")
    export = tmp_path / "export"
    (export / "model").mkdir(parents=True)
    (export / "model" / "metadata.json").write_text('{"trial": "other-007"}')
    with pytest.raises(UserError, match="holds trial other-007, but the sweep's promoted trial is sw1-003"):
        promoted_model(record, export)
    (export / "model" / "metadata.json").write_text("{not json")
    with pytest.raises(UserError, match="metadata.json: not readable JSON"):
        promoted_model(record, export)


def test_report_cli_on_an_unknown_sweep_is_one_line(tmp_path):
    _store_with_trials(tmp_path)
    result = CliRunner().invoke(main, ["report", "nope", "--home", str(tmp_path / "home"), "--out",
                                       str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "no sweep 'nope'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()


def test_timing_without_phases_uses_the_history(tmp_path):
    page = render(from_store(_store_with_trials(tmp_path), "sw1"), None)
    assert "Phases not recorded for: sw1-003, sw1-002, sw1-001" in page
    assert "epoch_time, phases not recorded" in page  # the bar's legend says where its numbers came from
    assert "GPU/CPU busy: not recorded by these trials." in page


# ---- a W&B sweep, through wandb_api, against fake Api objects (no server) ---------------------------------

class _Artifact:
    def __init__(self, aliases):
        self.type, self.aliases, self.qualified_name = "model", list(aliases), "ent/proj/m:v0"


class _Run:
    def __init__(self, id, state, lr, values, best=False):
        self.id, self.name, self.state, self.path = id, f"run-{id}", state, ["ent", "proj", id]
        self.config = {"lr": lr, "data_dir": "/data"}
        self.summary_metrics = {"val_auc": max(values) if values else None, "_runtime": 12.5,
                                "split": "grouped holdout (patients + near-duplicates)"}
        self._rows = [{"_step": i, "epoch": i + 1, "val_auc": v} for i, v in enumerate(values)] + [{"_step": 99}]
        self._artifacts = [_Artifact(["latest", "best"] if best else ["latest"])]

    def scan_history(self):
        return iter(self._rows)

    def logged_artifacts(self):
        return iter(self._artifacts)


class _Sweep:
    config = {"name": "bayes", "method": "bayes", "metric": {"name": "val_auc", "goal": "maximize"}, "run_cap": 4,
              "parameters": {"lr": {"min": 0.001, "max": 0.1}}}

    def __init__(self):
        self.runs = [_Run("a1", "finished", 0.01, [0.6, 0.7]), _Run("b2", "finished", 0.02, [0.8, 0.75], best=True),
                     _Run("c3", "crashed", 0.05, [])]


class _Api:
    def sweep(self, path):
        assert path == "ent/proj/sw9"
        return _Sweep()


def test_a_wandb_sweep_reads_into_the_same_record():
    record = from_wandb(_Api(), "ent/proj/sw9")
    assert [t.id for t in record.trials] == ["b2", "a1", "c3"]  # best first, unscored last
    best = record.trials[0]
    assert best.promoted and best.best == pytest.approx(0.8) and best.best_epoch == 1 and best.epochs == 2
    assert best.params == {"lr": 0.02} and best.seconds == 12.5  # only the sweep's parameters
    assert record.trials[2].best is None and record.trials[2].state == "crashed"
    assert record.objective_split == "grouped holdout (patients + near-duplicates)"
    page = render(record, promoted_model(record))
    assert "Sweep ent/proj/sw9" in page and "b2 [best]" in page


def test_report_help_loads_neither_plotly_nor_the_training_stack():
    import json
    import subprocess
    import sys

    code = ("import json, sys\nfrom covid_sweep.cli import main\ntry:\n    main(['report', '--help'], standalone_mode=False)\n"
            "finally:\n    print(json.dumps(sorted(m for m in ('plotly', 'sklearn', 'torch') if m in sys.modules)), "
            "file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []


def test_gradcam_captions_say_what_the_file_name_encodes():
    from covid_sweep.sweep.views.report_model import gradcam_caption

    assert gradcam_caption("wrong-non-covid-p0.92-64") == "wrong: 64 is non-covid, P(COVID) = 0.92"
    assert gradcam_caption("right-covid-p0.97-scan_10") == "right: scan_10 is covid, P(COVID) = 0.97"
    assert gradcam_caption("something-else") == "something-else"


def test_an_export_without_test_labels_or_overlays_says_so(tmp_path):
    record = from_store(_store_with_trials(tmp_path), "sw1")
    export = tmp_path / "export"
    (export / "model").mkdir(parents=True)
    (export / "model" / "metadata.json").write_text('{"trial": "sw1-003", "validation": {"split": "grouped holdout"}}')
    (export / "model" / "metrics.json").write_text('{"best_epoch": 1, "threshold": 0.4, "best": {"val_auc": 0.9}}')
    model = promoted_model(record, export, data_dir=tmp_path)  # the trial's own artifact is gone: the export's copy
    assert model.validation == {"val_auc": 0.9} and model.threshold == 0.4 and model.split == "grouped holdout"
    assert model.test is None and model.roc is None and model.gradcam == []
    assert any(f"no {tmp_path / 'test_labels.csv'}: no test score" in n for n in model.notes)
    assert any("no Grad-CAM overlays" in n for n in model.notes)
    assert any("no data folder recorded" in n for n in promoted_model(record, export).notes)
