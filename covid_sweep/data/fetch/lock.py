"""Serialising fetches across processes: sweep agents may all resolve one data set at once."""

from __future__ import annotations

import contextlib
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first fetches there are the user's problem
    fcntl = None


@contextlib.contextmanager
def locked(lock_file: Path):
    """Serialise fetches of one data set across processes (sweep agents may all start at once)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield
