"""Whether a metric value is better than another for a goal ("minimize" / "maximize"): the one rule that
early stopping, the store's best, metric.target, promotion, the W&B seam and the status table share."""

from __future__ import annotations

import math

GOALS = ("minimize", "maximize")


def _check(goal: str) -> None:
    if goal not in GOALS:
        raise ValueError(f"metric goal {goal!r}: expected minimize or maximize")


def improves(value: float | None, best: float | None, goal: str) -> bool:
    """value beats best (strictly); a missing or NaN value never does, any value beats no best yet."""
    _check(goal)
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if goal == "minimize" else value > best


def reaches(value: float, target: float, goal: str) -> bool:
    """value is at least as good as target."""
    _check(goal)
    return value <= target if goal == "minimize" else value >= target


def rank_key(value: float, goal: str) -> float:
    """Sort key that puts the best value first (ascending sort)."""
    _check(goal)
    return value if goal == "minimize" else -value
