"""The trial entrypoint (public name: covid_sweep.agent), run by `wandb agent` (the sweep YAML's `command:`)
and by the embedded controller.

    wandb agent:  python -m covid_sweep.agent --backbone=resnet50 --lr=4.8e-05 --hflip=False ...
    embedded:     python -m covid_sweep.agent --store HOME/sweeps.db --trial 12 --home HOME

Exit status: 0 when the trial finished or was stopped on request, 1 when it failed, 2 for bad input.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

from covid_sweep.core import paths
from covid_sweep.core.config import build_config, parse_agent_args
from covid_sweep.core.errors import UserError
from covid_sweep.core.phases import PhaseTimer
from covid_sweep.core.states import TrialState
from covid_sweep.sweep import protocol
from covid_sweep.tracking.tracker import Tracker, agent_sweep_id, embedded_trial_mode
from covid_sweep.training.trial import run_trial


def run_embedded(store_path: Path, trial_id: int, home: Path) -> int:
    from covid_sweep.sweep.store import Store

    timer = PhaseTimer()
    for name, seconds in protocol.startup_phases(os.environ, time.time()).items():
        timer.add(name, seconds)
    store = Store(store_path)
    try:
        return _run_embedded(store, trial_id, home, timer)
    finally:
        store.close()  # a warm worker runs many trials: one connection each would pile up


def _run_embedded(store, trial_id: int, home: Path, timer: PhaseTimer) -> int:
    from covid_sweep.sweep.child import TrialProcess

    trial = store.trial(trial_id)
    sweep = store.sweep(trial.sweep_id)
    process = TrialProcess(store, trial, sweep)
    process.start()
    tracker = None
    try:
        params = dict(trial.params)
        if sweep.data_dir and "data_dir" not in params:
            params["data_dir"] = sweep.data_dir
        config = build_config(params, source=f"trial {trial.name}")
        with timer.phase("wandb_init"):
            tracker = Tracker.start(mode=embedded_trial_mode(), directory=home,
                                    config=config.model_dump(mode="json"), project=sweep.name, group=sweep.id,
                                    name=trial.name, tags=["embedded"])
        result = run_trial(config, paths.trial_artifact_dir(home, sweep.id, trial.name), tracker,
                           on_epoch=process.on_epoch, should_stop=process.should_stop, progress=False,
                           trial_name=trial.name, artifact_name=f"model-{sweep.id}", timer=timer)
        # the phases before the end is recorded: a reader that sees the trial ended sees them too
        store.add_phases(trial.id, timer.phases)
        state = process.end(result.state == TrialState.STOPPED, str(result.artifact) if result.artifact else None)
        print(f"trial {trial.name} {state}; artifact {result.artifact}", flush=True)
        _finish(tracker, 0, timer, store, trial.id)
        return 0
    except BaseException as err:  # noqa: BLE001 - any crash must leave the trial marked failed, then re-raise codes
        process.fail(f"{type(err).__name__}: {err}")
        store.add_phases(trial.id, timer.phases)
        traceback.print_exc()
        if tracker:
            _finish(tracker, 1, timer, store, trial.id)
        return 2 if isinstance(err, UserError) else 1


def _finish(tracker: Tracker, exit_code: int, timer: PhaseTimer, store, trial_id: int) -> None:
    with timer.phase("wandb_finish"):
        tracker.finish(exit_code)
    store.add_phases(trial_id, {"wandb_finish": timer.phases["wandb_finish"]})


def run_wandb_agent(argv: list[str], home: Path) -> int:
    """Under `wandb agent`: the sweep's suggestions arrive in wandb.config (and as --key=value args)."""
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    tracker = Tracker.start(mode=None, directory=home)
    try:
        params = {**tracker.params, **parse_agent_args(argv)}
        config = build_config(params, source="sweep parameters")
        tracker.record_config(config.model_dump(mode="json"))
        sweep_id = agent_sweep_id()
        result = run_trial(config, paths.trial_artifact_dir(home, sweep_id, tracker.run_id), tracker,
                           should_stop=lambda: stop["requested"], trial_name=tracker.run_id,
                           artifact_name=f"model-{sweep_id}")
        tracker.record_trial_state(result.state)
        print(f"trial {tracker.run_id} {result.state}; artifact {result.artifact}", flush=True)
        tracker.finish(0)
        return 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        tracker.finish(2)
        return 2
    except Exception:
        traceback.print_exc()
        tracker.finish(1)
        return 1


def main(argv: list[str] | None = None) -> int:
    invocation = protocol.parse(sys.argv[1:] if argv is None else argv)
    home = paths.home(invocation.home)
    try:
        if invocation.embedded is not None:
            return run_embedded(invocation.embedded.store, invocation.embedded.trial_id, home)
        return run_wandb_agent(invocation.rest, home)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
