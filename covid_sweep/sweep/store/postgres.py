"""The PostgreSQL backend of the sweep store: SQLAlchemy 2 Core (engine, pool, pre-ping) over psycopg 3; its
tables are the one schema of schema.py, compiled for PostgreSQL.

The store's SQL is written once, with `?` placeholders (sweep/store/api.py); here it runs as psycopg's `%s`.
Every statement outside `transaction()` commits on its own (autocommit), as in the SQLite backend. The
write lock is a transaction-scoped advisory lock: one writer at a time across every box, released at
COMMIT or ROLLBACK, or by the server when a box dies mid-transaction.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa

from covid_sweep.sweep.store.location import StoreError, StoreLocation, mask_password
from covid_sweep.sweep.store.outage import StoreUnavailable
from covid_sweep.sweep.store.schema import ddl, migrate

# seconds since the epoch by the server's clock: every box reads the same time
NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
# the key of the store-wide write lock (any constant; "covid-sweep" in ASCII, truncated)
LOCK_KEY = 0x636F766964_2D73


class _Result:
    """What the store reads from a statement: rows as mappings, and the count of rows changed."""

    def __init__(self, result: sa.CursorResult):
        self.rowcount = result.rowcount
        self._rows = list(result.mappings()) if result.returns_rows else []

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def fetchall(self):
        return self._rows

    def __iter__(self):
        return iter(self._rows)


class PostgresBackend:
    kind = "postgresql"
    now = NOW

    def __init__(self, location: StoreLocation, create: bool, version: int, known: bool = False):
        self.label = str(location.address)
        url = sa.make_url(str(location.address)).set(drivername="postgresql+psycopg", password=location.password)
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True, pool_size=1)
        self._sql: dict[str, str] = {}
        self._in_transaction = False
        # until the store has opened once, an unreachable server is an error (a wrong URL), not an outage;
        # a store `known` to exist (a controller just started a trial on it) is an outage from the start
        self._opened = known
        self.conn = self._connect()
        try:
            found = self.schema_version()
        except sa.exc.OperationalError as err:  # the server went away between connecting and the first query
            self.close()
            error = StoreUnavailable if known else StoreError
            raise error(f"{self.label}: cannot read the sweep store ({_first_line(err)})") from None
        if not create and found is None:
            self.close()
            raise StoreError(f"{self.label}: no sweep store in this database yet; `covid-sweep sweep --store URL` "
                             "makes one")
        if create:
            with self.transaction():  # two boxes starting at once must not both create the tables
                for statement in ddl(self.dialect):
                    self.conn.exec_driver_sql(statement)
                if self.conn.exec_driver_sql("SELECT COUNT(*) FROM schema_version").scalar() == 0:
                    self.conn.exec_driver_sql("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        self._opened = True

    def _connect(self) -> sa.Connection:
        try:
            return self.engine.connect()
        except sa.exc.OperationalError as err:
            error = StoreUnavailable if self._opened else StoreError
            raise error(f"{self.label}: cannot connect to the sweep store ({_first_line(err)})") from None

    def schema_version(self) -> int | None:
        exists = self.conn.exec_driver_sql("SELECT to_regclass('schema_version') IS NOT NULL").scalar()
        if not exists:
            return None
        return self.conn.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar()

    def upgrade(self, found: int | None) -> None:
        with self.transaction():
            for statement in ddl(self.dialect):
                self.conn.exec_driver_sql(statement)
            migrate(self, found)

    @property
    def dialect(self) -> sa.Dialect:
        return self.engine.dialect

    def columns(self, table: str) -> set[str]:
        rows = self.execute("SELECT column_name FROM information_schema.columns "
                            "WHERE table_schema = current_schema() AND table_name = ?", (table,))
        return {row["column_name"] for row in rows}

    def _translate(self, sql: str) -> str:
        translated = self._sql.get(sql)
        if translated is None:
            translated = self._sql[sql] = sql.replace("?", "%s")
        return translated

    def execute(self, sql: str, params=()) -> _Result:
        statement = self._translate(sql)
        if (self.conn.closed or self.conn.invalidated) and not self._in_transaction:
            self._reconnect()  # the server went away during an earlier call
        try:
            return _Result(self.conn.exec_driver_sql(statement, tuple(params)))
        except sa.exc.DBAPIError as err:
            if not _lost(err):
                raise
            if self._in_transaction:  # the transaction is gone with its connection: its caller retries it whole
                raise StoreUnavailable(f"{self.label}: {_first_line(err)}") from None
        # the server restarted or the network dropped since the last call (a sweep runs for days):
        # one statement outside a transaction is safe to send again on a new connection
        self._reconnect()
        try:
            return _Result(self.conn.exec_driver_sql(statement, tuple(params)))
        except sa.exc.DBAPIError as err:
            if _lost(err):
                raise StoreUnavailable(f"{self.label}: {_first_line(err)}") from None
            raise

    def _reconnect(self) -> None:
        try:
            self.conn.close()
        except sa.exc.SQLAlchemyError:
            pass
        self.conn = self._connect()

    def insert(self, sql: str, params) -> int:
        return self.execute(sql + " RETURNING id", params).fetchone()["id"]

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One writer at a time across every box and process; what is read inside is still true at commit."""
        self.execute("BEGIN")  # reconnects first if the connection was lost while idle
        self._in_transaction = True
        try:
            self.conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            yield self.conn
            self.conn.exec_driver_sql("COMMIT")
        except sa.exc.DBAPIError as err:
            if not _lost(err):
                self._rollback()
                raise
            # the server dropped the connection: it rolled the transaction back; the caller retries it whole
            raise StoreUnavailable(f"{self.label}: {_first_line(err)}") from None
        except BaseException:
            self._rollback()
            raise
        finally:
            self._in_transaction = False

    def _rollback(self) -> None:
        if not self.conn.invalidated:
            self.conn.exec_driver_sql("ROLLBACK")

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


def _lost(err: sa.exc.DBAPIError) -> bool:
    """The connection or the server failed (restart, failover, network), not our SQL."""
    return err.connection_invalidated or isinstance(err, sa.exc.OperationalError)


def _first_line(err: Exception) -> str:
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return mask_password(text[0]) if text else type(err).__name__
