"""Fault injection (issue 26, items 7 and 9): inputs a hostile or unlucky user hands over.

An artifact stripped of its manifest is refused when the version that wrote it writes one; a sweep name W&B
would refuse as a project name is refused by validate and sweep, naming the field, before any trial fails on
it; a name holding rich markup is shown as written, never parsed.
"""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import wandb
from click.testing import CliRunner
from helpers.cli import one_line_error
from helpers.fakes import METRIC
from safetensors.torch import load_file, save_file

from covid_sweep.cli import main
from covid_sweep.core import paths
from covid_sweep.model.artifact_files import MANIFEST_SINCE, written_with_manifest
from covid_sweep.sweep.store import Store
from covid_sweep.tracking.tracker import PROJECT_NAME_MAX, project_for, project_name_problem


def _predict(model, data, out):
    return CliRunner().invoke(main, ["predict", "--model", str(model), "--data", str(data), "--out", str(out)])


# ---- 7. an artifact whose manifest was deleted --------------------------------------------------

def _without_manifest(artifact, dest):
    model = shutil.copytree(artifact, dest)
    (model / "manifest.json").unlink()
    return model


def test_artifact_without_its_manifest_and_with_swapped_weights_is_refused_naming_the_manifest(trained, tmp_path):
    data, artifact = trained
    model = _without_manifest(artifact, tmp_path / "model")
    weights = load_file(str(model / "model.safetensors"))
    save_file({name: tensor.flip(0).contiguous() for name, tensor in weights.items()}, str(model / "model.safetensors"))
    assert json.loads((model / "metadata.json").read_text())["covid_sweep_version"]  # what says a manifest is due
    line = one_line_error(_predict(model, data, tmp_path / "sub.csv"), str(model / "manifest.json"), "missing")
    assert "metadata.json" in line
    assert not (tmp_path / "sub.csv").exists()


def test_artifact_from_before_manifests_still_loads(trained, tmp_path):
    data, artifact = trained
    model = _without_manifest(artifact, tmp_path / "model")
    metadata = json.loads((model / "metadata.json").read_text())
    del metadata["covid_sweep_version"]  # written before versions, and manifests, were recorded
    (model / "metadata.json").write_text(json.dumps(metadata))
    result = _predict(model, data, tmp_path / "sub.csv")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("version, due", [(None, False), ("0.0.9", False), (".".join(map(str, MANIFEST_SINCE)), True),
                                          ("0.1.0.dev3+g1234", True), ("0.2", True), ("1.0.0", True),
                                          ("not a version", True)])
def test_which_recorded_versions_must_have_a_manifest(version, due):
    metadata = {} if version is None else {"covid_sweep_version": version}
    assert written_with_manifest(metadata) is due


# ---- 9. sweep names: rich markup, and names W&B refuses as a project ------------------------------

def _finished_grid(home, name: str) -> str:
    """A stored grid sweep called `name` whose one trial finished: a resume has nothing left to launch."""
    store = Store(paths.store_path(home))
    store.create_sweep("sw1", name, "t.yaml", {"method": "grid", "metric": METRIC,
                                                "parameters": {"quality": {"values": [0.3]}}}, None, 0)
    trial = store.add_trial("sw1", "sw1-001", {"quality": 0.3}, owner=f"{socket.gethostname()}:1")
    store.mark_running(trial.id, pid=1)
    store.log_epoch(trial.id, {"epoch": 1, "val_auc": 0.3}, "val_auc", "maximize")
    store.end_trial(trial.id, "finished")
    store.close()
    return "sw1"


MARKUP_NAME = "x [/] [red]y[/red] [bold]"


def test_sweep_name_with_rich_markup_is_printed_as_written_by_status(tmp_path):
    home = tmp_path / "home"
    _finished_grid(home, MARKUP_NAME)
    result = CliRunner().invoke(main, ["status", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert MARKUP_NAME in result.output


def test_sweep_name_with_rich_markup_is_printed_as_written_at_the_end_of_sweep(tmp_path):
    home = tmp_path / "home"
    _finished_grid(home, MARKUP_NAME)
    result = CliRunner().invoke(main, ["sweep", "--resume", "sw1", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "search space exhausted" in result.output and MARKUP_NAME in result.output


BAD_NAMES = {"slash": "team/covid", "colon": "covid:v2", "hash": "run #3", "too-long": "x" * (PROJECT_NAME_MAX + 1)}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_sweep_name_wandb_refuses_as_a_project_is_one_line_from_validate(tmp_path, name):
    with pytest.raises(Exception, match="Invalid project name"):
        wandb.Settings(project=name)  # what every trial's wandb.init would have said
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: {json.dumps(name)}\nmethod: random\nmetric: {{name: val_auc, goal: maximize}}\n"
                     "parameters:\n  lr: {values: [0.001]}\n")
    one_line_error(CliRunner().invoke(main, ["validate", str(sweep)]), str(sweep), "name", "W&B project names")


def test_sweep_named_by_its_file_that_wandb_refuses_is_one_line_from_sweep_before_any_trial(tmp_path, tiny_data):
    sweep = tmp_path / "covid:v2.yaml"  # no `name:`: the file's stem names the sweep
    sweep.write_text("method: random\nmetric: {name: val_auc, goal: maximize}\nparameters:\n  lr: {values: [0.001]}\n")
    home = tmp_path / "home"
    result = CliRunner().invoke(main, ["sweep", str(sweep), "--data", str(tiny_data), "--home", str(home)])
    one_line_error(result, str(sweep), "'covid:v2'", "name:")
    assert not (home / "logs").exists()


@pytest.mark.parametrize("name", [*BAD_NAMES.values(), "fine-name"])
def test_a_stored_sweep_with_a_name_wandb_refuses_still_gets_a_project_wandb_accepts(name):
    project = project_for(name)
    assert project_name_problem(project) is None
    wandb.Settings(project=project)  # raises where W&B would refuse it
    assert (project == name) is (project_name_problem(name) is None)
