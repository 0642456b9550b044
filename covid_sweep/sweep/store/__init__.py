"""The sweep store: the source of truth for sweeps, trials and metrics (api.py), on SQLite (sqlite.py) or
PostgreSQL (postgres.py), at a location given as a path or URL (location.py)."""

from covid_sweep.sweep.store.api import (
    SCHEMA_VERSION,
    ControllerSeen,
    Store,
    Sweep,
    SweepSnapshot,
    Trial,
    best_finished,
    finished,
    machine_id,
    open_store,
    process_start,
)
from covid_sweep.sweep.store.location import StoreError

__all__ = ["SCHEMA_VERSION", "ControllerSeen", "Store", "StoreError", "Sweep", "SweepSnapshot", "Trial",
           "best_finished", "finished", "machine_id", "open_store", "process_start"]
