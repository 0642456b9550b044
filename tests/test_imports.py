"""Which modules an entry point loads: commands that need no model (--help, validate) must not import the
training stack (a newcomer's first `covid-sweep --help` should answer at once, not after torch loads), and
inference must not import training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "albumentations", "cv2", "wandb", "sklearn")

PROBE = """
import json, sys
from covid_sweep.cli import main
try:
    main({argv!r}, standalone_mode=False)
finally:
    print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def _heavy_modules_after(argv: list[str]) -> list[str]:
    code = PROBE.format(argv=argv, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["validate", "--help"], ["validate", str(ROOT / "sweeps" / "bayes.yaml")]],
                         ids=["help", "validate-help", "validate"])
def test_light_commands_do_not_import_the_training_stack(argv):
    assert _heavy_modules_after(argv) == []


def test_import_of_the_cli_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, covid_sweep.cli; print('torch' in sys.modules)"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_inference_does_not_import_training():
    code = ("import sys, covid_sweep.inference.predict, covid_sweep.inference.explain, covid_sweep.sweep.control.promote, "
            "covid_sweep.inference.export; "
            "print('covid_sweep.training.train' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_the_package_turns_off_albumentations_update_check():
    # albumentations reads it at import: the package must set it before any of its modules import albumentations
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    code = "import os, covid_sweep.training.augment; print(os.environ.get('NO_ALBUMENTATIONS_UPDATE'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.stdout.strip() == "1", done.stderr


def test_the_benchmark_trial_and_sweep_path_needs_nothing_the_gpu_machine_lacks():
    # benchmarks/device_sim blocks, as on the lent GPU machine, the packages that only fetch-data, the report, a
    # PostgreSQL store or the tests use; an eager import of one on this path breaks benchmarks/gpu_check.sh there
    sim = ROOT / "benchmarks" / "device_sim"
    code = """
import importlib, sys
from covid_sweep.sweep.control.launcher import AGENT_PRELOAD
path = ["covid_sweep.cli", "covid_sweep.cli.sweep_commands", "covid_sweep.sweep.control.controller",
        "covid_sweep.sweep.control.engine",
        "covid_sweep.agent", "covid_sweep.training.train", "covid_sweep.data.layout", "albumentations.pytorch",
        *AGENT_PRELOAD]
for name in path:
    importlib.import_module(name)
try:
    import plotly  # noqa: F401
except ModuleNotFoundError:
    print("ok", len(path))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(sim), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[:1] == ["ok"], "the block did not apply (benchmarks/device_sim/sitecustomize.py)"
