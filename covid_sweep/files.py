"""File-mode helper shared by every atomic write (artifacts, submissions, export folders)."""

from __future__ import annotations

import os
from pathlib import Path


def umask_mode(mode: int = 0o666) -> int:
    """`mode` less the process umask: what open() would give a new file (mkstemp/mkdtemp give 0600/0700)."""
    current = os.umask(0)
    os.umask(current)
    return mode & ~current


def apply_umask(folder: Path) -> None:
    """Give a mkdtemp-made folder and everything in it the modes a plain mkdir/open would have."""
    folder.chmod(umask_mode(0o777))
    for path in folder.rglob("*"):
        path.chmod(umask_mode(0o777 if path.is_dir() else 0o666))
