"""The trial entrypoint (public name: covid_sweep.agent), run by `wandb agent` (the sweep YAML's `command:`)
and by the embedded controller.

    wandb agent:  python -m covid_sweep.agent --backbone=resnet50 --lr=4.8e-05 --hflip=False ...
    embedded:     python -m covid_sweep.agent --store HOME/sweeps.db|URL --trial 12 --home HOME [--artifacts DIR]

Exit status (decided in `exit_status` only): 0 when the trial finished or was stopped on request, 1 when it
failed (also when its model artifact could not be uploaded to W&B), 2 for bad input. Both paths end a
failure through one wrapper, `guarded`: the failure is recorded once, where that path records it.

This module imports no torch at the top: under `wandb agent` the parameters are checked first, so a bad
value fails in about a second instead of after the heavy imports and wandb.init.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from covid_sweep.core import paths
from covid_sweep.core.config import build_config, parse_agent_args
from covid_sweep.core.errors import UserError
from covid_sweep.core.files import private_tempdir
from covid_sweep.core.phases import PhaseTimer
from covid_sweep.core.states import TrialState
from covid_sweep.core.stop_request import SIGTERM_STOP
from covid_sweep.sweep.control import protocol
from covid_sweep.tracking.tracker import (
    ArtifactUploadError,
    StartingTracker,
    Tracker,
    agent_sweep_id,
    agent_sweep_params,
    embedded_trial_mode,
    import_for_the_process,
    project_for,
)


def run_trial(*args, **kwargs):
    """covid_sweep.training.trial.run_trial, imported when a trial really starts: it loads torch (seconds)."""
    from covid_sweep.training.trial import run_trial as run

    return run(*args, **kwargs)


def run_embedded(store_location: Path | str, trial_id: int, home: Path, artifacts: Path | None = None) -> int:
    from covid_sweep.sweep.store import Store

    timer = PhaseTimer()
    for name, seconds in protocol.startup_phases(os.environ, time.time()).items():
        timer.add(name, seconds)
    store = Store(store_location, create=False, known=True)  # a trial starting during a server restart waits it out
    try:
        return _run_embedded(store, trial_id, home, artifacts, timer)
    finally:
        store.close()  # a warm worker runs many trials: one connection each would pile up


def _run_embedded(store, trial_id: int, home: Path, artifacts: Path | None, timer: PhaseTimer) -> int:
    from covid_sweep.sweep.control.child import TrialProcess

    trial = store.trial(trial_id)
    sweep = store.sweep(trial.sweep_id)
    process = TrialProcess(store, trial, sweep)
    process.start()
    tracker = None

    def body() -> int:
        nonlocal tracker
        params = dict(trial.params)
        if sweep.data_dir and "data_dir" not in params:
            params["data_dir"] = sweep.data_dir
        config = build_config(params, source=f"trial {trial.name}")
        project = project_for(sweep.name) if sweep.name else None
        tracker = StartingTracker(lambda: Tracker.start(
            mode=embedded_trial_mode(), directory=home, config=config.model_dump(mode="json"), project=project,
            group=sweep.id, name=trial.name, tags=["embedded"]), timer)
        timer.add("wandb_init", 0.0)  # recorded also when the trial never had to wait for it
        artifact_dir = paths.trial_artifact_dir(home, sweep.id, trial.name, artifacts)
        result = run_trial(config, artifact_dir, tracker,
                           on_epoch=process.on_epoch, should_stop=process.should_stop, progress=False,
                           trial_name=trial.name, artifact_name=f"model-{sweep.id}", timer=timer)
        # the phases before the end is recorded: a reader that sees the trial ended sees them too
        store.add_phases(trial.id, timer.phases)
        state = process.end(result.state == TrialState.STOPPED, str(result.artifact) if result.artifact else None)
        print(f"trial {trial.name} {state}; artifact {result.artifact}", flush=True)
        _finish_timed(tracker, EXIT_DONE, timer, store, trial.id)
        return EXIT_DONE

    def record_failure(message: str, status: int) -> None:
        process.fail(message)
        store.add_phases(trial.id, timer.phases)
        if tracker:
            _finish_timed(tracker, status, timer, store, trial.id)

    return guarded(body, record_failure)


def _finish_timed(tracker: StartingTracker, exit_code: int, timer: PhaseTimer, store, trial_id: int) -> None:
    with timer.phase("wandb_finish"):
        tracker.finish(exit_code)  # where a trial that never logged an epoch waits for W&B's init
    store.add_phases(trial_id, {name: timer.phases[name] for name in ("wandb_init", "wandb_finish")})


def run_wandb_agent(argv: list[str], home: Path, stop: Callable[[], bool] = SIGTERM_STOP) -> int:
    """Under `wandb agent`: the sweep's suggestions arrive in WANDB_SWEEP_PARAM_PATH (what wandb.config loads)
    and as --key=value args. stop: true once SIGTERM arrived (installed by the entrypoint before its imports)."""
    try:
        # the typed YAML values win over the same keys' --key=value strings
        config = build_config({**parse_agent_args(argv), **agent_sweep_params()}, source="sweep parameters")
    except UserError as err:  # before wandb.init: no W&B run is made for a suggestion that cannot train
        print(f"error: {err}", file=sys.stderr)
        return exit_status(err)
    tracker = Tracker.start(mode=None, directory=home)

    def body() -> int:
        tracker.record_config(config.model_dump(mode="json"))
        if stop():  # SIGTERM during the imports or wandb.init: end now, as stopped, before loading any data
            return _finish(tracker, TrialState.STOPPED, "no epoch was run, no artifact")
        sweep_id = agent_sweep_id()
        result = run_trial(config, paths.trial_artifact_dir(home, sweep_id, tracker.run_id), tracker,
                           should_stop=stop, trial_name=tracker.run_id, artifact_name=f"model-{sweep_id}")
        return _finish(tracker, result.state, f"artifact {result.artifact}")

    def record_failure(message: str, status: int) -> None:
        print(f"error: trial {tracker.run_id} failed: {message}", file=sys.stderr, flush=True)
        tracker.record_failure(message)
        tracker.finish(status)

    return guarded(body, record_failure)


def _finish(tracker: Tracker, state: TrialState, detail: str) -> int:
    tracker.record_trial_state(state)
    print(f"trial {tracker.run_id} {state}; {detail}", flush=True)
    tracker.finish(EXIT_DONE)
    return EXIT_DONE


# ---- the one failure wrapper and the exit status of a trial process ---------------------------------------

EXIT_DONE, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def exit_status(err: BaseException) -> int:
    """A user's mistake (bad parameters, bad data) is bad input; anything else, an upload error included, failed."""
    return EXIT_BAD_INPUT if isinstance(err, UserError) else EXIT_FAILED


def failure_message(err: BaseException) -> str:
    """What a failed trial records: a user's mistake or an upload error as it reads, a crash with its type."""
    return str(err) if isinstance(err, (UserError, ArtifactUploadError)) else f"{type(err).__name__}: {err}"


def guarded(body: Callable[[], int], record_failure: Callable[[str, int], None]) -> int:
    """body()'s exit status; for any exception, the failure recorded once by record_failure(message, status) and
    that status. A crash also prints its traceback, into the trial's log."""
    try:
        return body()
    except BaseException as err:  # noqa: BLE001 - Ctrl-C or a crash alike must leave the trial marked failed
        if not isinstance(err, (UserError, ArtifactUploadError)):
            traceback.print_exc()
        status = exit_status(err)
        record_failure(failure_message(err), status)
        return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # W&B records sys.argv as the run's command line (and `wandb sync` uploads it): it must be this trial's own
    # arguments, which hold the store's address only, never the command line of the process a trial is forked
    # from (the controller's, whose --store URL may hold a password)
    sys.argv = sys.argv[:1] + argv
    invocation = protocol.parse(argv)
    home = paths.home(invocation.home)
    try:
        if invocation.embedded is not None:
            _make_process_temp_folders()
        with private_tempdir("trial-"):
            return _run(invocation, home)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_status(err)


def _make_process_temp_folders() -> None:
    """The temporary folders that live as long as the process, made before the trial's own folder is: a warm worker
    runs many trials, and what its first trial made lazily would go with that trial's folder. (A fork server that
    preloaded wandb made them already: then this costs nothing.)"""
    import multiprocessing.util

    multiprocessing.util.get_temp_dir()
    import_for_the_process()


def _run(invocation: protocol.Invocation, home: Path) -> int:
    if invocation.embedded is not None:
        embedded = invocation.embedded
        return run_embedded(embedded.store, embedded.trial_id, home, embedded.artifacts)
    return run_wandb_agent(invocation.rest, home, SIGTERM_STOP.install())


if __name__ == "__main__":
    sys.exit(main())
