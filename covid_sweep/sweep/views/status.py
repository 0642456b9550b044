"""The trial table of a sweep (`covid-sweep status`), best trial first: rich for people, JSON for scripts.

A trial id is never shortened (export-best, --config and the logs need all of it), and only the
parameters whose values differ among the trials get a column: the rest are one line below the table.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path

from rich.console import Console, Group
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from covid_sweep.core.goals import rank_key
from covid_sweep.core.split_record import recorded_split_kind
from covid_sweep.sweep.store import Sweep, SweepSnapshot, Trial
from covid_sweep.sweep.views.selection import estimate_json, estimate_line, sweep_estimate


def ranked(trials: list[Trial], goal: str) -> list[Trial]:
    """Trials with a metric first, best first; the rest after, in launch order."""
    scored = [t for t in trials if t.best is not None]
    unscored = [t for t in trials if t.best is None]
    return sorted(scored, key=lambda t: rank_key(t.best, goal)) + unscored


def objective_line(snapshot: SweepSnapshot) -> str:
    """What the sweep's metric was measured on: a validation number means little without its split."""
    return f"{snapshot.sweep.metric or 'metric'} measured on: {objective_split(snapshot.trials)}"


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


def fmt_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def duration(trial: Trial, now: float | None = None) -> float | None:
    """Wall time of the trial process: to its end, or to now while it runs; None before it started."""
    if trial.started is None:
        return None
    end = trial.ended if trial.ended is not None else (now or time.time())
    return max(0.0, end - trial.started)


def param_names(sweep: Sweep, trials: list[Trial]) -> list[str]:
    """The sweep's parameters in its YAML order, then any a trial holds beyond them (a W&B-side addition)."""
    names = list(sweep.parameters)
    for trial in trials:
        names += [k for k in trial.params if k not in names]
    return names


def varying_params(names: list[str], trials: list[Trial]) -> list[str]:
    """The parameters whose values differ among the trials (a missing value counts as a value)."""
    return [n for n in names if len({json.dumps(t.params.get(n), sort_keys=True) for t in trials}) > 1]


def progress_line(sweep: Sweep, trials: list[Trial]) -> str:
    states = Counter(t.state for t in trials)
    cap = sweep.run_cap
    launched = sum(1 for t in trials if t.retry_of is None)
    return (f"{launched}{f'/{cap}' if cap else ''} trials; "
            + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))


def _base_table(sweep: Sweep, title: str) -> Table:
    # rich reads str titles, headers and cells as markup: every user-given part is escaped (a name like `x [/]`
    # would otherwise raise MarkupError, and `[red]` vanish)
    table = Table(title=title, title_justify="left")
    # the id is never cut: no_wrap, and the other columns give way first
    table.add_column("trial", no_wrap=True, min_width=5)
    table.add_column("state", no_wrap=True)
    table.add_column(f"best {escape(sweep.metric or 'metric')}", no_wrap=True, justify="right")
    # the epochs it logged; an `epochs` parameter (its budget) may have a column of its own
    table.add_column("epochs run", no_wrap=True, justify="right")
    table.add_column("time", no_wrap=True, justify="right")
    return table


def _trial_cells(trial: Trial, promoted: int | None, now: float) -> list[str]:
    name = escape(trial.name + (" [best]" if trial.id == promoted else ""))
    best = fmt_value(trial.best) if trial.best is not None else "-"
    return [name, str(trial.state), best, str(trial.epochs), fmt_duration(duration(trial, now))]


def _wide(sweep, title, rows, shown) -> Table:
    """One column per parameter: the table people know from W&B, used when it fits the terminal."""
    table = _base_table(sweep, title)
    for name in shown:
        table.add_column(escape(name), no_wrap=True)
    for trial, cells in rows:
        table.add_row(*cells, *(escape(fmt_value(trial.params.get(name, "-"))) for name in shown))
    return table


def _compact(sweep, title, rows, shown) -> list[Table]:
    """Too many parameters for one row: the trial table, then a second one holding each trial's parameters as
    name=value pairs in one wrapped cell. Fits 80 columns and cuts neither an id nor a value."""
    table = _base_table(sweep, title)
    for _, cells in rows:
        table.add_row(*cells)
    if not shown:
        return [table]
    params = Table(title="parameters", title_justify="left")
    params.add_column("trial", no_wrap=True)
    params.add_column("parameters", ratio=1, overflow="fold")
    for trial, cells in rows:
        params.add_row(cells[0], Text("  ".join(f"{n}={fmt_value(trial.params.get(n, '-'))}" for n in shown)))
    return [table, params]


def natural_width(renderable) -> int:
    """The width a renderable would take with no terminal limit."""
    unlimited = Console(width=100_000, file=io.StringIO())  # it only measures: nothing is printed
    return Measurement.get(unlimited, unlimited.options, renderable).maximum


def status_view(snapshot: SweepSnapshot, width: int, all_params: bool = False, now: float | None = None) -> Group:
    """The table (one column per parameter when that fits `width`, else compact) and a line naming the
    parameters every trial shares."""
    sweep, trials = snapshot.sweep, snapshot.trials
    now = now or snapshot.now  # the clock trials' started is measured by, not this box's
    names = param_names(sweep, trials)
    varying = varying_params(names, trials)
    shown = names if all_params else varying
    promoted = snapshot.alias("best")
    rows = [(t, _trial_cells(t, promoted, now)) for t in ranked(trials, sweep.goal)]
    title = escape(f"sweep {sweep.id} ({sweep.name}, {sweep.method}): {progress_line(sweep, trials)}")
    wide = _wide(sweep, title, rows, shown)
    parts = [wide] if natural_width(wide) <= width else _compact(sweep, title, rows, shown)
    same = [n for n in names if n not in shown]
    if same and trials:
        values = ", ".join(f"{n}={fmt_value(trials[0].params.get(n, '-'))}" for n in same)
        parts.append(Text(f"same in every trial (--all-params shows them too): {values}"))
    if sweep.metric and trials:
        parts.append(Text(estimate_line(sweep.metric, sweep_estimate(sweep, trials))))
    return Group(*parts)


def status_table(snapshot: SweepSnapshot, width: int = 200, all_params: bool = False) -> Table:
    """The trial table alone (tests and callers that lay out the rest themselves)."""
    return status_view(snapshot, width, all_params).renderables[0]


def status_json(snapshot: SweepSnapshot, now: float | None = None) -> dict:
    """What `status --json` prints: stable keys, every parameter, full ids; values as the store holds them."""
    sweep, trials = snapshot.sweep, snapshot.trials
    now = now or snapshot.now  # the clock trials' started is measured by, not this box's
    by_id = {t.id: t.name for t in trials}
    promoted = snapshot.alias("best")
    names = param_names(sweep, trials)
    return {
        "sweep": {"id": sweep.id, "name": sweep.name, "method": sweep.method, "metric": sweep.metric,
                  "goal": sweep.goal, "run_cap": sweep.run_cap, "seed": sweep.seed,
                  "created": sweep.created, "data_dir": sweep.data_dir, "source": sweep.source,
                  "objective_split": objective_split(trials),
                  "states": dict(sorted(Counter(str(t.state) for t in trials).items())),
                  "varying_params": varying_params(names, trials),
                  "promoted": by_id.get(promoted),
                  "selection_estimate": estimate_json(sweep_estimate(sweep, trials))},
        "trials": [{"id": t.name, "state": str(t.state), "best": t.best, "best_epoch": t.best_epoch, "epochs": t.epochs,
                    "started": t.started, "ended": t.ended, "seconds": duration(t, now),
                    "promoted": t.id == promoted, "retry_of": by_id.get(t.retry_of), "params": t.params,
                    "phases": t.phases, "artifact": t.artifact, "error": t.error}
                   for t in ranked(trials, sweep.goal)],
    }
