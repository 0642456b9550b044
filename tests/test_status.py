"""`covid-sweep status` as people read it (80 and 200 columns) and as scripts read it (--json)."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from covid_sweep.cli import main
from covid_sweep.sweep.control.controller import new_sweep
from covid_sweep.sweep.store import Store
from covid_sweep.sweep.views.status import status_view

BAYES = yaml.safe_load(open(__file__.rsplit("/tests/", 1)[0] + "/sweeps/bayes.yaml"))
BACKBONES = ["efficientnet_b0", "convnext_tiny", "densenet121", "resnet50"]


@pytest.fixture
def bayes_store(tmp_path):
    """bayes.yaml's 18 parameters; four trials that differ in backbone, lr and blur, one of them retried."""
    store = Store(tmp_path / "home" / "sweeps.db")
    sweep = new_sweep(store, BAYES, "bayes.yaml", "/data", seed=1)
    fixed = {name: spec.get("value", (spec.get("values") or [spec.get("min")])[0])
             for name, spec in BAYES["parameters"].items()}
    for i, backbone in enumerate(BACKBONES):
        params = {**fixed, "backbone": backbone, "lr": 1e-4 * (i + 1), "blur": i % 2 == 1}
        trial = store.add_trial(sweep.id, f"{sweep.id}-{i + 1:03d}", params, "host:1")
        store.mark_running(trial.id, 1)
        for epoch in range(1, i + 2):
            store.log_epoch(trial.id, {"epoch": epoch, "val_auc": 0.6 + 0.05 * i + 0.01 * epoch}, "val_auc", "maximize")
        store.end_trial(trial.id, "finished" if i else "stopped")
    store.add_trial(sweep.id, f"{sweep.id}-001-r2", {**fixed, "backbone": "resnet50", "lr": 1e-4, "blur": False},
                    "host:1", retry_of=1)
    store.set_alias(sweep.id, "best", 4)
    return store, sweep


def _render(store, sweep, width, all_params=False) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(status_view(store.snapshot(sweep.id), width, all_params))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 200])
def test_status_shows_full_ids_and_only_the_varying_parameters(bayes_store, width):
    store, sweep = bayes_store
    text = _render(store, sweep, width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text  # nothing is cut: no ellipsis anywhere
    for trial in store.trials(sweep.id):
        assert trial.name in text
    for backbone in BACKBONES:
        assert backbone in text
    assert f"{sweep.id}-004 [best]" in text
    # the three parameters that vary are shown; the 15 equal ones are named once, below the table
    same_line = " ".join(text[text.index("same in every trial"):].split())
    assert "input_size=224" in same_line and "optimizer=adamw" in same_line and "epochs=60" in same_line
    assert "backbone=" not in same_line and "lr=" not in same_line and "blur=" not in same_line
    table_part = text[:text.index("same in every trial")]
    assert "optimizer" not in table_part and "input_size" not in table_part


def test_status_is_one_column_per_parameter_when_it_fits_and_compact_when_not(bayes_store):
    store, sweep = bayes_store
    wide = _render(store, sweep, 200)
    header = next(line for line in wide.splitlines() if "trial" in line and "state" in line)
    assert "backbone" in header and "lr" in header and "blur" in header
    narrow = _render(store, sweep, 80)
    assert "backbone=efficientnet_b0" in narrow and "parameters" in narrow


def test_all_params_shows_every_parameter(bayes_store):
    store, sweep = bayes_store
    text = _render(store, sweep, 200, all_params=True)
    assert "same in every trial" not in text
    for name in BAYES["parameters"]:
        assert name in text
    flat = " ".join(_render(store, sweep, 80, all_params=True).split())
    assert "warmup_epochs=0" in flat and "weight_decay=1e-05" in flat


def test_status_cli_json_is_stable_and_complete(bayes_store, tmp_path):
    store, sweep = bayes_store
    result = CliRunner().invoke(main, ["status", sweep.id, "--json", "--home", str(tmp_path / "home")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert sorted(data) == ["sweep", "trials"]
    assert data["sweep"]["id"] == sweep.id and data["sweep"]["metric"] == "val_auc"
    assert data["sweep"]["varying_params"] == ["backbone", "lr", "blur"]
    assert data["sweep"]["promoted"] == f"{sweep.id}-004"
    assert data["sweep"]["states"] == {"finished": 3, "pending": 1, "stopped": 1}
    ids = [t["id"] for t in data["trials"]]
    assert ids[:4] == [f"{sweep.id}-004", f"{sweep.id}-003", f"{sweep.id}-002", f"{sweep.id}-001"]  # best first
    first = data["trials"][0]
    assert sorted(first) == ["artifact", "best", "best_epoch", "ended", "epochs", "error", "id", "params", "phases",
                             "promoted", "retry_of", "seconds", "started", "state"]
    assert first["promoted"] and first["best"] == pytest.approx(0.79) and first["epochs"] == 4
    assert len(first["params"]) == len(BAYES["parameters"])
    retry = next(t for t in data["trials"] if t["id"].endswith("-r2"))
    assert retry["retry_of"] == f"{sweep.id}-001" and retry["seconds"] is None


def test_status_cli_all_params_flag(bayes_store, tmp_path):
    store, sweep = bayes_store
    plain = CliRunner().invoke(main, ["status", sweep.id, "--home", str(tmp_path / "home")])
    every = CliRunner().invoke(main, ["status", sweep.id, "--all-params", "--home", str(tmp_path / "home")])
    assert plain.exit_code == every.exit_code == 0, plain.output + every.output
    assert "same in every trial" in plain.output and "same in every trial" not in every.output
    assert "weight_decay" in every.output


def _sweep_of(home, n_trials: int):
    from helpers.sweeps import add_trial, new_store

    store = new_store(home)
    for i in range(n_trials):
        state = ("finished", "running", "failed")[i % 3]
        add_trial(store, f"sw1-{i + 1:03d}", state, [0.5 + 0.001 * i, 0.6 + 0.001 * i], None, params={"lr": i})
    store.set_alias("sw1", "best", 1)
    store.close()


def _queries(monkeypatch, action) -> int:
    """The SQL statements the store sends while action() runs."""
    from covid_sweep.sweep.store.sqlite import SQLiteBackend

    sent = []
    real = SQLiteBackend.execute
    monkeypatch.setattr(SQLiteBackend, "execute", lambda self, sql, params=(): sent.append(sql) or real(self, sql, params))
    action()
    return len(sent)


def test_status_and_the_report_read_a_sweep_with_one_query_set_however_many_trials(tmp_path, monkeypatch):
    """Issue 28: every view reads one snapshot of the sweep, not a query per trial."""
    from covid_sweep.sweep.store import Store
    from covid_sweep.sweep.views.live import live_state
    from covid_sweep.sweep.views.report_data import from_store

    counts = {}
    for n in (4, 40):
        home = tmp_path / f"h{n}"
        _sweep_of(home, n)
        runner = CliRunner()
        status = _queries(monkeypatch, lambda: runner.invoke(main, ["status", "sw1", "--home", str(home)]))
        as_json = _queries(monkeypatch, lambda: runner.invoke(main, ["status", "sw1", "--json", "--home", str(home)]))
        store = Store(home / "sweeps.db", create=False)
        report = _queries(monkeypatch, lambda: from_store(store, "sw1"))
        sweep = store.sweep("sw1")
        live = _queries(monkeypatch, lambda: live_state(store, sweep, 40, 2, started=0.0))
        assert len(from_store(store, "sw1").trials) == n
        running = live_state(store, sweep, 40, 2, started=0.0).running
        assert len(running) == (n + 1) // 3  # with the metric of their last epoch:
        assert all(r.metric == pytest.approx(0.6 + 0.001 * (int(r.name[-3:]) - 1)) for r in running)
        store.close()
        counts[n] = (status, as_json, report, live)
    assert counts[4] == counts[40], counts
    status, as_json, report, live = counts[40]
    assert report <= 5 and live <= 5, counts  # the snapshot itself: sweep, trials, aliases, epochs, clock
