"""The trial table of a sweep (rich), best trial first."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from covid_sweep.core.goals import rank_key
from covid_sweep.core.split_record import recorded_split_kind
from covid_sweep.sweep.store import Store, Sweep, Trial


def ranked(trials: list[Trial], goal: str) -> list[Trial]:
    """Trials with a metric first, best first; the rest after, in launch order."""
    scored = [t for t in trials if t.best is not None]
    unscored = [t for t in trials if t.best is None]
    return sorted(scored, key=lambda t: rank_key(t.best, goal)) + unscored


def objective_line(store: Store, sweep: Sweep) -> str:
    """What the sweep's metric was measured on: a validation number means little without its split."""
    return f"{sweep.metric or 'metric'} measured on: {objective_split(store.trials(sweep.id))}"


def objective_split(trials: list[Trial]) -> str:
    """The validation split(s) the sweep's metric was measured on, as the trials' artifacts recorded them."""
    kinds = sorted({kind for t in trials if (kind := recorded_split(t.artifact))})
    return "; ".join(kinds) if kinds else "not known until a trial saves its model"


def recorded_split(artifact_dir: str | None) -> str | None:
    if not artifact_dir:
        return None
    try:
        metadata = json.loads((Path(artifact_dir) / "metadata.json").read_text())
    except (OSError, ValueError):
        return None  # a missing or damaged artifact must not break the table
    return recorded_split_kind(metadata)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def status_table(store: Store, sweep: Sweep) -> Table:
    trials = store.trials(sweep.id)
    states = Counter(t.state for t in trials)
    cap = sweep.config.get("run_cap")
    progress = f"{sum(1 for t in trials if t.retry_of is None)}{f'/{cap}' if cap else ''} trials; " + ", ".join(
        f"{n} {s}" for s, n in sorted(states.items()))
    table = Table(title=f"sweep {sweep.id} ({sweep.name}, {sweep.config['method']}): {progress}")
    params = list(sweep.config.get("parameters", {}))
    varying = [p for p in params if "value" not in sweep.config["parameters"][p]]
    for column in ["trial", "state", f"best {sweep.metric}", "epochs", *varying]:
        table.add_column(column)
    promoted = store.alias(sweep.id, "best")
    for trial in ranked(trials, sweep.goal):
        name = escape(trial.name + (" [best]" if trial.id == promoted else ""))
        table.add_row(name, trial.state, _fmt(trial.best) if trial.best is not None else "-", str(trial.epochs),
                      *(_fmt(trial.params.get(p, "")) for p in varying))
    return table
