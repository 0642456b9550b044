"""benchmarks/pipeline.py runs end to end on a tiny data set and reports every column (never timings)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pipeline.py"


def load_pipeline():
    spec = importlib.util.spec_from_file_location("benchmark_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.timeout(300)  # a hang guard: the run (every section, two sweeps) takes 1-2 min on 2 shared cores
def test_pipeline_benchmark_reports_every_column(tiny_data, tmp_path, capsys):
    bench = load_pipeline()
    out = tmp_path / "bench.json"
    result = bench.main([
        "--data", str(tiny_data), "--device", "cpu", "--backbones", "resnet18", "--sizes", "32",
        "--batch", "8", "--epochs", "1", "--warmup-steps", "1", "--limit-steps", "1", "--rounds", "1",
        "--trial-backbones", "resnet18", "--trial-size", "32", "--trial-batch", "8", "--trial-epochs", "1",
        "--sweep-trials", "1", "--agents", "1", "--sweep-size", "32", "--sweep-batch", "8", "--sweep-epochs", "1",
        "--sweep-backbones", "resnet18", "--wandb-mode", "disabled", "--no-seed-wandb", "--json", str(out),
    ])
    saved = json.loads(out.read_text())
    assert saved["settings"]["batch"] == 8
    assert set(saved["section_s"]) == {"data", "throughput", "augmentation", "trial", "sweep"}
    assert all(positive(v) for v in saved["section_s"].values())
    printed = capsys.readouterr().out
    assert "  (throughput: " in printed and "  (sweep: " in printed
    assert positive(saved["process_warmup_s"]) and "warmed the process" in printed  # --rounds 1: warmed first
    for title in ("Training throughput", "Augmentation alone", "Trial wall time", "Where each trial's time went",
                  "Sweep throughput", "device: cpu"):
        assert title in printed

    assert result["device"]["type"] == "cpu" and result["device"]["name"]
    [row] = result["throughput"]
    assert "error" not in row
    for column in bench.THROUGHPUT_COLUMNS:
        assert column in row, column
        if column not in ("backbone", "cache_build_s", "covid_augment_on"):
            assert positive(row[column]), (column, row[column])
    assert row["cache_build_s"] >= 0 and row["covid_augment_on"] in ("cpu", "device")

    for aug in result["augmentation"]:
        for column in bench.AUGMENT_COLUMNS:
            assert column in aug, column
            if column.endswith("img_s"):
                assert positive(aug[column]), (column, aug[column])
    assert [a["toggles"] for a in result["augmentation"]] == ["hflip,rotate", ",".join(bench.DEVICE_TOGGLES)]

    [trial] = result["trial"]
    assert "error" not in trial, trial.get("error")
    for column in bench.TRIAL_COLUMNS:
        assert column in trial, column
        if column not in ("backbone", "phases"):
            assert positive(trial[column]), (column, trial[column])
    assert set(trial["phases"]) == set(bench.PHASES)

    sweep = result["sweep"]
    assert isinstance(sweep, list), sweep
    assert [r["runner"] for r in sweep] == ["covid-sweep sweep", "covid-sweep sweep --warm-workers", "seed-style loop"]
    for r in sweep:
        for column in bench.SWEEP_COLUMNS:
            assert column in r, column
            if column != "runner":
                assert positive(r[column]), (column, r[column])
        assert r["finished"] == r["trials"] == 1
    assert positive(sweep[0]["median_outside_fit_s"])
    # the seed-style loop (and the warm-worker sweep) ran exactly the trials the sweep ran
    assert sweep[0]["params"] == sweep[1]["params"] == sweep[2]["params"]


def test_the_gpu_preset_leaves_the_warm_worker_sweep_to_an_option():
    bench = load_pipeline()
    assert bench.parse_args(["--quick"]).sweep_warm is True
    assert bench.parse_args(["--gpu-default"]).sweep_warm is False
    assert bench.parse_args(["--gpu-default", "--sweep-warm"]).sweep_warm is True
    assert bench.parse_args(["--no-sweep-warm"]).sweep_warm is False


def test_first_step_reports_every_stage_for_each_backbone(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_first_step", SCRIPT.with_name("first_step.py"))
    first_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(first_step)
    out = tmp_path / "first_step.json"
    result = first_step.main(["--backbones", "resnet18,googlenet", "--size", "32", "--batch", "4", "--device", "cpu",
                              "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [stage for stage, _ in result["process"]] == ["context", "libraries"]
    per_model = ["build", "augment 1", "augment 2", "step 1", "step 2", "step 3", "eval 1", "eval 2"]
    assert list(result["backbones"]) == ["resnet18", "googlenet"]
    for stages in result["backbones"].values():
        assert [stage for stage, _ in stages] == per_model
        assert all(positive(seconds) for _, seconds in stages)
    assert "googlenet  step 1" in capsys.readouterr().out
