"""Adapter between the store and W&B's open-source engine (`sweeps.next_run`, `sweeps.stop_runs`)."""

from __future__ import annotations

import random
import warnings

import numpy as np

from covid_sweep.core.goals import reaches
from covid_sweep.core.states import TrialState
from covid_sweep.sweep.store import Store, Sweep, Trial

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import sweeps

    # next_run imports these (and sklearn, scipy, pandas) on first use; an import draws from the
    # global RNG, so done inside suggest() it would shift the first suggestion of a seeded sweep
    from sweeps import bayes_search, grid_search, random_search  # noqa: F401

# stopped (hyperband / user) trials count as finished: their history is real, and W&B imputes only
# failures. Interrupted trials are retried, so the retry stands in for them.
ENGINE_STATE = {
    TrialState.PENDING: sweeps.RunState.pending,
    TrialState.RUNNING: sweeps.RunState.running,
    TrialState.FINISHED: sweeps.RunState.finished,
    TrialState.STOPPED: sweeps.RunState.finished,
    TrialState.FAILED: sweeps.RunState.failed,
}


def sweep_runs(store: Store, sweep: Sweep) -> list[sweeps.SweepRun]:
    runs = []
    for trial in store.trials(sweep.id):
        if trial.state not in ENGINE_STATE:
            continue
        history = store.history(trial.id)
        runs.append(sweeps.SweepRun(
            name=trial.name,
            state=ENGINE_STATE[trial.state],
            config={k: {"value": v} for k, v in trial.params.items()},
            history=[{sweep.metric: h.get(sweep.metric)} for h in history] if sweep.metric else [],
            summary_metrics={sweep.metric: trial.best} if sweep.metric and trial.best is not None else {},
        ))
    return runs


def suggest(sweep: Sweep, runs: list[sweeps.SweepRun]) -> dict | None:
    """The engine's next parameters, or None when the search space is exhausted (grid).

    The engine draws from the global `random`/`np.random`: seeding both from (sweep seed, runs so far)
    makes a sweep reproducible and a resumed one continue the same sequence.
    """
    seed = (sweep.seed * 1_000_003 + len(runs)) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = sweeps.next_run(sweep.config, runs)
    if run is None:
        return None
    return {k: v["value"] for k, v in run.config.items()}


def runs_to_stop(sweep: Sweep, runs: list[sweeps.SweepRun]) -> set[str]:
    if not sweep.hyperband:
        return set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {run.name for run in sweeps.stop_runs(sweep.config, runs)}


def target_reached(sweep: Sweep, trials: list[Trial]) -> bool:
    target = sweep.target
    if target is None:
        return False
    for trial in trials:
        if trial.best is None or trial.state not in (TrialState.FINISHED, TrialState.STOPPED, TrialState.RUNNING):
            continue
        if reaches(trial.best, target, sweep.goal):
            return True
    return False
