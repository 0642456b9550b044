"""The one implementation of staged, atomic writes (artifacts, submissions, export folders, data sets, caches).

Everything is first written under a hidden temporary name beside its target and then renamed into
place, so a reader sees the old state or the whole new one. The temporary name is removed on every
path out, and a full or read-only disk becomes a one-line WriteError naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator, Mapping

from covid_sweep.core.errors import UserError

# errors of the disk rather than of the program: a user can act on them (free space, fix permissions)
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class WriteError(UserError, OSError):
    """A file or folder could not be written (full disk, quota, read-only, permissions)."""


class ExistsError(UserError, FileExistsError):
    """The target exists and overwriting it was not asked for."""


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


@contextlib.contextmanager
def disk_errors(target: Path) -> Iterator[None]:
    """Turn a disk-level OSError into one line naming `target`; other OSErrors are bugs and stay as they are."""
    try:
        yield
    except OSError as err:
        if isinstance(err, UserError) or err.errno not in DISK_ERRNOS:
            raise
        raise WriteError(f"{target}: could not write: {err.strerror or err}") from err


def ensure_free_space(target: Path, nbytes: int) -> None:
    """Refuse, as a WriteError, to start a write of `nbytes` that cannot fit beside `target`."""
    free = shutil.disk_usage(Path(target).parent).free
    if free < nbytes:
        raise WriteError(f"{target}: could not write: {nbytes} bytes needed, {free} free on its disk")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def staged_dir(target: Path, tag: str = "tmp") -> Iterator[Path]:
    """A private folder beside `target` to build in; whatever is left of it is removed on every path out."""
    target = Path(target)
    with disk_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{tag}-"))
    try:
        with disk_errors(target):
            yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_dir(staging: Path, target: Path, replace: bool = False) -> None:
    """Rename a finished staging folder to `target`. An existing target is refused unless `replace`: then it
    is moved aside, and deleted only once the new one is in place (put back if that rename fails)."""
    staging, target = Path(staging), Path(target)
    apply_umask(staging)  # mkdtemp's 0700 and safetensors' 0600 would lock others out of a shared HOME
    if not target.exists():
        os.rename(staging, target)  # an empty or new target only: never half a folder
        return
    if not replace:
        raise ExistsError(f"{target}: already exists; refusing to overwrite")
    aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def install_entries(staging: Path, out_dir: Path, replace: bool) -> None:
    """Move every entry of `staging` into `out_dir`: all of them or, on any error, none (replaced entries are
    put back). Entries of out_dir that staging does not hold are left alone. An existing entry is refused
    (ExistsError) unless `replace`."""
    staging, out_dir = Path(staging), Path(out_dir)
    entries = sorted(os.listdir(staging))
    if not replace:
        taken = [e for e in entries if os.path.lexists(out_dir / e)]
        if taken:
            raise ExistsError(f"{out_dir / taken[0]}: already exists; pass --force to overwrite it")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".old-") as backup:
        moved_aside: list[str] = []
        installed: list[str] = []
        try:
            for entry in entries:
                if os.path.lexists(out_dir / entry):
                    if not replace:  # created meanwhile: never overwrite without force
                        raise ExistsError(f"{out_dir / entry}: already exists; pass --force to overwrite it")
                    os.replace(out_dir / entry, Path(backup) / entry)
                    moved_aside.append(entry)
                os.replace(staging / entry, out_dir / entry)
                installed.append(entry)
        except BaseException:
            for entry in installed:
                _remove(out_dir / entry)
            for entry in moved_aside:
                os.replace(Path(backup) / entry, out_dir / entry)
            raise


def write_files_atomically(files: Mapping[Path, str], force: bool = False) -> None:
    """Text files in one folder, all written or none: staged (and fsynced) first, then moved in together."""
    paths = [Path(p) for p in files]
    folder = paths[0].parent
    assert all(p.parent == folder for p in paths), "one folder only: the all-or-none move is per folder"
    with staged_dir(folder / paths[0].name) as staging:
        for path in paths:
            _write_synced(staging / path.name, lambda fh, text=files[path]: fh.write(text), "w")
            os.chmod(staging / path.name, umask_mode())
        with disk_errors(folder):
            install_entries(staging, folder, replace=force)


def _write_synced(path: Path, write: Callable, mode: str) -> None:
    encoding = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
    with open(path, mode, **encoding) as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def write_file_atomically(path: Path, write: Callable, force: bool = True, binary: bool = False) -> Path:
    """`write(file object)` into a temp file beside `path`, fsync, then rename into place: a reader sees the old
    file or the whole new one. Without force an existing file is never replaced (not even one created meanwhile)."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            _write_synced(Path(tmp), write, "wb" if binary else "w")
            os.chmod(tmp, umask_mode())
            if force:
                os.replace(tmp, path)
            else:
                _link_no_clobber(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return path


def _link_no_clobber(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)  # atomic, and fails if the name was taken since any earlier check
    except FileExistsError:
        raise ExistsError(f"{path}: already exists; pass --force to overwrite it") from None
    except OSError as err:
        if err.errno in DISK_ERRNOS - {errno.EPERM}:
            raise
        os.replace(tmp, path)  # a file system without hard links: the caller's check is the guard


@contextlib.contextmanager
def redirected_tempdir(folder: Path) -> Iterator[Path]:
    """Inside the block, `folder` is where this process's temporary files go (tempfile's default, read once and
    cached, so set here rather than through the environment) and $TMPDIR of the processes it starts."""
    saved_default, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = str(folder)
    try:
        yield Path(folder)
    finally:
        tempfile.tempdir = saved_default
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


@contextlib.contextmanager
def private_tempdir(prefix: str) -> Iterator[Path]:
    """A new folder in the temp dir for the temporary files made inside the block, removed with all of them at
    its end. wandb and torch remove theirs only when the interpreter exits normally; a forked trial process
    ends with os._exit, and a warm worker does not end between trials: without this, each trial would leave
    its temporary folders behind."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with redirected_tempdir(folder):
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_text_atomically(path: Path, text: str, force: bool = False) -> Path:
    return write_file_atomically(path, lambda fh: fh.write(text), force=force)


def write_bytes_atomically(path: Path, data: bytes, force: bool = True) -> Path:
    return write_file_atomically(path, lambda fh: fh.write(data), force=force, binary=True)
