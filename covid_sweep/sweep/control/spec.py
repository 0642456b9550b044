"""Sweep YAMLs: W&B's own schema (the `sweeps` package) plus a check that every value is a valid TrialConfig value."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml

from covid_sweep.core.config import METRIC_GOALS, ConfigError, TrialConfig, build_config
from covid_sweep.core.errors import UserError
from covid_sweep.tracking.tracker import project_name_problem

with warnings.catch_warnings():
    # sweeps 0.3.0 emits pydantic deprecation warnings on import
    warnings.simplefilter("ignore")
    from sweeps.config.cfg import validator as _schema_validator

    import sweeps


class SweepSpecError(UserError, ValueError):
    """A sweep YAML that W&B or TrialConfig would reject; the message names the file and parameter."""


def load_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"{path}: sweep file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepSpecError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SweepSpecError(f"{path}: a sweep config must be a mapping, got {type(data).__name__}")
    return data


def _candidate_values(spec: dict) -> list[Any]:
    """Values a parameter can take that TrialConfig must accept: listed values, or a range's ends."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    if "min" in spec and "max" in spec:
        return [spec["min"], spec["max"]]
    if "mu" in spec:
        return [spec["mu"]]
    return []


def check_parameters(config: dict, source: str) -> None:
    fields = TrialConfig.model_fields
    for name, spec in config.get("parameters", {}).items():
        if name not in fields:
            raise SweepSpecError(f"{source}: parameter {name!r} is not a TrialConfig field (valid: {', '.join(fields)})")
        if "parameters" in spec:
            raise SweepSpecError(f"{source}: parameter {name!r}: nested parameters are not supported")
        for value in _candidate_values(spec):
            try:
                build_config({name: value})
            except ConfigError as err:
                raise SweepSpecError(f"{source}: parameter {name!r} can take {value!r}, "
                                     f"which TrialConfig rejects: {err}") from None
    metric = config.get("metric", {}).get("name")
    if metric and metric not in METRIC_GOALS:
        raise SweepSpecError(f"{source}: metric.name {metric!r} is not logged per epoch; use one of {', '.join(METRIC_GOALS)}")
    monitor_spec = config.get("parameters", {}).get("monitor", {"value": TrialConfig.model_fields["monitor"].default})
    if metric and monitor_spec.get("value") != metric:
        # trials must keep (and early-stop on) the epoch that is best by the metric the sweep ranks them by
        raise SweepSpecError(f"{source}: metric.name {metric!r} differs from the trials' early-stop monitor "
                             f"{monitor_spec.get('value', monitor_spec)!r}; add the parameter `monitor: {{value: {metric}}}`")
    goal = config.get("metric", {}).get("goal", "minimize")  # W&B's default
    if metric and goal != METRIC_GOALS[metric]:
        # the store would rank another epoch (and trial) than the one each trial kept as its best
        raise SweepSpecError(f"{source}: metric.goal {goal!r} contradicts {metric!r}, which is better when "
                             f"{'higher' if METRIC_GOALS[metric] == 'maximize' else 'lower'}; "
                             f"use `goal: {METRIC_GOALS[metric]}`")


def schema_violations(config: dict) -> list[str]:
    """W&B's own messages, each prefixed with where in the YAML it applies."""
    located = {}
    for error in _schema_validator.iter_errors(config):
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        located[error.message] = f"{where}: {error.message}"
    return [located.get(m, m) for m in sweeps.schema_violations_from_proposed_config(config)]


def check_name(config: dict, source: str) -> None:
    """The sweep's name (`name:`, else the file's stem, as the store records it) is every trial's W&B project: a
    name W&B refuses would fail every trial, on every --resume too."""
    given = config.get("name")
    name = given or Path(source).stem
    problem = project_name_problem(name)
    if problem is None:
        return
    if given:
        raise SweepSpecError(f"{source}: name {name!r} {problem}")
    raise SweepSpecError(f"{source}: the sweep's name, its file name {name!r} (no `name:` is set), {problem}; "
                         "set `name:`")


def check_shape(config: dict, source: str) -> None:
    """Every parameter is a mapping: W&B's schema check raises a bare ValueError on one that is not."""
    parameters = config.get("parameters", {})
    if not isinstance(parameters, dict):
        raise SweepSpecError(f"{source}: parameters must be a mapping of name: spec, got {type(parameters).__name__}")
    for name, spec in parameters.items():
        if not isinstance(spec, dict):
            raise SweepSpecError(f"{source}: parameter {name!r} must be a mapping such as {{value: ...}}, "
                                 f"{{values: [...]}} or {{min: ..., max: ...}}, got {spec!r}")


def validate(config: dict, source: str = "sweep") -> dict:
    """Return W&B's filled-in config, or raise SweepSpecError with the schema's own messages."""
    check_shape(config, source)
    violations = schema_violations(config)
    if violations:
        raise SweepSpecError(f"{source}: " + "; ".join(violations))
    check_parameters(config, source)
    check_name(config, source)
    filled = dict(sweeps.SweepConfig(config))
    if filled.get("method") == "bayes" and "metric" not in filled:
        raise SweepSpecError(f"{source}: method bayes needs a metric section")
    return filled


def load_spec(path: Path) -> dict:
    return validate(load_yaml(path), source=str(path))


def _possible(config: dict, name: str) -> list[Any]:
    """The values parameter `name` can take in the sweep (its TrialConfig default when the sweep does not set it)."""
    spec = config.get("parameters", {}).get(name)
    if spec is None:
        return [TrialConfig.model_fields[name].default]
    return _candidate_values(spec)


def pretrained_backbones(config: dict) -> list[str]:
    """The backbones whose ImageNet weights a trial of this sweep may load: none unless pretrained can be true."""
    if not any(build_config({"pretrained": value}).pretrained for value in _possible(config, "pretrained")):
        return []
    return [build_config({"backbone": value}).backbone for value in _possible(config, "backbone")]
