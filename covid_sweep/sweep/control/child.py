"""The trial process's side of the embedded protocol: signals, parent death, metrics into the store.

SIGTERM = stop (hyperband or the user): the trial ends cleanly as "stopped", keeping what it logged.
SIGINT  = the controller is shutting down: the trial ends as "interrupted" and a resume retries it.
A controller that dies without a word (kill -9) is noticed as a change of parent: "interrupted".
The sweep's time budget (protocol.DEADLINE) reached: the trial ends as "finished", keeping its best epoch;
a trial that had not scored an epoch by then has nothing to keep and ends as "stopped".
"""

from __future__ import annotations

import os
import signal
import time

from covid_sweep.core.states import TrialState
from covid_sweep.sweep.control.protocol import deadline
from covid_sweep.sweep.store import Store, Sweep, Trial


class TrialProcess:
    def __init__(self, store: Store, trial: Trial, sweep: Sweep):
        self.store, self.trial, self.sweep = store, trial, sweep
        self.stop_state: TrialState | None = None
        self._parent = os.getppid()
        self.deadline = deadline(os.environ)
        signal.signal(signal.SIGTERM, lambda *_: self._request(TrialState.STOPPED))
        signal.signal(signal.SIGINT, lambda *_: self._request(TrialState.INTERRUPTED))

    def _request(self, state: TrialState) -> None:
        self.stop_state = self.stop_state or state

    def start(self) -> None:
        self.store.mark_running(self.trial.id, os.getpid())

    def should_stop(self) -> bool:
        if os.getppid() != self._parent:
            self._request(TrialState.INTERRUPTED)
        if self.deadline is not None and time.time() >= self.deadline:
            self._request(TrialState.FINISHED)  # the budget ended it, not a judgement of its recipe
        return self.stop_state is not None

    def on_epoch(self, record: dict) -> None:
        self.store.log_epoch(self.trial.id, record, self.sweep.metric, self.sweep.goal)

    def end(self, loop_stopped: bool, artifact: str | None) -> TrialState:
        state = (self.stop_state or TrialState.STOPPED) if loop_stopped else TrialState.FINISHED
        if loop_stopped and state == TrialState.FINISHED and self.store.trial(self.trial.id).epochs == 0:
            state = TrialState.STOPPED  # the budget ended it before its first epoch: nothing was kept
        self.store.end_trial(self.trial.id, state, artifact=artifact)
        return state

    def fail(self, error: str) -> None:
        self.store.end_trial(self.trial.id, TrialState.FAILED, error=error[-2000:])
