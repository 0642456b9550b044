"""Where a trial's wall time goes: seconds per named phase, collected by whoever runs a step.

The names the embedded trial records (README, "Where a trial's time goes"), in the order they run:
process_start, imports, wandb_init, data_fingerprint, cache_load, grouping, model_build, warmup, fit,
artifact_write, wandb_log, wandb_finish. The collector knows nothing of where the numbers end up
(the sweep store, a benchmark table).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class PhaseTimer:
    """Phases timed inside another (W&B's init waited for in fit's epoch callback, say) count once, in the
    inner phase: the phases of a trial add up to its wall time."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._inner: list[float] = []  # per open phase, the seconds of the phases timed inside it

    def add(self, name: str, seconds: float) -> None:
        # a phase that runs more than once (one per fold, say) adds up
        self.phases[name] = self.phases.get(name, 0.0) + max(0.0, seconds)

    def move(self, source: str, target: str, seconds: float) -> None:
        """Re-files up to `seconds` of `source` under `target` (fit's first step is its own phase, warmup)."""
        seconds = min(max(0.0, seconds), self.phases.get(source, 0.0))
        self.phases[source] = self.phases.get(source, 0.0) - seconds
        self.add(target, seconds)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.add(name, elapsed - self._inner.pop())
            if self._inner:
                self._inner[-1] += elapsed
