"""benchmarks/gpu_check.sh, the one command for a lent GPU machine, and device_prep.sh, which readies it: they pass
shellcheck, and the checks that stop a run early (no CUDA, no .device) stop it before it spends device minutes.
The whole script's dry run (minutes) is in benchmarks/README.md, "On a lent GPU"."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from test_docker import INSTALL_HINT, which

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.sh"


def run_script(script: Path, out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OUT": str(out), **env})


@pytest.mark.parametrize("name", ["gpu_check.sh", "device_prep.sh"])
def test_shellcheck(name):
    shellcheck = which("shellcheck")
    if not shellcheck:
        pytest.skip(f"shellcheck not installed ({INSTALL_HINT})")
    result = subprocess.run([shellcheck, str(BENCHMARKS / name)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the stop on a machine without CUDA")
def test_without_cuda_it_stops_before_the_benchmark(tmp_path):
    done = run_script(SCRIPT, tmp_path, GPU_CHECK_SETUP="0")
    assert done.returncode == 1
    assert "torch sees no CUDA device" in done.stderr and "--device cpu" in done.stderr
    assert not (tmp_path / "gpu.log").exists()


def test_without_device_bundle_it_says_how_to_make_one(tmp_path):
    # a tree without .device/: the script's own folder decides where it looks
    (tmp_path / "tree" / "benchmarks").mkdir(parents=True)
    script = Path(shutil.copy(SCRIPT, tmp_path / "tree" / "benchmarks"))
    done = run_script(script, tmp_path / "out", "--device", "cpu")
    assert done.returncode == 1
    assert ".device/setup.sh not found" in done.stderr and "benchmarks/device_prep.sh" in done.stderr
    assert not (tmp_path / "out" / "gpu.log").exists()
