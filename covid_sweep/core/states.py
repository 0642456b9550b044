"""The states of a trial: one definition for the store, engine adapter, controller, trial process and promotion.

str-valued, so the SQLite store keeps the very strings it always stored and a state compares equal to
its string ("finished" == TrialState.FINISHED).
"""

from __future__ import annotations

from enum import Enum


class TrialState(str, Enum):
    PENDING = "pending"          # claimed, process not started yet
    RUNNING = "running"
    FINISHED = "finished"        # ran to its epochs or its early stop
    STOPPED = "stopped"          # asked to stop (hyperband, SIGTERM): counts as finished for the engine
    FAILED = "failed"            # crashed, NaN loss, bad data; imputed by the engine
    INTERRUPTED = "interrupted"  # its controller went away; retried once

    def __str__(self) -> str:  # print and f-strings show "finished", not "TrialState.FINISHED"
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


ACTIVE = (TrialState.PENDING, TrialState.RUNNING)
ENDED = (TrialState.FINISHED, TrialState.STOPPED, TrialState.FAILED, TrialState.INTERRUPTED)
