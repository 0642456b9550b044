"""The embedded sweep store: the source of truth for sweeps, trials and metrics, on SQLite or PostgreSQL.

One API, two backends (store_sqlite.py: one WAL file on this box; store_postgres.py: a server that
many boxes share). The SQL is written once here. Every per-epoch metric is written by the trial
process itself as it happens, so a kill -9 of the controller (or of the trial) loses nothing that was
already logged. Times (created, heartbeats) are read from the database's clock, so boxes whose clocks
disagree still agree on how old a heartbeat is.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from covid_sweep.core.goals import improves, rank_key
from covid_sweep.core.states import ACTIVE, ENDED, TrialState
from covid_sweep.sweep.store.backend import Backend
from covid_sweep.sweep.store.location import StoreError, StoreLocation, parse_location, resolve_location
from covid_sweep.sweep.store.outage import ride_out
from covid_sweep.sweep.store.version import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "Sweep", "SweepSnapshot", "Trial", "best_finished", "finished",
           "machine_id", "open_store", "process_start"]

MACHINE_ENV = "COVID_SWEEP_MACHINE"


def process_start(pid: int) -> str | None:
    """Who holds `pid` now: boot id + start time (clock ticks since boot, /proc/PID/stat field 22), or None
    when it is not running or this is not Linux. The same value means the same process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "(comm)", which may hold spaces; fields[0] is field 3
    return f"{boot}:{fields[19]}"


def machine_id() -> str:
    """This box as the store knows it: where a controller's pid can be checked with kill(pid, 0).

    Boot id + pid namespace on Linux (two containers on one host are two machines here, as their pids
    are), else the host name. $COVID_SWEEP_MACHINE overrides it (tests stand two "boxes" on one host)."""
    return os.environ.get(MACHINE_ENV) or _this_machine()


@functools.cache
def _this_machine() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


@dataclass
class ControllerSeen:
    age_s: float           # seconds since its last heartbeat, by the database's clock
    machine: str | None    # its machine_id(); None for a heartbeat written before machines were recorded


@dataclass
class Trial:
    id: int
    sweep_id: str
    name: str
    params: dict
    state: TrialState
    owner: str | None
    pid: int | None
    retry_of: int | None
    created: float
    started: float | None
    ended: float | None
    heartbeat: float | None
    best: float | None
    best_epoch: int | None
    epochs: int
    artifact: str | None
    error: str | None
    stop_requested: int
    pid_start: str | None = None
    phases: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row) -> "Trial":
        data = dict(row)
        data["params"] = json.loads(data["params"])
        data["phases"] = json.loads(data.get("phases") or "{}")
        data["state"] = TrialState(data["state"])
        return cls(**data)


@dataclass
class Sweep:
    id: str
    name: str | None
    source: str | None
    config: dict
    data_dir: str | None
    seed: int
    created: float

    # the sweep config (W&B's schema, defaults filled by sweeps.SweepConfig) read in one place, typed

    @property
    def metric(self) -> str | None:
        return self._metric.get("name")

    @property
    def goal(self) -> str:
        return self._metric.get("goal", "minimize")  # W&B's default

    @property
    def target(self) -> float | None:
        return self._metric.get("target")

    @property
    def method(self) -> str:
        return self.config.get("method", "?")

    @property
    def run_cap(self) -> int | None:
        return self.config.get("run_cap")

    @property
    def parameters(self) -> dict:
        return self.config.get("parameters", {})

    @property
    def hyperband(self) -> bool:
        return (self.config.get("early_terminate") or {}).get("type") == "hyperband"

    @property
    def _metric(self) -> dict:
        return self.config.get("metric") or {}


def finished(trials: list[Trial]) -> list[Trial]:
    """The trials a sweep may promote, in launch order: finished, with a value of its metric."""
    return [t for t in trials if t.state == TrialState.FINISHED and t.best is not None]


def best_finished(trials: list[Trial], goal: str) -> Trial | None:
    """The finished trial with the best value of the sweep's metric (ties: the earlier trial); None if none."""
    candidates = finished(trials)
    return min(candidates, key=lambda t: (rank_key(t.best, goal), t.id)) if candidates else None


@dataclass(frozen=True)
class SweepSnapshot:
    """What a view shows of one sweep, read with one fixed set of queries however many trials it has (status,
    the live view and the report each take one, instead of a query per trial)."""
    sweep: Sweep
    trials: list[Trial]
    aliases: dict[str, int]          # alias -> trial id
    now: float                       # the database's clock at the read: what trials' started is measured by
    histories: dict[int, list[dict]] = field(default_factory=dict)  # trial id -> its epochs, for the states asked

    def alias(self, name: str) -> int | None:
        return self.aliases.get(name)

    def history(self, trial_id: int) -> list[dict]:
        return self.histories.get(trial_id, [])


class Store:
    """Open (and, with create, make) the store at `location`: an SQLite file path, or a URL
    (postgresql://user[:password]@host[:port]/db, sqlite:///path)."""

    def __init__(self, location: str | Path | StoreLocation, create: bool = True, known: bool = False):
        """known: the store exists (a controller just started a trial on it), so a server that cannot be
        reached while opening is ridden out as an outage instead of refused as a wrong address."""
        self.location = location if isinstance(location, StoreLocation) else parse_location(location)
        self.path = self.location.address  # safe to print: a URL's password is kept apart
        self.backend: Backend
        if self.location.kind == "sqlite":
            from covid_sweep.sweep.store.sqlite import SQLiteBackend

            self.backend = SQLiteBackend(self.path, create, SCHEMA_VERSION,
                                         "pass the --home (or $COVID_SWEEP_HOME) where `covid-sweep sweep` ran, "
                                         "or its --store URL")
        else:
            from covid_sweep.sweep.store.postgres import PostgresBackend

            def open_backend() -> PostgresBackend:
                return PostgresBackend(self.location, create, SCHEMA_VERSION, known=known)

            self.backend = ride_out(open_backend, str(self.path)) if known else open_backend()
        self.conn = self.backend.conn
        self._locked = False
        self._check_version()

    def _check_version(self) -> None:
        version = self.backend.schema_version()
        if version is not None and version > SCHEMA_VERSION:
            self.close()
            raise StoreError(f"{self.path}: sweep store schema version {version} is newer than this covid-sweep "
                             f"reads (version {SCHEMA_VERSION}); upgrade covid-sweep on this box")
        if version != SCHEMA_VERSION:
            self.backend.upgrade(version)

    def close(self) -> None:
        self.backend.close()

    @contextmanager
    def write_lock(self) -> Iterator:
        """One writer at a time across processes (and boxes): what is read inside is still true at commit.
        A caller that must ride out a server restart runs its whole locked block through `retrying`."""
        self._locked = True
        try:
            with self.backend.transaction() as conn:
                yield conn
        finally:
            self._locked = False

    def retrying(self, call):
        """call(), run again whole while the store's server is briefly unreachable (store/outage.py)."""
        return ride_out(call, str(self.path))

    def _execute(self, sql: str, params=()):
        if getattr(self, "_locked", False):  # inside a transaction: retried whole by its caller, if at all
            return self.backend.execute(sql, params)
        return self.retrying(lambda: self.backend.execute(sql, params))

    # sweeps
    def create_sweep(self, sweep_id: str, name: str | None, source: str | None, config: dict, data_dir: str | None,
                     seed: int) -> Sweep:
        self._execute(f"INSERT INTO sweeps (id, name, source, config, data_dir, seed, created) "
                      f"VALUES (?,?,?,?,?,?,{self.backend.now})",
                      (sweep_id, name, source, json.dumps(config), data_dir, seed))
        return self.sweep(sweep_id)

    def sweep(self, sweep_id: str) -> Sweep:
        row = self._execute("SELECT * FROM sweeps WHERE id=?", (sweep_id,)).fetchone()
        if row is None:
            known = ", ".join(s.id for s in self.sweeps()) or "none"
            raise StoreError(f"{self.path}: no sweep {sweep_id!r} (sweeps here: {known})")
        data = dict(row)
        data["config"] = json.loads(data["config"])
        return Sweep(**data)

    def sweeps(self) -> list[Sweep]:
        return [self.sweep(r["id"]) for r in self._execute("SELECT id FROM sweeps ORDER BY created")]

    def latest_sweep(self) -> Sweep:
        row = self._execute("SELECT id FROM sweeps ORDER BY created DESC LIMIT 1").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no sweeps yet")
        return self.sweep(row["id"])

    # trials
    def add_trial(self, sweep_id: str, name: str, params: dict, owner: str, retry_of: int | None = None) -> Trial:
        trial_id = self.backend.insert(
            f"INSERT INTO trials (sweep_id, name, params, state, owner, retry_of, created) "
            f"VALUES (?,?,?,?,?,?,{self.backend.now})",
            (sweep_id, name, json.dumps(params), TrialState.PENDING.value, owner, retry_of))
        return self.trial(trial_id)

    def trial(self, trial_id: int) -> Trial:
        row = self._execute("SELECT * FROM trials WHERE id=?", (trial_id,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no trial {trial_id}")
        return Trial.from_row(row)

    def trials(self, sweep_id: str, states: tuple[TrialState, ...] | None = None) -> list[Trial]:
        query, args = "SELECT * FROM trials WHERE sweep_id=?", [sweep_id]
        if states:
            query += f" AND state IN ({','.join('?' * len(states))})"
            args += [TrialState(s).value for s in states]
        return [Trial.from_row(r) for r in self._execute(query + " ORDER BY id", args)]

    def mark_running(self, trial_id: int, pid: int) -> None:
        """Written by the trial process only; a trial already ended (reaped before it started) stays ended."""
        now = self.backend.now
        self._execute(f"UPDATE trials SET state=?, pid=?, pid_start=?, started={now}, heartbeat={now} "
                      f"WHERE id=? AND state=?",
                      (TrialState.RUNNING.value, pid, process_start(pid), trial_id, TrialState.PENDING.value))

    def log_epoch(self, trial_id: int, record: dict, metric: str | None, goal: str) -> None:
        self.retrying(lambda: self._log_epoch(trial_id, record, metric, goal))  # idempotent: safe to run again

    def _log_epoch(self, trial_id: int, record: dict, metric: str | None, goal: str) -> None:
        epoch = int(record["epoch"])
        with self.write_lock():
            self._execute("INSERT INTO epochs (trial_id, epoch, metrics) VALUES (?,?,?) "
                          "ON CONFLICT (trial_id, epoch) DO UPDATE SET metrics=excluded.metrics",
                          (trial_id, epoch, json.dumps(record)))
            value = record.get(metric) if metric else None
            row = self._execute("SELECT best, best_epoch FROM trials WHERE id=?", (trial_id,)).fetchone()
            best, best_epoch = (value, epoch) if improves(value, row["best"], goal) else (row["best"], row["best_epoch"])
            self._execute(f"UPDATE trials SET epochs=?, heartbeat={self.backend.now}, best=?, best_epoch=? WHERE id=?",
                          (epoch, best, best_epoch, trial_id))

    def snapshot(self, sweep_id: str, histories: tuple[TrialState, ...] = ()) -> SweepSnapshot:
        """The sweep, its trials, its aliases and the database's clock, with the epochs of the trials in the states
        `histories` names: at most five queries, whatever the number of trials."""
        sweep = self.sweep(sweep_id)
        trials = self.trials(sweep_id)
        aliases = {r["alias"]: r["trial_id"]
                   for r in self._execute("SELECT alias, trial_id FROM aliases WHERE sweep_id=?", (sweep_id,))}
        epochs: dict[int, list[dict]] = {}
        if histories:
            rows = self._execute(
                "SELECT e.trial_id, e.metrics FROM epochs e JOIN trials t ON t.id = e.trial_id "
                f"WHERE t.sweep_id=? AND t.state IN ({','.join('?' * len(histories))}) ORDER BY e.trial_id, e.epoch",
                (sweep_id, *(TrialState(s).value for s in histories)))
            for row in rows:
                epochs.setdefault(row["trial_id"], []).append(json.loads(row["metrics"]))
        return SweepSnapshot(sweep, trials, aliases, self.now(), epochs)

    def history(self, trial_id: int) -> list[dict]:
        rows = self._execute("SELECT metrics FROM epochs WHERE trial_id=? ORDER BY epoch", (trial_id,))
        return [json.loads(r["metrics"]) for r in rows]

    def end_trial(self, trial_id: int, state: TrialState, error: str | None = None, artifact: str | None = None,
                  only_if: tuple[TrialState, ...] = ACTIVE) -> bool:
        """Move an active trial to an ended state; a trial already ended (by its own process or a reaper) stays."""
        assert state in ENDED
        cur = self._execute(
            f"UPDATE trials SET state=?, ended={self.backend.now}, error=COALESCE(?, error), "
            f"artifact=COALESCE(?, artifact) WHERE id=? AND state IN ({','.join('?' * len(only_if))})",
            (TrialState(state).value, error, artifact, trial_id, *(TrialState(s).value for s in only_if)))
        return cur.rowcount == 1

    def add_phases(self, trial_id: int, phases: dict[str, float]) -> None:
        """Merge {phase: seconds} into the trial's timing record (a later value of a phase replaces the earlier)."""
        self.retrying(lambda: self._add_phases(trial_id, phases))

    def _add_phases(self, trial_id: int, phases: dict[str, float]) -> None:
        with self.write_lock():
            row = self._execute("SELECT phases FROM trials WHERE id=?", (trial_id,)).fetchone()
            merged = {**json.loads(row["phases"] or "{}"), **{k: round(float(v), 4) for k, v in phases.items()}}
            self._execute("UPDATE trials SET phases=? WHERE id=?", (json.dumps(merged), trial_id))

    def request_stop(self, trial_id: int) -> None:
        self._execute("UPDATE trials SET stop_requested=1 WHERE id=?", (trial_id,))

    # controllers
    def heartbeat(self, owner: str, machine: str | None = None) -> None:
        self._execute(f"INSERT INTO controllers (owner, heartbeat, machine) VALUES (?,{self.backend.now},?) "
                      f"ON CONFLICT (owner) DO UPDATE SET heartbeat=excluded.heartbeat, machine=excluded.machine",
                      (owner, machine or machine_id()))

    def controller_heartbeat(self, owner: str) -> float | None:
        row = self._execute("SELECT heartbeat FROM controllers WHERE owner=?", (owner,)).fetchone()
        return row["heartbeat"] if row else None

    def now(self) -> float:
        """The database's clock (epoch seconds): what trials' started and ended are measured by, on every box."""
        return float(self._execute(f"SELECT {self.backend.now} AS now").fetchone()["now"])

    def controller_seen(self, owner: str) -> ControllerSeen | None:
        """How long ago `owner` last beat, by the database's clock, and on which machine; None if never."""
        row = self._execute(f"SELECT {self.backend.now} - heartbeat AS age, machine FROM controllers WHERE owner=?",
                            (owner,)).fetchone()
        return ControllerSeen(float(row["age"]), row["machine"]) if row else None

    # aliases
    def set_alias(self, sweep_id: str, alias: str, trial_id: int) -> None:
        self._execute(f"INSERT INTO aliases (sweep_id, alias, trial_id, updated) VALUES (?,?,?,{self.backend.now}) "
                      f"ON CONFLICT (sweep_id, alias) DO UPDATE SET trial_id=excluded.trial_id, updated=excluded.updated",
                      (sweep_id, alias, trial_id))

    def alias(self, sweep_id: str, alias: str) -> int | None:
        row = self._execute("SELECT trial_id FROM aliases WHERE sweep_id=? AND alias=?", (sweep_id, alias)).fetchone()
        return row["trial_id"] if row else None


def open_store(store: str | Path | None = None, home: str | Path | None = None, create: bool = True) -> Store:
    """The store a command works on: --store (URL or file), else $COVID_SWEEP_STORE, else HOME/sweeps.db.
    A read command passes create=False, so a mistyped --home or URL is an error, not a new store."""
    return Store(resolve_location(store, home), create=create)
