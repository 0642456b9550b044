"""Fault injection (issue 26, items 10 and 11): a store that cannot be written, and a sweep whose trials all fail.

A read-only HOME (a read-only mount, or an immutable sweeps.db) is emulated with a read-only file and folder.
Root ignores file permissions, and tests often run as root in containers: there the command runs without the
capabilities that let root write anyway (CAP_DAC_OVERRIDE, CAP_FOWNER), so permissions bind it as they bind
any user. The commands run in processes of their own, as a user runs them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.fakes import METRIC

from covid_sweep.cli import main
from covid_sweep.core import paths
from covid_sweep.sweep.store import Store

ROOT = Path(__file__).resolve().parents[1]
CLI = "from covid_sweep.cli import main; main(prog_name='covid-sweep')"
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_FOWNER = 24, 1, 3


def _bound_by_permissions() -> None:
    """preexec_fn: root loses, for the program it runs, the capabilities to write what permissions forbid."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          preexec_fn=_bound_by_permissions if os.geteuid() == 0 else None)


def _covid_sweep(*args: str) -> subprocess.CompletedProcess:
    return _run("-c", CLI, *args)


@pytest.fixture
def read_only(tmp_path):
    """make(path, folder=True): path (and its folder) read-only for the commands this module runs; writable after."""
    made: list[Path] = []

    def make(path: Path, folder: bool = True) -> Path:
        path.chmod(0o444)
        if folder:
            path.parent.chmod(0o555)
        made.append(path)
        probe = _run("-c", f"open({str(path)!r}, 'a')")
        if probe.returncode == 0:
            pytest.skip("file permissions do not bind this user here (no way to drop root's capabilities)")
        return path

    yield make
    for path in made:
        path.parent.chmod(0o755)
        path.chmod(0o644)


def _one_line_failure(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stdout + done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _store_with_winner(home: Path, artifact: Path | None = None) -> Path:
    store = Store(paths.store_path(home))
    store.create_sweep("sw1", "ro", "t.yaml", {"method": "random", "metric": METRIC,
                                               "parameters": {"lr": {"values": [0.001]}}}, None, 0)
    trial = store.add_trial("sw1", "sw1-001", {"lr": 1e-3}, owner="test:1")
    store.mark_running(trial.id, pid=1)
    store.log_epoch(trial.id, {"epoch": 1, "val_auc": 0.8}, "val_auc", "maximize")
    store.end_trial(trial.id, "finished", artifact=str(artifact) if artifact else None)
    store.close()
    return paths.store_path(home)


# ---- 10. a read-only HOME, an immutable sweeps.db ------------------------------------------------

def test_read_only_home_is_read_by_status_and_report(tmp_path, read_only):
    home = tmp_path / "home"
    db = read_only(_store_with_winner(home))
    before = db.read_bytes()
    status = _covid_sweep("status", "--home", str(home))
    assert status.returncode == 0, status.stdout + status.stderr
    assert "sw1-001" in status.stdout and "finished" in status.stdout
    report = _covid_sweep("report", "--home", str(home), "--out", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stdout + report.stderr
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in home.iterdir()) == ["sweeps.db"] and db.read_bytes() == before


def test_read_only_home_refuses_export_best_in_one_line_before_predicting(trained, tmp_path, read_only):
    data, artifact = trained
    home, out = tmp_path / "home", tmp_path / "best"
    db = read_only(_store_with_winner(home, artifact))
    done = _covid_sweep("export-best", "sw1", "--data", str(data), "--out", str(out), "--home", str(home))
    _one_line_failure(done, str(db), "not writable", "export-best records")
    assert not out.exists()


@pytest.mark.parametrize("folder", [True, False], ids=["file-and-folder", "file-only"])
def test_immutable_sweeps_db_refuses_resume_in_one_line_saying_it_is_not_writable(tmp_path, read_only, folder):
    home = tmp_path / "home"
    db = read_only(_store_with_winner(home), folder=folder)
    line = _one_line_failure(_covid_sweep("sweep", "--resume", "sw1", "--home", str(home)), str(db), "not writable")
    assert "not a readable" not in line


def test_write_to_a_read_only_store_opened_for_reading_is_one_line_naming_it(tmp_path, read_only):
    db = read_only(_store_with_winner(tmp_path / "home"))
    code = ("import sys; from covid_sweep.sweep.store import Store; from covid_sweep.core.errors import UserError\n"
            "store = Store(sys.argv[1], create=False)\n"  # as a trial or export-best opens it
            "print(store.sweep('sw1').name)\n"
            "try:\n    store.set_alias('sw1', 'best', 1)\nexcept UserError as err:\n    print('refused:', err)\n")
    done = _run("-c", code, str(db))
    assert done.returncode == 0, done.stderr
    name, refused = done.stdout.splitlines()
    assert name == "ro" and refused.startswith(f"refused: {db}: sweep store not writable"), done.stdout


# ---- 11. a sweep stopped by trials that all fail -------------------------------------------------

@pytest.fixture
def short_tmpdir():
    """A TMPDIR with a short path: the fork server's socket is made in it (at most 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_sweep_stopped_by_trials_failing_before_their_first_epoch_exits_non_zero(tmp_path, short_tmpdir):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("method: random\nmetric: {name: val_auc, goal: maximize}\n"
                     "parameters:\n  lr: {min: 0.0001, max: 0.01}\n")
    broken = tmp_path / "no-data"  # no train.csv: every trial fails while loading it
    broken.mkdir()
    done = _run("-c", CLI, "sweep", str(sweep), "--data", str(broken), "--home", str(tmp_path / "home"),
                "--max-early-failures", "2", env={"TMPDIR": str(short_tmpdir), "WANDB_MODE": "offline"})
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 trials in a row failed before their first epoch" in done.stdout
    assert done.stdout.count("│ failed │") == 2 and "resume with:" in done.stdout  # the table is printed all the same


def test_sweep_help_documents_its_exit_status():
    help_text = " ".join(CliRunner().invoke(main, ["sweep", "--help"]).output.split())
    assert "3 when it stopped because --max-early-failures trials in a row failed" in help_text
