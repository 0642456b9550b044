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
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        # a phase that runs more than once (one per fold, say) adds up
        self.phases[name] = self.phases.get(name, 0.0) + max(0.0, seconds)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)
