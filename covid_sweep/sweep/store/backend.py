"""The interface every store backend declares (SQLite: sqlite.py; PostgreSQL: postgres.py): what Store needs."""

from __future__ import annotations

from typing import Any, ContextManager, Iterable, Protocol, runtime_checkable


class Rows(Protocol):
    """What a statement returns: rows as mappings, and how many rows it changed."""
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list: ...

    def __iter__(self) -> Iterable: ...


@runtime_checkable
class Backend(Protocol):
    kind: str  # "sqlite" or "postgresql"
    now: str   # SQL for the database's clock in epoch seconds
    conn: Any  # the open connection (tests reach under the API through it)

    def schema_version(self) -> int | None:
        """The version the store records; None for a store made before versions were recorded."""

    def upgrade(self, found: int | None) -> None:
        """Create the missing tables and run the migrations from `found` (schema.py), under the write lock."""

    def execute(self, sql: str, params=()) -> Rows:
        """One statement with `?` placeholders, committed on its own outside transaction()."""

    def insert(self, sql: str, params) -> int:
        """An INSERT; the new row's id."""

    def transaction(self) -> ContextManager:
        """The store-wide write lock: one writer at a time across processes and boxes, committed at the end."""

    def close(self) -> None: ...
