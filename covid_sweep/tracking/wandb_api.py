"""The thin seam to W&B's public API (`wandb.Api()`): every call export-best makes to a W&B server.

Functions take the Api object and plain values and return plain values (dataclasses, paths), so the
rest of covid_sweep never touches a wandb object. Tested against fake Api objects only: no W&B server
runs here.

Attributes and methods used (wandb 0.31):
    api.sweep(path) -> .config, .runs, .best_run()
    run.id, run.name, run.path (list), run.state, run.summary_metrics (dict), run.logged_artifacts()
    api.artifact(name) -> .qualified_name, .type, .version, .aliases (list), .save(), .link(target, aliases),
                          .download(root)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from covid_sweep.core.errors import UserError
from covid_sweep.core.goals import rank_key
from covid_sweep.core.states import TrialState

BEST = "best"
REGISTRY_PREFIX = "wandb-registry-model/"
# the agent entrypoint writes this summary key (Tracker.record_trial_state): a hyperband-stopped trial
# still exits 0 ("finished" on W&B)
TRIAL_STATE_KEY = "trial_state"


class WandbError(UserError, RuntimeError):
    """W&B could not be reached, or the sweep, run or artifact asked for is not there."""


@dataclass(frozen=True)
class RunInfo:
    path: str  # entity/project/run_id
    id: str
    name: str
    state: str
    trial_state: str | None
    metric: str | None
    goal: str
    value: float | None
    data_fingerprint: str | None = None  # of the train images the run was trained on (its summary)


@dataclass(frozen=True)
class ArtifactInfo:
    name: str  # qualified: entity/project/name:vN
    type: str
    version: str | None
    aliases: tuple[str, ...]


def _wandb():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import wandb
    return wandb


def _api_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ValueError, LookupError]
    try:
        errors.append(_wandb().errors.Error)
    except Exception:  # noqa: BLE001 - wandb missing or broken: the other error types still apply
        pass
    try:
        import requests

        errors.append(requests.RequestException)
    except ImportError:
        pass
    return tuple(errors)


def _call(what: str, func: Callable[..., Any], *args, **kwargs) -> Any:
    """One API call; the errors a server, a typo or a missing login cause become one-line WandbErrors."""
    try:
        return func(*args, **kwargs)
    except _api_errors() as err:
        raise WandbError(f"W&B: {what}: {type(err).__name__}: {err}") from None


def connect(timeout: int = 30):
    """wandb.Api(); needs WANDB_API_KEY (or `wandb login`) and WANDB_BASE_URL for a self-hosted server."""
    wandb = _wandb()
    return _call("connect (set WANDB_API_KEY or run `wandb login`; WANDB_BASE_URL for a self-hosted server)",
                 wandb.Api, timeout=timeout)


def is_wandb_path(sweep: str) -> bool:
    """`entity/project/sweep_id` (or `project/sweep_id`) is a W&B sweep; a bare id is the embedded store's."""
    return "/" in sweep


def check_sweep_path(sweep: str) -> str:
    parts = sweep.strip("/").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise WandbError(f"W&B sweep {sweep!r}: expected entity/project/sweep_id")
    return "/".join(parts)


def registry_path(collection: str) -> str:
    """`covid-ct` -> `wandb-registry-model/covid-ct`; a path with a slash is taken as given."""
    collection = collection.strip()
    if not collection:
        raise WandbError("--registry: empty collection name")
    return collection if "/" in collection else REGISTRY_PREFIX + collection


def _metric_goal(config: dict) -> tuple[str | None, str]:
    metric = (config or {}).get("metric") or {}
    return metric.get("name"), metric.get("goal", "minimize")


def _number(value) -> float | None:
    if isinstance(value, dict):  # summaries of logged series can be {"max": .., "min": .., "last": ..}
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def run_info(run, metric: str | None, goal: str) -> RunInfo:
    summary = dict(run.summary_metrics or {})
    path = run.path if isinstance(run.path, str) else "/".join(run.path)
    return RunInfo(path=path, id=run.id, name=run.name, state=run.state,
                   trial_state=summary.get(TRIAL_STATE_KEY), metric=metric, goal=goal,
                   value=_number(summary.get(metric)) if metric else None,
                   data_fingerprint=summary.get("data_fingerprint") if isinstance(summary.get("data_fingerprint"), str) else None)


def promotable(run: RunInfo) -> bool:
    """Finished on W&B, not stopped by hyperband (the agent exits 0 then too), and scored."""
    return run.state == "finished" and run.trial_state in (None, TrialState.FINISHED) and run.value is not None


def best_finished_run(api, sweep_path: str) -> RunInfo:
    """The best finished run of the sweep by its metric and goal: `best_run()` when that one is finished,
    else the best of the sweep's finished runs. Running, failed, crashed, killed or stopped runs never."""
    sweep_path = check_sweep_path(sweep_path)
    sweep = _call(f"sweep {sweep_path}", api.sweep, sweep_path)
    metric, goal = _metric_goal(sweep.config)
    if metric is None:
        raise WandbError(f"W&B sweep {sweep_path}: its config has no metric; cannot tell the best run")
    best = _call(f"best run of sweep {sweep_path}", sweep.best_run)
    if best is not None:
        info = run_info(best, metric, goal)
        if promotable(info):
            return info
    runs = [run_info(run, metric, goal) for run in _call(f"runs of sweep {sweep_path}", lambda: list(sweep.runs))]
    finished = [run for run in runs if promotable(run)]
    if not finished:
        states = ", ".join(f"{r.id}: {r.state}{f'/{r.trial_state}' if r.trial_state else ''}" for r in runs) or "no runs"
        raise WandbError(f"W&B sweep {sweep_path}: no finished run with a {metric} value to promote ({states})")
    return min(finished, key=lambda r: rank_key(r.value, goal))  # first listed wins a tie


def finished_runs(api, sweep_path: str) -> list[RunInfo]:
    """The sweep's promotable runs, in the order W&B lists them: what its choice was made among."""
    sweep_path = check_sweep_path(sweep_path)
    sweep = _call(f"sweep {sweep_path}", api.sweep, sweep_path)
    metric, goal = _metric_goal(sweep.config)
    runs = [run_info(run, metric, goal) for run in _call(f"runs of sweep {sweep_path}", lambda: list(sweep.runs))]
    return [run for run in runs if promotable(run)]


# what a trial recorded beside its weights: enough to replay the sweep's choice without the weights
RECORD_FILES = ("manifest.json", "metrics.json", "metadata.json", "val_predictions.npz")


def download_record(api, name: str, root: Path) -> Path:
    """The record files of model artifact `name` into root (those it has: older artifacts lack predictions)."""
    artifact = _call(f"artifact {name}", api.artifact, name)
    Path(root).mkdir(parents=True, exist_ok=True)
    for file in RECORD_FILES:
        try:
            entry = artifact.get_entry(file)
        except KeyError:
            continue
        _call(f"download {file} of {name}", entry.download, root=str(root))
    return Path(root)


def model_artifact(api, run_path: str) -> ArtifactInfo:
    """The run's logged model artifact (the last one, if it logged several)."""
    run = _call(f"run {run_path}", api.run, run_path)
    models = [a for a in _call(f"artifacts of run {run_path}", lambda: list(run.logged_artifacts())) if a.type == "model"]
    if not models:
        raise WandbError(f"W&B run {run_path}: logged no artifact of type 'model'")
    artifact = models[-1]
    return ArtifactInfo(name=artifact.qualified_name, type=artifact.type, version=getattr(artifact, "version", None),
                        aliases=tuple(artifact.aliases))


def download_artifact(api, name: str, root: Path) -> Path:
    artifact = _call(f"artifact {name}", api.artifact, name)
    Path(root).mkdir(parents=True, exist_ok=True)
    return Path(_call(f"download {name}", artifact.download, root=str(root)))


def promote_artifact(api, name: str, alias: str = BEST, registry: str | None = None,
                     metadata: dict | None = None) -> list[str]:
    """Alias `alias` on the artifact (and `metadata` merged into its metadata, e.g. the selection-corrected
    estimate), and a link into the registry collection carrying the same alias."""
    done = []
    artifact = _call(f"artifact {name}", api.artifact, name)
    if metadata:
        artifact.metadata.update(metadata)
    if alias not in artifact.aliases or metadata:
        if alias not in artifact.aliases:
            artifact.aliases.append(alias)
        _call(f"save aliases of {name}", artifact.save)
    done.append(f"alias '{alias}' on {name}" + (f" (metadata: {', '.join(metadata)})" if metadata else ""))
    if registry:
        target = registry_path(registry)
        _call(f"link {name} into {target}", artifact.link, target, aliases=[alias])
        done.append(f"linked into {target} as '{alias}'")
    return done


def demote_others(api, sweep_path: str, keep: str, alias: str = BEST) -> list[str]:
    """Take `alias` off the model artifacts of the sweep's other runs: each trial logs its own artifact
    collection, where W&B does not move an alias by itself."""
    sweep = _call(f"sweep {sweep_path}", api.sweep, check_sweep_path(sweep_path))
    removed = []
    for run in _call(f"runs of sweep {sweep_path}", lambda: list(sweep.runs)):
        for artifact in _call(f"artifacts of run {run.id}", lambda r=run: list(r.logged_artifacts())):
            if artifact.type != "model" or artifact.qualified_name == keep or alias not in artifact.aliases:
                continue
            artifact.aliases.remove(alias)
            _call(f"save aliases of {artifact.qualified_name}", artifact.save)
            removed.append(artifact.qualified_name)
    return removed


# ---- reading a whole sweep (the HTML report) ---------------------------------------------------------

@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    state: str
    trial_state: str | None
    params: dict  # the run's values of the sweep's parameters
    history: list  # the rows it logged with an `epoch` (one per epoch), in order
    summary_value: float | None  # the metric's summary value (the best, as the agent writes it)
    seconds: float | None  # W&B's `_runtime`
    promoted: bool  # one of its model artifacts carries alias `best`


@dataclass(frozen=True)
class SweepRuns:
    name: str
    config: dict
    metric: str | None
    goal: str
    split: str | None  # what the metric was measured on, as the runs' summaries name it
    runs: list


def _run_record(run, parameters: dict, metric: str | None, goal: str) -> RunRecord:
    info = run_info(run, metric, goal)
    config = dict(getattr(run, "config", None) or {})
    history = [dict(row) for row in _call(f"history of run {info.path}", lambda: list(run.scan_history()))
               if "epoch" in row]
    promoted = any(a.type == "model" and BEST in a.aliases
                   for a in _call(f"artifacts of run {info.path}", lambda: list(run.logged_artifacts())))
    return RunRecord(id=info.id, name=info.name, state=info.state, trial_state=info.trial_state,
                     params={k: config[k] for k in parameters if k in config}, history=history,
                     summary_value=info.value, seconds=_number(_summary(run).get("_runtime")), promoted=promoted)


def _summary(run) -> dict:
    return dict(run.summary_metrics or {})


def sweep_runs(api, sweep_path: str) -> SweepRuns:
    """Everything the report shows of a W&B sweep: config, and for each run its parameters, per-epoch history,
    state, runtime and whether it holds the promoted model."""
    sweep_path = check_sweep_path(sweep_path)
    sweep = _call(f"sweep {sweep_path}", api.sweep, sweep_path)
    config = dict(sweep.config or {})
    metric, goal = _metric_goal(config)
    runs = _call(f"runs of sweep {sweep_path}", lambda: list(sweep.runs))
    records = [_run_record(run, config.get("parameters", {}), metric, goal) for run in runs]
    splits = sorted({str(s) for run in runs if (s := _summary(run).get("split"))})
    return SweepRuns(name=config.get("name") or sweep_path.rsplit("/", 1)[-1], config=config, metric=metric, goal=goal,
                     split="; ".join(splits) or None, runs=records)
