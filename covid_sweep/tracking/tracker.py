"""The one module that talks to wandb: init, per-epoch logs, summaries, plots, model artifacts."""

from __future__ import annotations

import math
import netrc
import os
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Literal, Mapping
from urllib.parse import urlparse

import numpy as np
import yaml

from covid_sweep.core.config import ConfigError
from covid_sweep.core.phases import PhaseTimer
from covid_sweep.tracking.wandb_api import TRIAL_STATE_KEY

Mode = Literal["online", "offline", "disabled"]
DEFAULT_PROJECT = "covid-sweep"
SWEEP_PARAM_PATH_ENV = "WANDB_SWEEP_PARAM_PATH"
# the summary key that says why a trial failed (its W&B state only says that it did)
ERROR_KEY = "error"
# W&B's rules for a project name (wandb 0.31, Settings.validate_project); an embedded sweep's name is its trials'
# project, so a name that breaks them fails every trial at wandb.init
PROJECT_NAME_MAX = 128
PROJECT_NAME_FORBIDDEN = "/\\#?%:"


class ArtifactUploadError(RuntimeError):
    """The model artifact did not reach W&B; the trial's local artifact folder is intact."""


def _wandb():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import wandb
    return wandb


def import_for_the_process() -> None:
    """Import wandb now, outside any trial's temporary folder: it makes its staging folders when first imported and
    keeps them for the process's life, so made inside a trial's folder (removed at the trial's end) they would be
    gone for the next trial of a warm worker."""
    _wandb()


def api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(explicit: str | None = None) -> Mode:
    """Explicit choice, else WANDB_MODE, else online only when an API key is configured."""
    mode = explicit or os.environ.get("WANDB_MODE")
    if mode in ("online", "offline", "disabled"):
        return mode  # type: ignore[return-value]
    if mode == "dryrun":
        return "offline"
    if mode:
        raise ValueError(f"W&B mode {mode!r}: expected online, offline or disabled")
    return "online" if api_key_configured() else "offline"


def agent_sweep_id(default: str = "runs") -> str:
    """The sweep id `wandb agent` gives its trial processes (WANDB_SWEEP_ID), else `default`."""
    return os.environ.get("WANDB_SWEEP_ID", default)


def agent_sweep_params() -> dict:
    """The params `wandb agent` wrote for this trial (WANDB_SWEEP_PARAM_PATH, YAML `{key: {value: v}}`): what
    wandb.init loads into wandb.config, read here without wandb, so that they can be checked in a second,
    before wandb and torch are imported. {} when the variable is unset (not run by `wandb agent`)."""
    path = os.environ.get(SWEEP_PARAM_PATH_ENV)
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{SWEEP_PARAM_PATH_ENV}={path}: cannot read the sweep parameters: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{SWEEP_PARAM_PATH_ENV}={path}: expected a mapping of {{key: {{value: ...}}}}")
    # wandb adds bookkeeping entries (wandb_version: 1, _wandb: {...}) that are not parameters
    return {key: entry["value"] for key, entry in data.items()
            if isinstance(entry, dict) and "value" in entry and not key.startswith("_")}


def embedded_trial_mode() -> str:
    """Embedded trials log offline unless the controller's environment says otherwise."""
    return os.environ.get("WANDB_MODE", "offline")


def trial_process_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of an embedded trial process: the controller's, without its wandb service
    (a child must start its own) and offline unless WANDB_MODE says otherwise."""
    env = {k: v for k, v in environ.items() if k != "WANDB_SERVICE"}
    env.setdefault("WANDB_MODE", "offline")
    return env


def project_name_problem(name: str) -> str | None:
    """Why W&B would refuse `name` as a project name, or None when it accepts it."""
    if len(name) > PROJECT_NAME_MAX:
        return f"is {len(name)} characters long; W&B project names have at most {PROJECT_NAME_MAX}"
    found = "".join(sorted({char for char in name if char in PROJECT_NAME_FORBIDDEN}))
    if found:
        return f"contains {found!r}; W&B project names cannot contain any of {PROJECT_NAME_FORBIDDEN!r}"
    return None


def project_for(name: str) -> str:
    """`name` made acceptable to W&B (each forbidden character a '-', cut to the limit): a sweep stored before
    names were checked still runs on --resume, under this project, instead of failing every trial."""
    for char in PROJECT_NAME_FORBIDDEN:
        name = name.replace(char, "-")
    return name[:PROJECT_NAME_MAX]


def _scalar(value):
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


class Tracker:
    """A W&B run for one trial. With mode=disabled every call is a cheap no-op inside wandb itself."""

    def __init__(self, run, mode: Mode):
        self.run = run
        self.mode = mode

    @classmethod
    def start(cls, *, mode: str | None, directory: Path, config: dict | None = None, project: str | None = None,
              name: str | None = None, group: str | None = None, tags: list[str] | None = None) -> "Tracker":
        wandb = _wandb()
        resolved = resolve_mode(mode)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if not os.environ.get("WANDB_SWEEP_ID"):
            project = project or os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT)
        # else a sweep run: its project is the sweep's, and wandb ignores project= with a warning every trial
        run = wandb.init(
            mode=resolved, dir=str(directory), config=config, project=project,
            name=name, group=group, tags=tags, job_type="trial",
            settings=wandb.Settings(console="off", quiet=True, x_disable_stats=True),
        )
        return cls(run, resolved)

    @property
    def run_id(self) -> str:
        return self.run.id

    def record_trial_state(self, state: str) -> None:
        """Summary key wandb_api reads: a hyperband-stopped trial also exits 0, so W&B alone says "finished"."""
        self.run.summary[TRIAL_STATE_KEY] = str(state)

    def record_failure(self, message: str) -> None:
        self.record_trial_state("failed")
        self.run.summary[ERROR_KEY] = message[-1000:]

    def record_config(self, config: dict) -> None:
        """Adds the values the sweep did not set (the defaults), so the run's config is the whole TrialConfig.
        Under a sweep wandb.config already holds the suggested keys, locked: writing them again is ignored,
        with one warning per key (~20 a trial), so only the missing keys are written."""
        missing = {key: value for key, value in config.items() if key not in self.run.config}
        if missing:
            self.run.config.update(missing)

    def log_epoch(self, record: dict) -> None:
        """One log call per epoch, so hyperband counts one iteration per epoch."""
        self.run.log({k: _scalar(v) for k, v in record.items()}, step=int(record["epoch"]))

    def summarize(self, best: dict, monitor: str, extra: dict | None = None) -> None:
        # best_run() sorts by the *summary* value of the sweep metric: it must hold the best, not the last.
        # wandb keeps the last epoch's row pending (step=epoch) and applies it to the summary when it is
        # flushed, over whatever was written in between: flush it first.
        self.run.log({}, commit=True)
        for key, value in best.items():
            self.run.summary[f"best_{key}"] = _scalar(value)
        if monitor in best:
            self.run.summary[monitor] = _scalar(best[monitor])
        for key, value in (extra or {}).items():
            self.run.summary[key] = _scalar(value)

    def log_evaluation(self, y_true: np.ndarray, probs: np.ndarray, threshold: float) -> None:
        if np.isnan(probs).any():
            return
        # imported here: the controller imports this module for its env rules, without cv2 and sklearn
        from covid_sweep.data.layout import CLASS_NAMES

        wandb = _wandb()
        y_true = [int(v) for v in y_true]
        preds = [int(p >= threshold) for p in probs]
        two_col = [[1 - float(p), float(p)] for p in probs]
        self.run.log({
            "confusion_matrix": wandb.plot.confusion_matrix(y_true=y_true, preds=preds, class_names=list(CLASS_NAMES)),
            "roc": wandb.plot.roc_curve(y_true, two_col, labels=list(CLASS_NAMES)),
        })

    def log_model(self, artifact_dir: Path, name: str, metadata: dict, aliases: list[str] | None = None) -> None:
        """The trial's artifact folder as a W&B model artifact.

        online: uploaded, and waited for, so that a failed upload fails the trial (ArtifactUploadError)
        instead of showing only in debug-internal.log while the trial reports success.
        offline: logged by reference, one file:// URI per file: wandb would otherwise stage a copy of every
        trial's weights in its data folder until `wandb sync` (45 MB a resnet18 trial), beside the artifact
        folder that already holds them. A later sync uploads the references, not the files. wandb does not
        hash them again (checksum=False; 0.7 s a vgg16 trial on a 2-core Xeon): the folder's manifest.json,
        referenced with them, holds their sha256, which every load of the artifact checks.
        disabled: nothing (wandb would still hash the files)."""
        if self.mode == "disabled":
            return
        wandb = _wandb()
        artifact = wandb.Artifact(name=name, type="model", metadata=metadata)
        if self.mode == "offline":
            folder = Path(artifact_dir).absolute()
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                artifact.add_reference(path.as_uri(), name=path.relative_to(folder).as_posix(), checksum=False)
            self.run.log_artifact(artifact, aliases=aliases or ["latest"])
            return
        artifact.add_dir(str(artifact_dir))
        try:
            self.run.log_artifact(artifact, aliases=aliases or ["latest"]).wait()
        except Exception as err:  # noqa: BLE001 - wandb raises ValueError, CommError, timeouts, pydantic errors here
            detail = (str(err).strip().splitlines() or [""])[0]
            raise ArtifactUploadError(f"model artifact {name} was not uploaded to W&B ({type(err).__name__}: {detail}); "
                                      f"the model is kept in {artifact_dir}") from None

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)
        # WANDB_* settings are read once per process: a clean teardown lets the next in-process trial start fresh
        _wandb().teardown()


class StartingTracker:
    """A Tracker whose wandb.init runs in a thread, beside the trial's data loading, model build and first
    epoch: init (~0.7 s on a 2-core CPU, mostly starting the wandb-core service) is then off the trial's
    critical path. The trial waits for it where it first needs the run (the first epoch's log): that wait is
    the timer's phase wandb_init. A failed init is raised there, as the trial's error."""

    def __init__(self, start: Callable[[], Tracker], timer: PhaseTimer | None = None):
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb-init")
        self._future: Future[Tracker] = pool.submit(start)
        pool.shutdown(wait=False)  # the pool ends with its one job
        self._timer = timer or PhaseTimer()
        self._failed = False

    def ready(self) -> Tracker:
        if not self._future.done():
            with self._timer.phase("wandb_init"):
                self._future.exception()  # waits; the error, if any, is raised just below
        try:
            return self._future.result()
        except Exception:
            self._failed = True
            raise

    @property
    def run(self):
        return self.ready().run

    @property
    def run_id(self) -> str:
        return self.ready().run_id

    def log_epoch(self, record: dict) -> None:
        self.ready().log_epoch(record)

    def summarize(self, best: dict, monitor: str, extra: dict | None = None) -> None:
        self.ready().summarize(best, monitor, extra)

    def log_evaluation(self, y_true: np.ndarray, probs: np.ndarray, threshold: float) -> None:
        self.ready().log_evaluation(y_true, probs, threshold)

    def log_model(self, artifact_dir: Path, name: str, metadata: dict, aliases: list[str] | None = None) -> None:
        self.ready().log_model(artifact_dir, name, metadata, aliases)

    def finish(self, exit_code: int = 0) -> None:
        """Finishes the run once init is done. A failed init has no run to finish: its error was raised
        to the trial (here, when nothing used the run before)."""
        if not self._failed:
            self.ready().finish(exit_code)
