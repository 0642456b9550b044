"""Parameter importance for a sweep's metric, computed as W&B's parameter-importance panel describes it:
the feature importances of a random forest fitted to predict the metric from the parameters, beside the
Pearson correlation of each parameter with the metric (its sign says which way to move it).

A categorical parameter is one-hot encoded: each of its values is a feature of its own
("backbone=resnet50"), so the correlation says whether choosing that value went with a better metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_TRIALS = 3  # below this a forest and a correlation describe nothing
FEW_TRIALS = 10  # below this every number here is mostly noise; the report says so
HOW = ("Random-forest importance: sklearn RandomForestRegressor (200 trees, seed 0) fitted on the scored trials, "
       "parameters as features (numbers as they are, true/false as 1/0, each value of a categorical parameter "
       "one-hot), the trial's best {metric} as target; importances are impurity decreases, summing to 1. "
       "Correlation: Pearson's r between the feature and the metric over the same trials. "
       "Parameters equal in every trial are left out.")


@dataclass(frozen=True)
class Importance:
    feature: str  # a parameter, or parameter=value for one value of a categorical one
    importance: float
    correlation: float | None  # None where the feature or the metric does not vary


@dataclass(frozen=True)
class ImportanceResult:
    rows: list[Importance]  # most important first
    n_trials: int
    note: str  # how it was computed, and how far to trust it


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def features(params: list[dict], names: list[str]) -> tuple[list[str], list[list[float]]]:
    """Feature names and the matrix (one row per trial). A parameter whose values are all numbers (or all
    true/false) is one column; any other is one 0/1 column per value. Columns that never vary are dropped."""
    columns: list[tuple[str, list[float]]] = []
    for name in names:
        values = [p.get(name) for p in params]
        if all(isinstance(v, bool) for v in values):
            columns.append((name, [float(v) for v in values]))
        elif all(_is_number(v) for v in values):
            columns.append((name, [float(v) for v in values]))
        else:
            for choice in sorted({repr(v) for v in values}):
                label = next(v for v in values if repr(v) == choice)
                columns.append((f"{name}={label}", [1.0 if repr(v) == choice else 0.0 for v in values]))
    varying = [(n, c) for n, c in columns if len(set(c)) > 1]
    return [n for n, _ in varying], [list(row) for row in zip(*(c for _, c in varying))]


def pearson(x: list[float], y: list[float]) -> float | None:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def parameter_importance(params: list[dict], metric_values: list[float | None], names: list[str],
                         metric: str = "metric") -> ImportanceResult:
    """Importance of each parameter (feature) for the metric over the trials that have a metric value."""
    scored = [(p, v) for p, v in zip(params, metric_values) if v is not None and math.isfinite(v)]
    how = HOW.format(metric=metric)
    if len(scored) < MIN_TRIALS:
        return ImportanceResult([], len(scored), f"Not computed: {len(scored)} scored trial(s); it needs at least "
                                                 f"{MIN_TRIALS}. {how}")
    names_out, matrix = features([p for p, _ in scored], names)
    target = [v for _, v in scored]
    if not names_out:
        return ImportanceResult([], len(scored), f"Not computed: no parameter varies among the scored trials. {how}")
    if len(set(target)) == 1:
        return ImportanceResult([], len(scored), f"Not computed: every scored trial has the same {metric}. {how}")
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(n_estimators=200, random_state=0).fit(matrix, target)
    rows = [Importance(name, float(imp), pearson([row[i] for row in matrix], target))
            for i, (name, imp) in enumerate(zip(names_out, forest.feature_importances_))]
    rows.sort(key=lambda r: -r.importance)
    caution = (f" Only {len(scored)} scored trials: with this few, importances and correlations are mostly noise; "
               "read them as hints, not findings." if len(scored) < FEW_TRIALS else "")
    return ImportanceResult(rows, len(scored), f"{len(scored)} scored trials. {how}{caution}")
