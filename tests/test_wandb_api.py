"""The W&B seam (covid_sweep.tracking.wandb_api) against fake Api objects: no W&B server, no network.

The fakes mimic exactly the attributes and methods of wandb 0.31's public API that the seam uses:
api.sweep/run/artifact, sweep.config/runs/best_run(), run.id/name/path/state/summary_metrics/
logged_artifacts(), artifact.qualified_name/type/version/aliases/metadata/save()/link()/download()/get_entry(), entry.download().
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from covid_sweep.core.config import build_config
from covid_sweep.data.layout import DataError
from covid_sweep.inference.export import ExportError
from covid_sweep.inference.submission import read_submission
from covid_sweep.model.artifact import write_artifact
from covid_sweep.model.networks import build_model
from covid_sweep.sweep.control.promote import PromotionError, export_best
from covid_sweep.tracking import wandb_api
from covid_sweep.tracking.tracker import api_key_configured
from covid_sweep.tracking.wandb_api import WandbError

SWEEP = "ent/proj/swp1"


class FakeEntry:
    def __init__(self, source: Path):
        self.source = source

    def download(self, root=None):
        shutil.copyfile(self.source, Path(root) / self.source.name)
        return str(Path(root) / self.source.name)


class FakeArtifact:
    def __init__(self, qualified_name: str, type: str = "model", aliases=("latest",), source: Path | None = None):
        self.qualified_name, self.type, self.aliases, self.source = qualified_name, type, list(aliases), source
        self.version = qualified_name.rpartition(":")[2]
        self.metadata: dict = {}
        self.saved: list[list[str]] = []
        self.links: list[tuple[str, list[str]]] = []
        self.downloads: list[str] = []

    def save(self):
        self.saved.append(list(self.aliases))

    def link(self, target_path, aliases=None):
        self.links.append((target_path, list(aliases or [])))
        return self

    def get_entry(self, name):
        if self.source is None or not (self.source / name).is_file():
            raise KeyError(f"Path not contained in artifact: {name}")
        return FakeEntry(self.source / name)

    def download(self, root=None):
        self.downloads.append(str(root))
        shutil.copytree(self.source, root, dirs_exist_ok=True)
        return str(root)


class FakeRun:
    def __init__(self, id, state, summary, artifacts=(), name=None):
        self.id, self.state, self.name = id, state, name or f"run-{id}"
        self.summary_metrics = dict(summary)
        self.artifacts = list(artifacts)
        self.entity, self.project = "ent", "proj"

    @property
    def path(self):  # a list, as wandb's Run.path
        return [self.entity, self.project, self.id]

    def logged_artifacts(self):
        return iter(self.artifacts)


class FakeSweep:
    def __init__(self, config, runs):
        self.config, self.runs = config, runs

    def best_run(self):
        """As W&B: all the sweep's runs ordered by the summary metric, whatever their state."""
        metric = self.config.get("metric", {})
        name, goal = metric.get("name"), metric.get("goal", "minimize")
        scored = [r for r in self.runs if isinstance(r.summary_metrics.get(name), (int, float))]
        ordered = sorted(scored, key=lambda r: r.summary_metrics[name], reverse=goal == "maximize")
        return (ordered + [r for r in self.runs if r not in scored] or [None])[0]


class FakeApi:
    def __init__(self, sweeps: dict[str, FakeSweep]):
        self.sweeps = sweeps
        self.calls: list[tuple] = []

    def sweep(self, path):
        self.calls.append(("sweep", path))
        if path not in self.sweeps:
            raise ValueError(f"Could not find sweep {path}")
        return self.sweeps[path]

    def _runs(self):
        return [run for sweep in self.sweeps.values() for run in sweep.runs]

    def run(self, path):
        self.calls.append(("run", path))
        return next(r for r in self._runs() if "/".join(r.path) == path)

    def artifact(self, name, type=None):
        self.calls.append(("artifact", name))
        for run in self._runs():
            for artifact in run.artifacts:
                if artifact.qualified_name == name:
                    return artifact
        import wandb

        raise wandb.errors.CommError(f"artifact {name} not found")


MAX_CONFIG = {"method": "bayes", "metric": {"name": "val_auc", "goal": "maximize"}}


def run(id, state, value, trial_state=None, artifacts=None, **summary):
    summary = {"val_auc": value, **summary}
    if trial_state:
        summary["trial_state"] = trial_state
    if artifacts is None:
        artifacts = [FakeArtifact(f"ent/proj/run-{id}-history:v0", type="wandb-history"),
                     FakeArtifact(f"ent/proj/model-{id}:v0")]
    return FakeRun(id, state, summary, artifacts)


def api_with(*runs, config=MAX_CONFIG) -> FakeApi:
    return FakeApi({SWEEP: FakeSweep(config, list(runs))})


# ---- picking the run ---------------------------------------------------------------------------------

def test_best_run_is_taken_when_it_finished():
    api = api_with(run("a", "finished", 0.7), run("b", "finished", 0.9), run("c", "failed", None))
    best = wandb_api.best_finished_run(api, SWEEP)
    assert best == wandb_api.RunInfo(path="ent/proj/b", id="b", name="run-b", state="finished", trial_state=None,
                                     metric="val_auc", goal="maximize", value=0.9)


def test_better_unfinished_runs_are_never_promoted():
    api = api_with(
        run("crashed", "crashed", 0.99), run("running", "running", 0.98), run("failed", "failed", 0.97),
        run("killed", "killed", 0.96),
        run("hyperband", "finished", 0.95, trial_state="stopped"),  # the agent exits 0 when stopped
        run("ok1", "finished", 0.8, trial_state="finished"), run("ok2", "finished", 0.9),
        run("noscore", "finished", None),
    )
    assert wandb_api.best_finished_run(api, SWEEP).id == "ok2"


def test_minimize_goal_and_nested_summary_values_are_ignored():
    config = {"method": "random", "metric": {"name": "val_loss", "goal": "minimize"}}
    api = api_with(FakeRun("a", "finished", {"val_loss": 0.4}), FakeRun("b", "finished", {"val_loss": 0.2}),
                   FakeRun("c", "failed", {"val_loss": 0.1}), FakeRun("d", "finished", {"val_loss": {"min": 0.01}}),
                   config=config)
    assert wandb_api.best_finished_run(api, SWEEP).id == "b"


def test_no_finished_run_is_a_clear_error():
    api = api_with(run("a", "running", 0.9), run("b", "finished", 0.8, trial_state="stopped"))
    with pytest.raises(WandbError, match=r"ent/proj/swp1: no finished run with a val_auc value to promote "
                                         r"\(a: running, b: finished/stopped\)"):
        wandb_api.best_finished_run(api, SWEEP)


def test_sweep_without_metric_and_bad_paths():
    with pytest.raises(WandbError, match="has no metric"):
        wandb_api.best_finished_run(api_with(run("a", "finished", 1.0), config={"method": "grid"}), SWEEP)
    for bad in ("a/b/c/d", "a//c", "/"):
        with pytest.raises(WandbError, match="expected entity/project/sweep_id"):
            wandb_api.check_sweep_path(bad)
    assert wandb_api.is_wandb_path(SWEEP) and not wandb_api.is_wandb_path("9a82275d")


def test_api_errors_become_one_line_user_errors():
    with pytest.raises(WandbError, match=r"W&B: sweep ent/proj/other: ValueError: Could not find sweep ent/proj/other"):
        wandb_api.best_finished_run(api_with(), "ent/proj/other")
    with pytest.raises(WandbError, match=r"W&B: artifact ent/proj/x:v0: CommError: artifact ent/proj/x:v0 not found"):
        wandb_api.promote_artifact(api_with(), "ent/proj/x:v0")


def test_bugs_in_our_code_are_not_dressed_as_w_and_b_errors():
    def bug():
        raise TypeError("unexpected keyword")

    with pytest.raises(TypeError, match="unexpected keyword"):
        wandb_api._call("sweep ent/proj/x", bug)


@pytest.mark.skipif(api_key_configured(), reason="a W&B key is configured on this machine")
def test_connect_without_a_key_says_how_to_log_in():
    with pytest.raises(WandbError, match="WANDB_API_KEY"):
        wandb_api.connect()


# ---- the artifact: find, download, promote -----------------------------------------------------------

def test_model_artifact_is_the_runs_last_model():
    older, newer = FakeArtifact("ent/proj/model-a:v0"), FakeArtifact("ent/proj/model-a:v1", aliases=["latest", "v1"])
    api = api_with(run("a", "finished", 0.9, artifacts=[older, FakeArtifact("ent/proj/t:v0", type="run_table"), newer]))
    info = wandb_api.model_artifact(api, "ent/proj/a")
    assert info == wandb_api.ArtifactInfo(name="ent/proj/model-a:v1", type="model", version="v1", aliases=("latest", "v1"))
    with pytest.raises(WandbError, match="ent/proj/b: logged no artifact of type 'model'"):
        wandb_api.model_artifact(api_with(run("b", "finished", 0.9, artifacts=[])), "ent/proj/b")


def test_promote_adds_the_alias_once_and_links_into_the_registry():
    winner = FakeArtifact("ent/proj/model-b:v0")
    api = api_with(run("b", "finished", 0.9, artifacts=[winner]))
    done = wandb_api.promote_artifact(api, winner.qualified_name, registry="covid-ct")
    assert winner.aliases == ["latest", "best"] and winner.saved == [["latest", "best"]]
    assert winner.links == [("wandb-registry-model/covid-ct", ["best"])]
    assert done == ["alias 'best' on ent/proj/model-b:v0", "linked into wandb-registry-model/covid-ct as 'best'"]
    wandb_api.promote_artifact(api, winner.qualified_name)  # already aliased: no second save, no link
    assert len(winner.saved) == 1 and len(winner.links) == 1
    assert wandb_api.registry_path("wandb-registry-model/x") == "wandb-registry-model/x"
    with pytest.raises(WandbError, match="empty collection"):
        wandb_api.registry_path(" ")


def test_demote_takes_best_off_the_other_runs_models():
    old = FakeArtifact("ent/proj/model-a:v0", aliases=["latest", "best"])
    new = FakeArtifact("ent/proj/model-b:v0", aliases=["best"])
    table = FakeArtifact("ent/proj/t:v0", type="run_table", aliases=["best"])
    api = api_with(run("a", "finished", 0.8, artifacts=[old, table]), run("b", "finished", 0.9, artifacts=[new]))
    assert wandb_api.demote_others(api, SWEEP, keep=new.qualified_name) == [old.qualified_name]
    assert old.aliases == ["latest"] and old.saved == [["latest"]]
    assert new.aliases == ["best"] and table.aliases == ["best"] and not new.saved


def test_download_returns_the_local_folder(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text("{}")
    art = FakeArtifact("ent/proj/model-a:v0", source=source)
    got = wandb_api.download_artifact(api_with(run("a", "finished", 1.0, artifacts=[art])), art.qualified_name, tmp_path / "dl")
    assert got == tmp_path / "dl" and (got / "config.json").read_text() == "{}"


# ---- export-best from a W&B sweep, through the seam ---------------------------------------------------

@pytest.fixture
def wandb_sweep(tmp_path):
    """A W&B sweep whose winner's model artifact is a real (untrained) resnet18 artifact, and test images."""
    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = [f"{i}.png" for i in range(4)]
    for name in names:
        cv2.imwrite(str(data / "test" / name), rng.integers(0, 255, (40, 40), dtype=np.uint8))
    (data / "sample_submission.csv").write_text("file_name,COVID\n" + "".join(f"{n},0\n" for n in names))
    config = build_config({"backbone": "resnet18", "input_size": 32, "device": "cpu"})
    source = write_artifact(tmp_path / "logged", build_model("resnet18").state_dict(), config,
                            {"threshold": 0.5, "best": {"epoch": 1, "val_auc": 0.9}, "monitor": "val_auc"},
                            {"data_fingerprint": "feedbeef", "trial": "b"})
    previous = FakeArtifact("ent/proj/model-a:v0", aliases=["latest", "best"])
    winner = FakeArtifact("ent/proj/model-b:v0", source=source)
    api = api_with(run("a", "finished", 0.8, artifacts=[previous]), run("b", "finished", 0.9, artifacts=[winner]),
                   run("c", "crashed", 0.99))
    return api, data, previous, winner


def test_export_best_from_wandb(wandb_sweep, tmp_path):
    api, data, previous, winner = wandb_sweep
    out = tmp_path / "out"
    result = export_best(SWEEP, data, out, home=tmp_path / "home", registry="covid-ct", api=api)
    assert result.provenance.trial_id == "b" and result.provenance.artifact == "ent/proj/model-b:v0"
    assert winner.downloads == [str(tmp_path / "home" / "artifacts" / "wandb" / "ent" / "proj" / "model-b-v0")]
    assert "best" in winner.aliases and winner.links == [("wandb-registry-model/covid-ct", ["best"])]
    assert previous.aliases == ["latest"] and result.previous == "ent/proj/model-a:v0"
    assert read_submission(out / "submission.csv").ids == ("0.png", "1.png", "2.png", "3.png")
    card = (out / "model_card.md").read_text()
    assert "`ent/proj/swp1`" in card and "feedbeef" in card and "wandb-registry-model/covid-ct" in card


def test_a_failed_wandb_export_promotes_nothing(wandb_sweep, tmp_path):
    api, data, previous, winner = wandb_sweep
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_best(SWEEP, data, out, home=tmp_path / "home", registry="covid-ct", api=api)
    assert not api.calls  # refused before asking W&B anything
    (data / "sample_submission.csv").write_text("file_name,COVID\nmissing.png,0\n")
    with pytest.raises(DataError, match="missing.png"):
        export_best(SWEEP, data, out, home=tmp_path / "home", registry="covid-ct", api=api, force=True)
    assert winner.aliases == ["latest"] and not winner.saved and not winner.links
    assert previous.aliases == ["latest", "best"]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_export_best_from_wandb_skips_the_best_run_when_its_train_images_were_replaced(wandb_sweep, tmp_path):
    """Issue 26 item 6 on the W&B path: run a scored lower, but b was trained on train images since replaced."""
    from covid_sweep.sweep.control.data_versions import current_fingerprint

    api, data, previous, winner = wandb_sweep
    (data / "train").mkdir()
    for i in range(4):
        cv2.imwrite(str(data / "train" / f"{i}.png"), np.full((40, 40), 40 * i, np.uint8))
    (data / "train.csv").write_text("file_name,COVID\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(4)))
    current = current_fingerprint(data)
    a_model = FakeArtifact("ent/proj/model-a:v0", source=winner.source)
    api.sweeps[SWEEP] = FakeSweep(MAX_CONFIG, [
        run("a", "finished", 0.8, artifacts=[a_model], data_fingerprint=current),
        run("b", "finished", 0.9, artifacts=[winner], data_fingerprint="feedbeef")])
    result = export_best(SWEEP, data, tmp_path / "out", home=tmp_path / "home", api=api)
    assert result.provenance.trial_id == "a" and "best" in a_model.aliases and "best" not in winner.aliases
    assert "were left out (train/ changed during or after the sweep): b" in result.choice.note

    api.sweeps[SWEEP] = FakeSweep(MAX_CONFIG, [run("b", "finished", 0.9, artifacts=[winner], data_fingerprint="feedbeef")])
    with pytest.raises(PromotionError, match="every finished run was trained on other train images"):
        export_best(SWEEP, data, tmp_path / "none", home=tmp_path / "home", api=api)
