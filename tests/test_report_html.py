"""`covid-sweep report`: an HTML report of a real small sweep, rendered in headless Chromium.

The sweep: fake trials run by the real controller (real processes, store and W&B engine), some with recorded
phases, plus one real trained trial (conftest's `trained`: resnet18, one epoch on tiny images) promoted and
exported by the real export code, so the promoted-model section has a test score, ROC and Grad-CAM overlays.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.fakes import fake_controller
from PIL import Image

from covid_sweep.cli import main
from covid_sweep.inference.export import Provenance, export_bundle
from covid_sweep.inference.predict import NO_TTA
from covid_sweep.model.artifact import load_artifact
from covid_sweep.sweep.control.controller import new_sweep
from covid_sweep.sweep.control.promote import promote_in_store
from covid_sweep.sweep.store import Store

CONFIG = {"method": "random", "metric": {"name": "val_auc", "goal": "maximize"}, "run_cap": 5,
          "parameters": {"quality": {"min": 0.1, "max": 0.9}, "arch": {"values": ["alpha", "beta"]},
                         "flag": {"values": [False, True]}, "epochs": {"values": [2, 4]}, "epoch_s": {"value": 0.05}}}
PHASES = {"process_start": 0.4, "imports": 1.2, "data_fingerprint": 0.3, "fit": 2.5, "artifact_write": 0.2}


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("COVID_SWEEP_REQUIRE_CHROMIUM"):
        pytest.fail("chromium is required here (.ci/run installs it) but is not on PATH")
    return found


@pytest.fixture(scope="module")
def reported(trained, tmp_path_factory):
    """(report.html, the store, the sweep): 5 fake trials + 1 real promoted and exported trial."""
    data, artifact_dir = trained
    root = tmp_path_factory.mktemp("report")
    home = root / "home"
    store = Store(home / "sweeps.db")
    sweep = new_sweep(store, CONFIG, "fake.yaml", None, seed=4)
    fake_controller(store, sweep, home).run()
    for trial in store.trials(sweep.id)[:2]:
        store.add_phases(trial.id, PHASES)
    # named as the trained artifact records its trial ("t1"): the report checks the export is the promoted trial's
    real = store.add_trial(sweep.id, "t1", {"arch": "resnet18", "epochs": 1}, "test:1")
    store.mark_running(real.id, os.getpid())
    for row in json.loads((artifact_dir / "metrics.json").read_text())["history"]:
        store.log_epoch(real.id, row, "val_auc", "maximize")
    store.end_trial(real.id, "finished", artifact=str(artifact_dir))
    promote_in_store(store, sweep, store.trial(real.id))
    export = root / "export"
    export_bundle(load_artifact(artifact_dir), data, export,
                  Provenance(sweep_id=sweep.id, trial_id="t1", source="test", artifact=str(artifact_dir)), NO_TTA)
    out = root / "report.html"
    result = CliRunner().invoke(main, ["report", sweep.id, "--home", str(home), "--export", str(export),
                                       "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, store, sweep


def _plots(dom: str) -> list[str]:
    """The DOM of each plot container, in page order."""
    return dom.split('<div class="plot">')[1:]


def test_report_renders_every_plot_in_headless_chromium(reported, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed (.ci/run installs it)")
    out, store, sweep = reported
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=10000"]
    # the file must open with nothing else: no network, no server, no file beside it
    alone = tmp_path / "alone.html"
    shutil.copy(out, alone)
    dom = subprocess.run([*flags, "--dump-dom", alone.as_uri()], capture_output=True, text=True, timeout=120).stdout
    plots = _plots(dom)
    trials = store.trials(sweep.id)
    scored = [t for t in trials if t.best is not None]
    # parallel coordinates, curves, importance, timing, confusion matrix, ROC: each drawn as plotly SVG
    assert len(plots) == 6, [p[:200] for p in plots]
    assert all('class="main-svg"' in p for p in plots)
    parcoords, curves, importance, timing, confusion, roc = plots
    # epoch_s is the same in every fake trial, but the real trial has none: a missing value differs too
    varying = ["quality", "arch", "flag", "epochs", "epoch_s"]
    assert parcoords.count('class="axis-heading"') == len(varying) + 1  # + the metric's axis
    assert curves.count('class="legendtext"') == len(scored)
    assert curves.count('class="point"') == sum(t.epochs for t in scored)  # one marker per logged epoch
    assert importance.count('class="point"') >= 3  # bars: quality, flag, epochs, arch=... values
    assert "process_start" in timing and "fit" in timing
    assert confusion.count('class="heatmap-label"') == 4
    assert 'class="js-line"' in roc
    assert "alpha" in parcoords and "beta" in parcoords  # the categorical axis is labelled with its values
    text = re.sub(r"<[^>]+>", " ", dom)
    for trial in trials:
        assert trial.name in text  # full ids in the table
    assert "t1 [best]" in text
    assert "Phases not recorded for:" in text
    assert dom.count('src="data:image/png;base64,') >= 1  # Grad-CAM overlays, inlined


def test_report_screenshot_is_not_blank(reported, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed (.ci/run installs it)")
    out, _, _ = reported
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--virtual-time-budget=10000", "--window-size=1200,2400", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1200)
    # a page of text and plots, not a blank (or single-colour) page: many grey levels, a spread of values
    assert pixels.std() > 10 and len(np.unique(pixels)) > 50
    # the plots are drawn across the page, not only the title: the lower half has content too
    assert pixels[1200:].std() > 10


def test_report_html_is_self_contained(reported):
    out, _, _ = reported
    page = out.read_text()
    assert not re.search(r'<script[^>]+src="(?!data:)', page)  # no external script
    assert not re.search(r'<link[^>]+href="http', page) and 'src="http' not in page
    assert "plotly" in page.lower() and page.count("<table") >= 2
