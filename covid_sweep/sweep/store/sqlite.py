"""The SQLite backend of the sweep store: one file (WAL), the stdlib driver, BEGIN IMMEDIATE as the write lock.

Kept on the stdlib driver rather than SQLAlchemy: a store call here costs tens of microseconds, and a
SQLAlchemy statement adds about as much again (measured: benchmarks/store_ops.py). SQLAlchemy is imported only
to create or upgrade a store, from the one schema in schema.py.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from covid_sweep.sweep.store.location import StoreError

# seconds since the epoch, by the database's clock (ms resolution)
NOW = "((julianday('now') - 2440587.5) * 86400.0)"
SQLITE_READONLY = 8  # SQLite's primary result code for a refused write (sqlite3 has the name from Python 3.11 only)


def writable(path: Path) -> bool:
    """Whether this process can write the store: the file, and its folder, where SQLite keeps the -wal and -shm
    files. False on a read-only mount, file or folder, and for an immutable file (access() checks them all)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def not_writable(path: Path, needed_for: str = "") -> StoreError:
    return StoreError(f"{path}: sweep store not writable (a read-only file, folder or mount){needed_for}; make it "
                      "writable, or copy its folder somewhere writable and pass that as --home (or --store)")


def _refused_write(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == SQLITE_READONLY
    return "readonly database" in str(err)


def _open(path: Path) -> sqlite3.Connection:
    # autocommit mode: transactions are explicit (BEGIN IMMEDIATE) where atomicity matters
    conn = sqlite3.connect(str(path), timeout=120, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes, for a store this process cannot write. SQLite reads a WAL store read-only
    only where it can make the -shm file beside it, or where the file is declared immutable: that is safe once
    no -wal file is there (every commit is in the main file), and the only way to read a store on a read-only mount."""
    uri = path.absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=120, isolation_level=None, check_same_thread=False)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.OperationalError as err:
        if Path(f"{path}-wal").exists():
            raise StoreError(f"{path}: not writable here, and its {path.name}-wal file holds commits that SQLite can "
                             f"read only where it may write beside it ({err}); open it once where it is writable") from None
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def _create(path: Path, version: int) -> None:
    """A new store is built under a temporary name and linked into place whole: no one ever opens a
    half-made (zero-byte) one, so a zero-byte store file always means damage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(path.parent, os.W_OK):
        raise not_writable(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        conn = _open(tmp)
        conn.executescript(_schema_script())
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        conn.close()  # the last connection closing checkpoints and removes the -wal file
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


def _schema_script() -> str:
    from covid_sweep.sweep.store.schema import ddl

    return ";\n".join(ddl(_dialect())) + ";\n"


def _dialect():
    from sqlalchemy.dialects import sqlite

    return sqlite.dialect()


class SQLiteBackend:
    kind = "sqlite"
    now = NOW

    def __init__(self, path: Path, create: bool, version: int, missing_hint: str):
        """create: a command that may make the store (sweep) writes to it, and is refused at once where it cannot;
        one that may not (status, report, export-best, a trial) opens a store it cannot write read-only, so that
        reading works on a read-only mount, and a write is refused then, naming the store."""
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise StoreError(f"{self.path}: no sweep store here; {missing_hint}")
            _create(self.path, version)
        elif self.path.is_file() and self.path.stat().st_size == 0:
            # SQLite would take an empty file for a new database; a store is never empty, so this one was damaged
            raise StoreError(f"{self.path}: empty file, not a sweep store (truncated?); move it aside to start anew")
        self.read_only = not writable(self.path)
        if create and self.read_only:
            raise not_writable(self.path)
        try:
            self.conn = _open_read_only(self.path) if self.read_only else _open(self.path)
            check = self.conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a readable sweep store ({err})") from None
        if check != "ok":
            raise StoreError(f"{self.path}: damaged sweep store (SQLite quick_check: {check})")

    def schema_version(self) -> int | None:
        """The version written in the store; None for one made before versions were recorded."""
        try:
            row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        except sqlite3.OperationalError:  # no such table
            return None
        return row[0]

    def upgrade(self, found: int | None) -> None:
        """Bring a store made by an older covid-sweep up to date; concurrent openers wait on the lock."""
        from covid_sweep.sweep.store.schema import migrate

        if self.read_only:
            raise StoreError(f"{self.path}: sweep store made by an older covid-sweep, and not writable here to "
                             "upgrade it; run any covid-sweep command on it once where it is writable")
        self.conn.executescript(_schema_script())  # the missing tables; outside the transaction, which it would commit
        with self.transaction():
            migrate(self, found)

    @property
    def dialect(self):
        return _dialect()

    def columns(self, table: str) -> set[str]:
        return {row["name"] for row in self.conn.execute(f"PRAGMA table_info({table})")}

    def execute(self, sql: str, params=()):
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as err:
            raise self._refused(err) from None

    def insert(self, sql: str, params) -> int:
        return self.execute(sql, params).lastrowid

    def _refused(self, err: sqlite3.OperationalError) -> Exception:
        """A write refused (a store opened read-only, or remounted read-only since) as one line naming the store."""
        return not_writable(self.path) if _refused_write(err) else err

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One writer at a time across processes: what is read inside is still true at commit."""
        if self.read_only:
            raise not_writable(self.path)
        self.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()
