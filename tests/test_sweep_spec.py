import re
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


def test_a_missing_or_non_mapping_sweep_file_is_named_in_one_line(tmp_path):
    with pytest.raises(SweepSpecError, match=r"^.*gone\.yaml: sweep file not found$"):
        load_spec(tmp_path / "gone.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- method: bayes\n")
    with pytest.raises(SweepSpecError, match=r"list\.yaml: a sweep config must be a mapping, got list$"):
        load_spec(listed)


@pytest.mark.parametrize("parameters, message", [
    ({"lr": {"distribution": "normal", "mu": -1.0, "sigma": 0.1}}, "parameter 'lr' can take -1.0"),
    ({"lr": {"parameters": {"inner": {"value": 0.1}}}}, "parameter 'lr': nested parameters are not supported"),
    ({"lr": 0.1}, r"parameter 'lr' must be a mapping such as \{value: ...\}, \{values: \[...\]\} or \{min: ..., max: ...\}, "
                  "got 0.1$"),
])
def test_a_normal_distribution_is_checked_at_its_mean_and_nesting_and_bare_values_are_refused(parameters, message):
    with pytest.raises(SweepSpecError, match=message):
        validate(base(**parameters), "s.yaml")


def test_parameters_that_are_not_a_mapping_are_one_line(tmp_path):
    with pytest.raises(SweepSpecError, match="s.yaml: parameters must be a mapping of name: spec, got list$"):
        validate({**base(), "parameters": ["lr"]}, "s.yaml")
    flat = tmp_path / "flat.yaml"
    flat.write_text("method: random\nmetric: {name: val_auc, goal: maximize}\nparameters:\n  lr: 0.1\n")
    result = CliRunner().invoke(main, ["validate", str(flat)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "flat.yaml: parameter 'lr' must be a mapping" in result.output


def _refusal(config: dict) -> str:
    with pytest.raises(SweepSpecError) as err:
        validate(config, "s.yaml")
    assert str(err.value).startswith("s.yaml: ")  # every refusal names the file it is about
    return str(err.value)


def test_schema_messages_say_where_in_the_yaml_they_apply():
    message = _refusal(base(lr={"distribution": "log_uniform_values", "min": "a", "max": 1}))
    assert message.startswith("s.yaml: parameters.lr: {")
    assert _refusal({"method": "random"}) == "s.yaml: `parameters` is required unless `scheduler.search_space` is set."


def test_unknown_fields_and_metrics_list_the_valid_ones():
    assert re.search(r"is not a TrialConfig field \(valid: [a-z_0-9]+, [a-z_0-9]+, ", _refusal(base(learning_rate={"value": 1})))
    config = base()
    config["metric"] = {"name": "accuracy", "goal": "maximize"}
    assert re.search(r"is not logged per epoch; use one of val_[a-z]+, val_[a-z]+", _refusal(config))


def test_a_metric_the_monitor_does_not_follow_names_the_monitor_as_the_sweep_wrote_it():
    config = base()
    config["metric"] = {"name": "val_loss", "goal": "minimize"}
    assert "differs from the trials' early-stop monitor 'val_auc';" in _refusal(config)  # TrialConfig's default
    config["parameters"]["monitor"] = {"values": ["val_auc", "val_loss"]}
    assert "early-stop monitor {'values': ['val_auc', 'val_loss']};" in _refusal(config)


@pytest.mark.parametrize("metric, message", [
    ({"name": "val_auc", "goal": "minimize"}, "metric.goal 'minimize' contradicts 'val_auc', which is better when higher; "
                                              "use `goal: maximize`"),
    ({"name": "val_auc"}, "metric.goal 'minimize' contradicts 'val_auc', which is better when higher; "
                          "use `goal: maximize`"),  # W&B's default goal
    ({"name": "val_loss", "goal": "maximize"}, "metric.goal 'maximize' contradicts 'val_loss', which is better when lower; "
                                               "use `goal: minimize`"),
])
def test_a_goal_against_the_metric_is_refused_with_the_right_one(metric, message):
    config = base(monitor={"value": metric["name"]})
    config["metric"] = metric
    assert _refusal(config) == f"s.yaml: {message}"


def test_a_name_w_and_b_refuses_is_named_whether_written_or_taken_from_the_file(tmp_path):
    assert _refusal({**base(), "name": "covid/ct"}).startswith("s.yaml: name 'covid/ct' contains '/'; W&B project")
    with pytest.raises(SweepSpecError) as err:
        validate(base(), "a#b.yaml")
    assert str(err.value).startswith("a#b.yaml: the sweep's name, its file name 'a#b' (no `name:` is set), contains '#';")
    assert str(err.value).endswith("; set `name:`")
    assert validate({**base(), "name": "covid-ct"}, "a#b.yaml")["name"] == "covid-ct"  # a good name: the file's is unused


def test_every_schema_violation_is_listed_and_a_nameless_source_is_called_sweep():
    config = {**base(), "method": "genetic", "run_cap": -1}
    assert _refusal(config) == ("s.yaml: method: 'genetic' is not one of ['bayes', 'random', 'grid', 'custom']; "
                                "run_cap: -1 is less than or equal to the minimum of 0")
    with pytest.raises(SweepSpecError, match=r"^sweep: \(top level\): 'method' is a required property$"):
        validate({"metric": {"name": "val_auc", "goal": "maximize"}, "parameters": {"lr": {"value": 0.1}}})
