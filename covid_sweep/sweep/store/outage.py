"""Riding out a store that is briefly gone: a PostgreSQL restart, a failover, a network blip.

A sweep runs for days; its server will restart now and then. A store call that finds the server gone
waits and tries again, with backoff, for about the window in which other controllers would still take
this one for alive (controller.STALE_CONTROLLER_S). Only then does it give up, with one line. A call is
retried whole (one statement, or one write-locked transaction that was rolled back with the connection),
so nothing committed is lost and nothing is applied twice that is not idempotent.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, TypeVar

from covid_sweep.sweep.store.location import StoreError

OUTAGE_ENV = "COVID_SWEEP_STORE_OUTAGE_S"
OUTAGE_S = 60.0
FIRST_WAIT_S, LONGEST_WAIT_S = 0.25, 5.0

T = TypeVar("T")


class StoreUnavailable(StoreError):
    """The store's server could not be reached or dropped the connection: worth waiting for."""


def outage_window() -> float:
    try:
        return float(os.environ.get(OUTAGE_ENV, OUTAGE_S))
    except ValueError:
        return OUTAGE_S


def ride_out(call: Callable[[], T], label: str, window_s: float | None = None,
             sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T:
    """call(), retried while it raises StoreUnavailable, for up to window_s; then a StoreError saying so."""
    window_s = outage_window() if window_s is None else window_s
    started, wait = None, FIRST_WAIT_S
    while True:
        try:
            return call()
        except StoreUnavailable as err:
            now = clock()
            if started is None:
                started = now
                print(f"sweep store {label} unreachable ({err}); retrying for up to {window_s:g} s", file=sys.stderr,
                      flush=True)
            if now - started >= window_s:
                raise StoreError(f"{label}: the sweep store stayed unreachable for {window_s:g} s ({err})") from None
            sleep(min(wait, max(0.0, window_s - (now - started))))
            wait = min(wait * 2, LONGEST_WAIT_S)
