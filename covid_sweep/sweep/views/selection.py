"""The selection-corrected estimate beside every best value a view shows (status, live view, HTML report).

The best value of a sweep is the winner of many noisy comparisons on one validation set: optimistic. What the
promoted model is worth is estimated by replaying the sweep's choice (inference/selection.py) over the
finished trials' validation predictions; the result is cached by what it read, so a view repeats it cheaply.
"""

from __future__ import annotations

from covid_sweep.core import paths
from covid_sweep.inference.selection import SelectionError
from covid_sweep.inference.sweep_estimate import FinishedTrial, SweepEstimate, estimate
from covid_sweep.sweep.store import Sweep, Trial, best_finished, finished


def sweep_estimate(sweep: Sweep, trials: list[Trial]) -> SweepEstimate | str:
    """The estimate for the sweep's promotion as it stands (its best finished trial), or why there is none."""
    if not sweep.metric:
        return "the sweep has no metric"
    best = best_finished(trials, sweep.goal)
    if best is None:
        return "no finished trial yet"
    try:
        return estimate([FinishedTrial(t.name, t.artifact) for t in finished(trials)], best.name, sweep.metric,
                        sweep.goal, cache_dir=paths.cache_root() / "estimates")
    except SelectionError as err:
        return str(err)


def estimate_line(metric: str | None, result: SweepEstimate | str) -> str:
    """`best val_auc 0.906 (trial X) · selection-corrected 0.866 [0.643, 0.981]`, or why there is no estimate."""
    if isinstance(result, str):
        return f"selection-corrected estimate: not available ({result})"
    single = result.single
    left_out = f"; {len(result.left_out)} finished trial(s) not comparable, left out" if result.left_out else ""
    return (f"best {metric} {single.selected:.3f} ({result.promoted}) · {single.text()} "
            f"(95% interval; {single.trials} trial(s), {single.groups} validation groups, "
            f"{single.samples} bootstrap samples{left_out})")


def estimate_json(result: SweepEstimate | str) -> dict:
    """As status --json and the report carry it: the estimate's fields, or {"unavailable": why}."""
    return {"unavailable": result} if isinstance(result, str) else result.as_dict()


def interval_text(selection: dict, key: str = "single") -> str | None:
    """`selection-corrected 0.866 [0.643, 0.981]` from an estimate's JSON, None where there is none."""
    row = selection.get(key) if "unavailable" not in selection else None
    return f"selection-corrected {row['estimate']:.3f} [{row['low']:.3f}, {row['high']:.3f}]" if row else None
