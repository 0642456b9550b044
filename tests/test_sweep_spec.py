from pathlib import Path

import pytest
from click.testing import CliRunner

from covid_sweep.cli import main
from covid_sweep.sweep.control.spec import SweepSpecError, load_spec, validate

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


def base(**parameters):
    return {"method": "bayes", "metric": {"name": "val_auc", "goal": "maximize"},
            "parameters": parameters or {"lr": {"min": 1e-4, "max": 1e-2}}}


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweeps_are_valid(path):
    config = load_spec(path)
    assert config["metric"]["name"] == "val_auc"
    for name, spec in config["parameters"].items():
        values = spec.get("values", [])
        if any(v in (False, 0, 0.0, "") for v in values):
            # sweeps 0.3.0 encodes a falsy category listed later as the first value
            assert values[0] in (False, 0, 0.0, ""), f"{path.name}: {name}: list the falsy value first"


def test_required_sweep_files_exist():
    assert {"bayes.yaml", "random.yaml", "grid-backbones.yaml", "smoke.yaml"} <= {p.name for p in SWEEPS}


@pytest.mark.parametrize("config, message", [
    ({**base(), "method": "genetic"}, "method"),
    ({"method": "bayes", "parameters": {"lr": {"values": [0.1]}}}, "metric"),
    ({**base(), "run_cap": -1}, "run_cap"),
    ({**base(lr={"distribution": "log_uniform_values", "min": "a", "max": 1}),}, "lr"),
])
def test_schema_errors_use_wandb_messages(config, message):
    with pytest.raises(SweepSpecError) as err:
        validate(config, "s.yaml")
    assert str(err.value).startswith("s.yaml: ") and message in str(err.value)


@pytest.mark.parametrize("parameters, message", [
    ({"backbone": {"values": ["resnet18", "alexnet9000"]}}, "parameter 'backbone' can take 'alexnet9000'"),
    ({"lr": {"distribution": "uniform", "min": -0.1, "max": 0.1}}, "parameter 'lr' can take -0.1"),
    ({"input_size": {"values": [224, 16]}}, "parameter 'input_size' can take 16"),
    ({"hflip": {"values": [False, "sometimes"]}}, "parameter 'hflip' can take 'sometimes'"),
    ({"learning_rate": {"value": 0.1}}, "parameter 'learning_rate' is not a TrialConfig field"),
])
def test_bad_parameter_values_are_named(parameters, message):
    with pytest.raises(SweepSpecError, match=message.replace("(", r"\(")):
        validate(base(**parameters), "s.yaml")


def test_metric_must_be_one_we_log():
    config = base()
    config["metric"] = {"name": "accuracy", "goal": "maximize"}
    with pytest.raises(SweepSpecError, match="metric.name 'accuracy'"):
        validate(config, "s.yaml")


def test_validate_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: bayes\nmetric: {name: val_auc, goal: maximize}\n"
                   "parameters:\n  backbone: {values: [resnet18, lenet]}\n")
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 1 and "parameter 'backbone' can take 'lenet'" in result.output
    assert "Traceback" not in result.output
    ok = CliRunner().invoke(main, ["validate", str(SWEEPS[0])])
    assert ok.exit_code == 0 and "valid" in ok.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: [bayes\n")
    result = CliRunner().invoke(main, ["validate", str(broken)])
    assert result.exit_code == 1 and "not valid YAML" in result.output


def test_sweep_metric_must_be_the_trials_monitor():
    config = base()
    config["metric"] = {"name": "val_loss", "goal": "minimize"}
    with pytest.raises(SweepSpecError, match="add the parameter `monitor: {value: val_loss}`"):
        validate(config, "s.yaml")
    config["parameters"]["monitor"] = {"value": "val_loss"}
    assert validate(config, "s.yaml")["metric"]["name"] == "val_loss"
