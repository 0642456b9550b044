"""Why a controller stopped, typed: decisions are made on the reason, messages are only shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class StopReason(str, Enum):
    RUN_CAP = "run_cap"                # the sweep's run_cap of original trials is launched
    EXHAUSTED = "exhausted"            # the engine has nothing left to suggest (a finished grid)
    TARGET = "target"                  # a trial reached metric.target
    COUNT = "count"                    # this invocation launched its --count
    BUDGET = "budget"                  # this invocation's --budget ran out
    EARLY_FAILURES = "early_failures"  # trials in a row failed before their first epoch: data or set-up, not a recipe
    SIGNAL = "signal"                  # SIGINT or SIGTERM to the controller

    @property
    def retryable(self) -> bool:
        """Nothing left to claim, but another controller's trial may still be interrupted and need a retry here."""
        return self in (StopReason.RUN_CAP, StopReason.EXHAUSTED)

    @property
    def failure(self) -> bool:
        """The sweep could not do its work: scripts and CI must see a non-zero exit."""
        return self is StopReason.EARLY_FAILURES


@dataclass(frozen=True)
class Stop:
    reason: StopReason
    text: str  # for people: "run_cap 6 reached"


@dataclass
class Outcome:
    sweep_id: str
    launched: list[str] = field(default_factory=list)
    stop: Stop | None = None

    @property
    def reason(self) -> str:
        return self.stop.text if self.stop else ""

    @property
    def failed(self) -> bool:
        return self.stop is not None and self.stop.reason.failure
