"""What the HTML report shows about a sweep, read once from its source: the embedded store, or W&B's API.

The report is drawn from these plain records only, so an embedded sweep and a W&B sweep give the same
report (where the W&B API holds the same facts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from covid_sweep.core.states import TrialState
from covid_sweep.sweep.store import Store
from covid_sweep.sweep.views.selection import estimate_json, sweep_estimate
from covid_sweep.sweep.views.status import duration, objective_split, param_names, ranked


@dataclass
class TrialRecord:
    id: str  # the full trial id (embedded: SWEEP-NNN; W&B: the run id)
    state: str
    best: float | None
    best_epoch: int | None
    epochs: int
    params: dict
    seconds: float | None  # wall time of the trial process, where known
    phases: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    artifact: str | None = None
    promoted: bool = False


@dataclass
class SweepRecord:
    id: str
    name: str
    method: str
    metric: str | None
    goal: str
    run_cap: int | None
    source: str  # where the record came from, as the report's header says it
    param_order: list[str]
    trials: list[TrialRecord]  # best first
    objective_split: str
    parameters: dict = field(default_factory=dict)  # the sweep config's parameters block (distributions)
    data_dir: str | None = None
    # the selection-corrected estimate of the sweep's best finished trial (SweepEstimate.as_dict), or why not
    selection: dict = field(default_factory=lambda: {"unavailable": "not computed for this source"})

    @property
    def promoted(self) -> TrialRecord | None:
        return next((t for t in self.trials if t.promoted), None)


def from_store(store: Store, sweep_id: str) -> SweepRecord:
    """The embedded sweep `sweep_id`, through the Store's public methods only."""
    snapshot = store.snapshot(sweep_id, histories=tuple(TrialState))
    sweep, trials = snapshot.sweep, snapshot.trials
    promoted = snapshot.alias("best")
    now = snapshot.now  # a running trial's time so far, by the clock its start was measured by
    records = [TrialRecord(id=t.name, state=str(t.state), best=t.best, best_epoch=t.best_epoch, epochs=t.epochs,
                           params=t.params, seconds=duration(t, now), phases=t.phases, history=snapshot.history(t.id),
                           artifact=t.artifact, promoted=t.id == promoted)
               for t in ranked(trials, sweep.goal)]
    return SweepRecord(id=sweep.id, name=sweep.name or sweep.id, method=sweep.method,
                       metric=sweep.metric, goal=sweep.goal, run_cap=sweep.run_cap,
                       source=f"embedded store {getattr(store, 'path', '')}".strip(),
                       param_order=param_names(sweep, trials), trials=records,
                       objective_split=objective_split(trials), parameters=sweep.parameters,
                       data_dir=sweep.data_dir, selection=estimate_json(sweep_estimate(sweep, trials)))


def from_wandb(api, sweep_path: str) -> SweepRecord:
    """A W&B sweep through wandb_api: runs, configs, histories and summaries. W&B keeps no phase timings and
    no alias in the store's sense: the promoted run is the one whose model artifact carries alias `best`."""
    from covid_sweep.core.goals import rank_key
    from covid_sweep.tracking import wandb_api

    sweep = wandb_api.sweep_runs(api, sweep_path)
    metric, goal = sweep.metric, sweep.goal
    records = []
    for run in sweep.runs:
        values = [row[metric] for row in run.history if metric and isinstance(row.get(metric), (int, float))]
        best = (min(values, key=lambda v: rank_key(v, goal)) if values else run.summary_value)
        best_epoch = next((row.get("epoch") for row in run.history if metric and row.get(metric) == best), None)
        records.append(TrialRecord(id=run.id, state=run.trial_state or run.state, best=best, best_epoch=best_epoch,
                                   epochs=sum(1 for row in run.history if metric in row), params=run.params,
                                   seconds=run.seconds, history=run.history, promoted=run.promoted))
    scored = sorted([r for r in records if r.best is not None], key=lambda r: rank_key(r.best, goal))
    records = scored + [r for r in records if r.best is None]
    order = list(dict.fromkeys([*sweep.config.get("parameters", {}), *(k for r in records for k in r.params)]))
    return SweepRecord(id=sweep_path, name=sweep.name, method=sweep.config.get("method", "?"), metric=metric, goal=goal,
                       run_cap=sweep.config.get("run_cap"), source=f"W&B sweep {sweep_path}", param_order=order,
                       trials=records, objective_split=sweep.split or "not recorded in the runs' summaries",
                       parameters=sweep.config.get("parameters", {}),
                       selection={"unavailable": "a W&B sweep's is computed by export-best (pass its folder as "
                                                 "--export to show it here)"})
