"""The embedded sweep store: one SQLite file (WAL) that is the source of truth for sweeps, trials and metrics.

Every per-epoch metric is written here by the trial process itself as it happens, so a kill -9 of
the controller (or of the trial) loses nothing that was already logged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from covid_sweep.core.errors import UserError
from covid_sweep.core.goals import improves
from covid_sweep.core.states import ACTIVE, ENDED, TrialState

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY, name TEXT, source TEXT, config TEXT NOT NULL, data_dir TEXT,
    seed INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep_id TEXT NOT NULL REFERENCES sweeps(id),
    name TEXT NOT NULL UNIQUE,
    params TEXT NOT NULL,
    state TEXT NOT NULL,            -- pending running finished stopped failed interrupted
    owner TEXT,                     -- controller that launched it: host:pid
    pid INTEGER,
    retry_of INTEGER REFERENCES trials(id),
    created REAL NOT NULL, started REAL, ended REAL, heartbeat REAL,
    best REAL, best_epoch INTEGER, epochs INTEGER NOT NULL DEFAULT 0,
    artifact TEXT, error TEXT, stop_requested INTEGER NOT NULL DEFAULT 0,
    pid_start TEXT,                 -- process_start(pid): tells the trial process from a later one with its pid
    phases TEXT                     -- JSON {phase: seconds}: where the trial's wall time went
);
CREATE TABLE IF NOT EXISTS epochs (
    trial_id INTEGER NOT NULL REFERENCES trials(id), epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);
CREATE TABLE IF NOT EXISTS controllers (owner TEXT PRIMARY KEY, heartbeat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS aliases (
    sweep_id TEXT NOT NULL, alias TEXT NOT NULL, trial_id INTEGER NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (sweep_id, alias)
);
"""


def _connect(path: Path) -> sqlite3.Connection:
    # autocommit mode: transactions are explicit (BEGIN IMMEDIATE) where atomicity matters
    conn = sqlite3.connect(str(path), timeout=120, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    columns = {row["name"] for row in conn.execute("PRAGMA table_info(trials)")}
    for column in ("pid_start", "phases"):  # a store made before these columns existed
        if column not in columns:
            conn.execute(f"ALTER TABLE trials ADD COLUMN {column} TEXT")
    return conn


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


def _create(path: Path) -> None:
    """A new store is built under a temporary name and linked into place whole: no one ever opens a
    half-made (zero-byte) one, so a zero-byte store file always means damage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        _connect(tmp).close()  # the last connection closing checkpoints and removes the -wal file
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it meanwhile: use theirs
        except OSError:
            if not path.exists():  # a file system without hard links
                os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)



class StoreError(UserError, LookupError):
    """A sweep or trial id that the store does not hold."""


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
    def from_row(cls, row: sqlite3.Row) -> "Trial":
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

    @property
    def metric(self) -> str | None:
        return self.config.get("metric", {}).get("name")

    @property
    def goal(self) -> str:
        return self.config.get("metric", {}).get("goal", "minimize")


class Store:
    def __init__(self, path: Path, create: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise StoreError(f"{self.path}: no sweep store here; pass the --home (or $COVID_SWEEP_HOME) "
                                 "where `covid-sweep sweep` ran")
            _create(self.path)
        elif self.path.is_file() and self.path.stat().st_size == 0:
            # SQLite would take an empty file for a new database; a store is never empty, so this one was damaged
            raise StoreError(f"{self.path}: empty file, not a sweep store (truncated?); move it aside to start anew")
        try:
            self.conn = _connect(self.path)
            check = self.conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a readable sweep store ({err})") from None
        if check != "ok":
            raise StoreError(f"{self.path}: damaged sweep store (SQLite quick_check: {check})")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def write_lock(self) -> Iterator[sqlite3.Connection]:
        """One writer at a time across processes: what is read inside is still true at commit."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # sweeps
    def create_sweep(self, sweep_id: str, name: str | None, source: str | None, config: dict, data_dir: str | None,
                     seed: int) -> Sweep:
        self.conn.execute("INSERT INTO sweeps VALUES (?,?,?,?,?,?,?)",
                          (sweep_id, name, source, json.dumps(config), data_dir, seed, time.time()))
        return self.sweep(sweep_id)

    def sweep(self, sweep_id: str) -> Sweep:
        row = self.conn.execute("SELECT * FROM sweeps WHERE id=?", (sweep_id,)).fetchone()
        if row is None:
            known = ", ".join(s.id for s in self.sweeps()) or "none"
            raise StoreError(f"{self.path}: no sweep {sweep_id!r} (sweeps here: {known})")
        data = dict(row)
        data["config"] = json.loads(data["config"])
        return Sweep(**data)

    def sweeps(self) -> list[Sweep]:
        return [self.sweep(r["id"]) for r in self.conn.execute("SELECT id FROM sweeps ORDER BY created")]

    def latest_sweep(self) -> Sweep:
        row = self.conn.execute("SELECT id FROM sweeps ORDER BY created DESC LIMIT 1").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no sweeps yet")
        return self.sweep(row["id"])

    # trials
    def add_trial(self, sweep_id: str, name: str, params: dict, owner: str, retry_of: int | None = None) -> Trial:
        cur = self.conn.execute(
            "INSERT INTO trials (sweep_id, name, params, state, owner, retry_of, created) VALUES (?,?,?,?,?,?,?)",
            (sweep_id, name, json.dumps(params), TrialState.PENDING.value, owner, retry_of, time.time()))
        return self.trial(cur.lastrowid)

    def trial(self, trial_id: int) -> Trial:
        row = self.conn.execute("SELECT * FROM trials WHERE id=?", (trial_id,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no trial {trial_id}")
        return Trial.from_row(row)

    def trials(self, sweep_id: str, states: tuple[TrialState, ...] | None = None) -> list[Trial]:
        query, args = "SELECT * FROM trials WHERE sweep_id=?", [sweep_id]
        if states:
            query += f" AND state IN ({','.join('?' * len(states))})"
            args += [TrialState(s).value for s in states]
        return [Trial.from_row(r) for r in self.conn.execute(query + " ORDER BY id", args)]

    def mark_running(self, trial_id: int, pid: int) -> None:
        """Written by the trial process only; a trial already ended (reaped before it started) stays ended."""
        now = time.time()
        self.conn.execute("UPDATE trials SET state=?, pid=?, pid_start=?, started=?, heartbeat=? WHERE id=? AND state=?",
                          (TrialState.RUNNING.value, pid, process_start(pid), now, now, trial_id,
                           TrialState.PENDING.value))

    def log_epoch(self, trial_id: int, record: dict, metric: str | None, goal: str) -> None:
        epoch = int(record["epoch"])
        with self.write_lock() as conn:
            conn.execute("INSERT OR REPLACE INTO epochs VALUES (?,?,?)", (trial_id, epoch, json.dumps(record)))
            value = record.get(metric) if metric else None
            row = conn.execute("SELECT best FROM trials WHERE id=?", (trial_id,)).fetchone()
            best = row["best"]
            better = improves(value, best, goal)
            conn.execute("UPDATE trials SET epochs=?, heartbeat=?, best=CASE WHEN ? THEN ? ELSE best END, "
                         "best_epoch=CASE WHEN ? THEN ? ELSE best_epoch END WHERE id=?",
                         (epoch, time.time(), better, value, better, epoch, trial_id))

    def history(self, trial_id: int) -> list[dict]:
        rows = self.conn.execute("SELECT metrics FROM epochs WHERE trial_id=? ORDER BY epoch", (trial_id,))
        return [json.loads(r["metrics"]) for r in rows]

    def end_trial(self, trial_id: int, state: TrialState, error: str | None = None, artifact: str | None = None,
                  only_if: tuple[TrialState, ...] = ACTIVE) -> bool:
        """Move an active trial to an ended state; a trial already ended (by its own process or a reaper) stays."""
        assert state in ENDED
        cur = self.conn.execute(
            f"UPDATE trials SET state=?, ended=?, error=COALESCE(?, error), artifact=COALESCE(?, artifact) "
            f"WHERE id=? AND state IN ({','.join('?' * len(only_if))})",
            (TrialState(state).value, time.time(), error, artifact, trial_id, *(TrialState(s).value for s in only_if)))
        return cur.rowcount == 1

    def add_phases(self, trial_id: int, phases: dict[str, float]) -> None:
        """Merge {phase: seconds} into the trial's timing record (a later value of a phase replaces the earlier)."""
        with self.write_lock() as conn:
            row = conn.execute("SELECT phases FROM trials WHERE id=?", (trial_id,)).fetchone()
            merged = {**json.loads(row["phases"] or "{}"), **{k: round(float(v), 4) for k, v in phases.items()}}
            conn.execute("UPDATE trials SET phases=? WHERE id=?", (json.dumps(merged), trial_id))

    def request_stop(self, trial_id: int) -> None:
        self.conn.execute("UPDATE trials SET stop_requested=1 WHERE id=?", (trial_id,))

    # controllers
    def heartbeat(self, owner: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO controllers VALUES (?,?)", (owner, time.time()))

    def controller_heartbeat(self, owner: str) -> float | None:
        row = self.conn.execute("SELECT heartbeat FROM controllers WHERE owner=?", (owner,)).fetchone()
        return row["heartbeat"] if row else None

    # aliases
    def set_alias(self, sweep_id: str, alias: str, trial_id: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO aliases VALUES (?,?,?,?)", (sweep_id, alias, trial_id, time.time()))

    def alias(self, sweep_id: str, alias: str) -> int | None:
        row = self.conn.execute("SELECT trial_id FROM aliases WHERE sweep_id=? AND alias=?", (sweep_id, alias)).fetchone()
        return row["trial_id"] if row else None
