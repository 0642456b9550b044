"""Where a sweep store lives: an SQLite file (default HOME/sweeps.db) or a PostgreSQL URL.

`--store` and $COVID_SWEEP_STORE take either. A password in a URL is kept apart from the address the
store is known by (messages, the trial argv), so it is never printed: trial processes get it as
PGPASSWORD, which libpq reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from covid_sweep.core import paths
from covid_sweep.core.errors import UserError

STORE_ENV = "COVID_SWEEP_STORE"
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


class StoreLocationError(UserError, ValueError):
    """A --store value that names no store this code can open."""


class StoreError(UserError, LookupError):
    """A store that cannot be opened or used, or a sweep or trial id that it does not hold."""


@dataclass(frozen=True)
class StoreLocation:
    kind: str                 # "sqlite" or "postgresql"
    address: str | Path       # the file, or the URL without its password: safe to print and to pass on
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return str(self.address)

    @property
    def secret_env(self) -> dict[str, str]:
        """What a child process needs beside `address` to connect (libpq reads PGPASSWORD)."""
        return {"PGPASSWORD": self.password} if self.password else {}


def mask_password(url: str) -> str:
    """`url` with any password (user:password@, or libpq's ?password=) replaced by ***, for messages."""
    parts = urlsplit(url)
    query, hidden = _without_password(parts.query)
    if hidden is not None:
        parts = parts._replace(query="&".join(filter(None, (query, "password=***"))))
    if parts.password is None:
        return urlunsplit(parts)
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


def _without_password(query: str) -> tuple[str, str | None]:
    """The query string without libpq's `password` parameter, and that password (None when absent)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    password = next((v for k, v in pairs if k == "password"), None)
    return urlencode([(k, v) for k, v in pairs if k != "password"]), password


def parse_location(value: str | Path) -> StoreLocation:
    """A path (or sqlite:///path) is an SQLite store; postgresql://user[:password]@host[:port]/db a PostgreSQL one."""
    if isinstance(value, Path) or "://" not in value:
        return StoreLocation("sqlite", Path(value))
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if not parts.path or parts.path == "/":
            raise StoreLocationError(f"--store {mask_password(value)}: no file path (sqlite:///path/to/sweeps.db)")
        return StoreLocation("sqlite", Path(unquote(parts.path)))
    if scheme not in POSTGRES_SCHEMES:
        raise StoreLocationError(f"--store {mask_password(value)}: unsupported scheme {parts.scheme!r} "
                                 "(use postgresql://user@host:port/db, or a path to an SQLite file)")
    if not parts.path.strip("/"):
        raise StoreLocationError(f"--store {mask_password(value)}: no database name (postgresql://user@host:port/db)")
    query, query_password = _without_password(parts.query)
    password = unquote(parts.password) if parts.password is not None else query_password
    netloc = parts.netloc.rsplit("@", 1)
    if len(netloc) == 2:
        netloc = [netloc[0].split(":", 1)[0] + "@" + netloc[1]]
    address = urlunsplit(("postgresql", netloc[0], parts.path, query, ""))
    return StoreLocation("postgresql", address, password)


def resolve_location(store: str | Path | None, home: Path | str | None) -> StoreLocation:
    """--store, else $COVID_SWEEP_STORE, else the SQLite file of --home / $COVID_SWEEP_HOME."""
    value = store or os.environ.get(STORE_ENV)
    if value:
        return parse_location(value)
    return StoreLocation("sqlite", paths.store_path(paths.home(home)))
