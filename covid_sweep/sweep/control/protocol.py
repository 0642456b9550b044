"""The embedded protocol between the controller and a trial process: what starts a trial and what its argv says.

The controller builds the argv with `embedded_argv` and has the launcher run the trial entry
(covid_sweep.sweep.control.trial_entry), which reads it back with `parse`. Everything else the two sides share goes
through the store (sweep/control/child.py) and signals.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

# wall-clock stamps (time.time()) the launcher puts in a trial process's environment: when the controller
# asked for the process, and when the forked child began running; the trial turns them into its first phases
LAUNCHED_AT = "COVID_SWEEP_LAUNCHED_AT"
ENTERED_AT = "COVID_SWEEP_ENTERED_AT"
# the sweep's time budget, as a wall-clock time (time.time()) on this box: a trial still running then ends
# itself between two batches as finished, keeping its best epoch; no signal can arrive before it listens
DEADLINE = "COVID_SWEEP_DEADLINE"


def deadline(environ: Mapping[str, str]) -> float | None:
    try:
        return float(environ[DEADLINE])
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class EmbeddedTrial:
    store: Path | str            # the SQLite file, or the store's URL (never with its password: see store/location.py)
    trial_id: int
    artifacts: Path | None = None  # the shared artifacts folder (--artifacts), else HOME/artifacts


@dataclass(frozen=True)
class Invocation:
    embedded: EmbeddedTrial | None  # None: run under `wandb agent`, params in wandb.config and `rest`
    home: Path | None
    rest: list[str]                  # the `--key=value` sweep parameters of `wandb agent`


def embedded_argv(store: Path | str, trial_id: int, home: Path, artifacts: Path | None = None) -> list[str]:
    argv = ["--store", str(store), "--trial", str(trial_id), "--home", str(home)]
    return argv + (["--artifacts", str(artifacts)] if artifacts else [])


def _store_arg(value: str) -> Path | str:
    return value if "://" in value else Path(value)  # Path() would fold a URL's "//"


def parse(argv: Sequence[str]) -> Invocation:
    parser = argparse.ArgumentParser(prog="covid-sweep-agent", add_help=False, allow_abbrev=False)
    parser.add_argument("--store", type=_store_arg)
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--trial", type=int)
    parser.add_argument("--home", type=Path)
    known, rest = parser.parse_known_args(list(argv))
    embedded = (EmbeddedTrial(known.store, known.trial, known.artifacts)
                if known.store is not None and known.trial is not None else None)
    return Invocation(embedded=embedded, home=known.home, rest=rest)


def startup_phases(environ: Mapping[str, str], now: float) -> dict[str, float]:
    """process_start (launch request -> child running) and imports (child running -> `now`, the trial code's
    start), from the launcher's stamps; empty where a stamp is missing (a process not started by the launcher)."""
    try:
        launched, entered = float(environ[LAUNCHED_AT]), float(environ[ENTERED_AT])
    except (KeyError, ValueError):
        return {}
    return {"process_start": max(0.0, entered - launched), "imports": max(0.0, now - entered)}
