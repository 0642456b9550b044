"""The sweep store's one schema, in SQLAlchemy Core, created for SQLite and PostgreSQL alike, and its numbered
migrations.

The tables are declared once here; each backend runs the DDL SQLAlchemy compiles for its own dialect (SQLite
through the stdlib driver, which stays the fast path: see sqlite.py). A store records its version in the table
`schema_version`; a store at version N-1 is brought to N by MIGRATIONS[N], in order, inside one write-locked
transaction. Version 1 is every store made before versions were recorded.
"""

from __future__ import annotations

from typing import Callable, Protocol

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from covid_sweep.sweep.store.version import SCHEMA_VERSION

metadata = sa.MetaData()
# SQLite's rowid alias must be spelled INTEGER; PostgreSQL gets a 64-bit key
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

sweeps = sa.Table(
    "sweeps", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("config", sa.Text, nullable=False),  # the sweep YAML as JSON
    sa.Column("data_dir", sa.Text),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)

trials = sa.Table(
    "trials", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("sweep_id", sa.Text, sa.ForeignKey("sweeps.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # a TrialState value
    sa.Column("owner", sa.Text),  # the controller that launched it: host:pid
    sa.Column("pid", sa.Integer),
    sa.Column("retry_of", _ID, sa.ForeignKey("trials.id")),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("started", sa.Float),
    sa.Column("ended", sa.Float),
    sa.Column("heartbeat", sa.Float),
    sa.Column("best", sa.Float),
    sa.Column("best_epoch", sa.Integer),
    sa.Column("epochs", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("artifact", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("stop_requested", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("pid_start", sa.Text),  # process_start(pid): tells the trial process from a later one with its pid
    sa.Column("phases", sa.Text),  # JSON {phase: seconds}: where the trial's wall time went
    sa.Index("trials_by_sweep", "sweep_id", "id"),
    sqlite_autoincrement=True,  # a deleted trial's id is never handed out again
)

epochs = sa.Table(
    "epochs", metadata,
    sa.Column("trial_id", _ID, sa.ForeignKey("trials.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("metrics", sa.Text, nullable=False),  # the epoch's record as JSON
)

controllers = sa.Table(
    "controllers", metadata,
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("machine", sa.Text),  # machine_id() of its box: where its pid can be checked
)

aliases = sa.Table(
    "aliases", metadata,
    sa.Column("sweep_id", sa.Text, primary_key=True),
    sa.Column("alias", sa.Text, primary_key=True),
    sa.Column("trial_id", _ID, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, nullable=False),
)


def ddl(dialect: sa.Dialect) -> list[str]:
    """CREATE TABLE / INDEX IF NOT EXISTS for every table, in dependency order, as `dialect` spells them."""
    statements = [CreateTable(table, if_not_exists=True) for table in metadata.sorted_tables]
    statements += [CreateIndex(index, if_not_exists=True) for table in metadata.sorted_tables for index in table.indexes]
    return [str(statement.compile(dialect=dialect)).strip() for statement in statements]


def column_type(table: str, column: str, dialect: sa.Dialect) -> str:
    """The SQL type of a declared column, for ALTER TABLE ... ADD COLUMN."""
    return metadata.tables[table].c[column].type.compile(dialect=dialect)


class Migrating(Protocol):
    """What a migration needs of a backend, inside its write-locked transaction."""
    dialect: sa.Dialect

    def columns(self, table: str) -> set[str]: ...

    def execute(self, sql: str, params=()): ...


def _add_missing_columns(backend: Migrating, wanted: dict[str, tuple[str, ...]]) -> None:
    for table, columns in wanted.items():
        have = backend.columns(table)
        for column in columns:
            if column not in have:
                backend.execute(f"ALTER TABLE {table} ADD COLUMN {column} {column_type(table, column, backend.dialect)}")


def _to_2(backend: Migrating) -> None:
    """Stores made before versions were recorded lack some of: trials.pid_start and .phases, controllers.machine."""
    _add_missing_columns(backend, {"trials": ("pid_start", "phases"), "controllers": ("machine",)})


MIGRATIONS: dict[int, Callable[[Migrating], None]] = {2: _to_2}


def migrate(backend: Migrating, found: int | None) -> None:
    """Bring a store at version `found` (None: before versions were recorded) to SCHEMA_VERSION; the caller holds
    the write lock, and the missing tables were created already."""
    for version in range((found or 1) + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version](backend)
    backend.execute("DELETE FROM schema_version")
    backend.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
