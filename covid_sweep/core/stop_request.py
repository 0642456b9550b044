"""SIGTERM as a request to stop the trial, for the `wandb agent` entrypoint.

`wandb agent` stops a trial (a `stop` command from the server, hyperband, the agent shutting down) with
SIGTERM and sends SIGKILL 30 s later. Python's default SIGTERM action kills at once, so the handler must be
in place before the entrypoint spends its first seconds importing torch, wandb and albumentations: the
entrypoint installs it first (covid_sweep/agent.py), and the trial polls it between batches.
"""

from __future__ import annotations

import signal


class StopRequest:
    """A flag a SIGTERM sets; call it to ask whether a stop was requested."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> "StopRequest":
        signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def _on_signal(self, signum, frame) -> None:
        self.requested = True

    def __call__(self) -> bool:
        return self.requested


# the one the entrypoint installs before its heavy imports; the trial code reads the same flag
SIGTERM_STOP = StopRequest()
