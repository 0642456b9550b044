"""The decoded-image cache's files: one per (data content, input size, decoding), memory-mapped by every trial and
agent, and checked before it is trusted.

An entry is an ordinary .npy file (np.load reads it) followed by a footer: the CRC-32 of every 1 MiB block of the
pixels, then the footer's own length, CRC-32 and a magic. Opening checks the .npy header against the expected
shape, the file size against what the header promises (a truncated copy), the footer, and the block checksums (a
file zeroed, holed by a crash or changed at the same size). A bad entry is rebuilt, and says so in one line.

Why this check: CRC-32 (zlib, ~2 GB/s here, against 0.8 GB/s for SHA-256) is made for accidental damage; against
someone who can write the cache no checksum stored beside it helps. Per block, so that a huge cache can be checked
in part: every block while the pixels fit in VERIFY_BYTES, an evenly spaced sample of that many bytes (first and
last included) beyond. Measured on a 2-core Intel Xeon (busy), page cache warm: 543 images at 224 px (82 MB, all 78 blocks)
open in 52 ms against 6.5 ms for a bare np.load; at 512 px (427 MB, 256 of 408 blocks) in 138 ms against 31 ms.
A trial reads every byte in its first epoch anyway, so the check adds CPU time, not I/O.

Entries are written by write_file_atomically: written and fsynced under a temporary name, then renamed. Two agents
building the same entry at once each rename a whole file into place and a reader gets one or the other, never a
partial file; the checks are for what happens to the file after that.
"""
from __future__ import annotations

import contextlib
import errno
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from covid_sweep.core.errors import UserError
from covid_sweep.core.files import WriteError, write_file_atomically
from covid_sweep.core.paths import CACHE_ENV

FORMAT_VERSION = 2  # 1: a plain .npy without checksums
BLOCK_BYTES = 1 << 20
VERIFY_BYTES = 256 << 20
FOOTER = struct.Struct("<QI8s")  # length and CRC-32 of the JSON before it, magic
MAGIC = b"CSWCACHE"
NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
ROOM_HINT = f"free space there or set ${CACHE_ENV} to a folder on another disk"
WRITE_HINTS = {errno.EDQUOT: ROOM_HINT,
               errno.EFBIG: f"its file system or `ulimit -f` caps the file size; set ${CACHE_ENV} to a folder on another disk"}


class CacheError(UserError):
    """An entry still fails its checks right after being rebuilt (a failing disk or memory)."""


class CacheWriteError(WriteError):
    """The cache could not be written; the message names the file and the cause."""


class Damage(Exception):
    """Why an existing entry cannot be trusted (the message completes "damaged decoded-image cache (...)")."""


def cached_array(path: Path, shape: tuple[int, ...], build: Callable[[], np.ndarray]) -> np.ndarray:
    """The uint8 array of `shape` stored at `path`, read-only and memory-mapped; `build()` makes it first when
    the entry is missing or fails its checks."""
    path = Path(path)
    try:
        return open_checked(path, shape)
    except FileNotFoundError:
        pass
    except Damage as damage:
        print(f"{path}: damaged decoded-image cache ({damage}); rebuilding it", file=sys.stderr, flush=True)
    write_entry(path, shape, build)
    try:
        return open_checked(path, shape)
    except (Damage, FileNotFoundError) as damage:
        raise CacheError(f"{path}: decoded-image cache fails its checks right after being written ({damage}); "
                         "check that disk") from None


def write_entry(path: Path, shape: tuple[int, ...], build: Callable[[], np.ndarray]) -> None:
    """Build and write one entry. Room is checked before `build()`, which may decode for minutes; a failed write
    (full disk, permissions) is a CacheWriteError, and nothing is left behind."""
    with _as_cache_write_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_room(path, int(np.prod(shape)))
    array = build()
    with _as_cache_write_error(path):
        write_file_atomically(path, lambda fh: write_npy_with_checksums(fh, array), binary=True)


@contextlib.contextmanager
def _as_cache_write_error(path: Path) -> Iterator[None]:
    try:
        yield
    except CacheWriteError:
        raise
    except OSError as err:
        raise _write_failure(path, err) from None


def _check_room(path: Path, pixel_bytes: int) -> None:
    free = shutil.disk_usage(path.parent).free
    needed = pixel_bytes + pixel_bytes // BLOCK_BYTES * 16 + 4096  # pixels, checksums, header and footer
    if free < needed:
        raise CacheWriteError(f"{path}: no space left for the decoded-image cache ({needed / 1e6:.1f} MB needed, "
                              f"{free / 1e6:.1f} MB free); {ROOM_HINT}")


def _write_failure(path: Path, err: OSError) -> CacheWriteError:
    cause = err.__cause__ if isinstance(err.__cause__, OSError) else err  # write_file_atomically's WriteError wraps it
    if cause.errno == errno.ENOSPC:
        return CacheWriteError(f"{path}: no space left on its disk for the decoded-image cache; {ROOM_HINT}")
    hint = WRITE_HINTS.get(cause.errno, f"set ${CACHE_ENV} to a folder you can write")
    return CacheWriteError(f"{path}: could not write the decoded-image cache: {cause.strerror or cause}; {hint}")


def write_npy_with_checksums(fh, array: np.ndarray) -> None:
    """The .npy of `array`, then the footer holding its blocks' CRC-32."""
    np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(array))
    data_offset = fh.tell()
    pixels = memoryview(np.ascontiguousarray(array)).cast("B")
    checksums = []
    for start in range(0, len(pixels), BLOCK_BYTES):
        block = pixels[start:start + BLOCK_BYTES]
        # fh.write, not ndarray.tofile (np.save): on a full disk tofile's short write is an OSError with no errno
        fh.write(block)
        checksums.append(zlib.crc32(block))
    footer = json.dumps({"format": FORMAT_VERSION, "data_offset": data_offset, "data_bytes": len(pixels),
                         "block_bytes": BLOCK_BYTES, "crc32": checksums}).encode()
    fh.write(footer)
    fh.write(FOOTER.pack(len(footer), zlib.crc32(footer), MAGIC))


def open_checked(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The entry's pixels, memory-mapped read-only, once its header, size and block checksums hold; Damage if
    not, FileNotFoundError if there is none."""
    try:
        with open(path, "rb") as fh:
            pixels, footer = _map(fh, shape)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise Damage(f"unreadable: {err.strerror or err}") from None
    _check_blocks(pixels.reshape(-1), footer)
    return pixels


def _map(fh, shape: tuple[int, ...]) -> tuple[np.memmap, dict]:
    """Header and layout checked; the pixels mapped from the very file checked (one open: a rename meanwhile
    cannot swap it)."""
    size = fh.seek(0, 2)
    data_offset = _read_npy_header(fh, shape)
    data_bytes = int(np.prod(shape))
    if size < data_offset + data_bytes + FOOTER.size:
        raise Damage(f"truncated: {size} bytes, fewer than its header and pixels take ({data_offset + data_bytes}) "
                     "before the checksum footer")
    footer = _read_footer(fh, size)
    if (footer.get("data_offset"), footer.get("data_bytes")) != (data_offset, data_bytes):
        raise Damage(f"its footer describes other pixels ({footer.get('data_bytes')} bytes at "
                     f"{footer.get('data_offset')}) than its header ({data_bytes} at {data_offset})")
    pixels = np.memmap(fh, dtype=np.uint8, mode="r", offset=data_offset, shape=shape)
    return pixels, footer


def _read_npy_header(fh, shape: tuple[int, ...]) -> int:
    """The offset of the pixels, once the .npy header says `shape`, uint8, C order."""
    fh.seek(0)
    try:
        header = NPY_HEADER_READERS[np.lib.format.read_magic(fh)](fh)
    except (ValueError, KeyError, SyntaxError) as err:
        raise Damage(f"no valid .npy header: {err}") from None
    if header != (tuple(shape), False, np.dtype(np.uint8)):
        raise Damage(f"its header says shape {header[0]} of {header[2]}, expected {tuple(shape)} of uint8")
    return fh.tell()


def _read_footer(fh, size: int) -> dict:
    fh.seek(size - FOOTER.size)
    length, checksum, magic = FOOTER.unpack(fh.read(FOOTER.size))
    if magic != MAGIC or length > size - FOOTER.size:
        raise Damage("no checksum footer at its end: cut short, overwritten, or not written by this version")
    fh.seek(size - FOOTER.size - length)
    raw = fh.read(length)
    if zlib.crc32(raw) != checksum:
        raise Damage("its checksum footer fails its own checksum")
    try:
        footer = json.loads(raw)
    except ValueError:
        footer = None
    if not isinstance(footer, dict):
        raise Damage("its checksum footer is not a JSON object")
    if footer.get("format") != FORMAT_VERSION or footer.get("block_bytes") != BLOCK_BYTES:
        raise Damage(f"written in another format ({footer.get('format')}, blocks of {footer.get('block_bytes')})")
    return footer


def _check_blocks(pixels: np.ndarray, footer: dict) -> None:
    checksums = footer.get("crc32")
    if not isinstance(checksums, list) or len(checksums) != -(-len(pixels) // BLOCK_BYTES):
        raise Damage(f"its footer holds no checksum per {BLOCK_BYTES}-byte block of its {len(pixels)} bytes of pixels")
    for index in blocks_to_check(len(checksums)):
        start = index * BLOCK_BYTES
        if zlib.crc32(pixels[start:start + BLOCK_BYTES]) != checksums[index]:
            raise Damage(f"checksum mismatch in block {index} of {len(checksums)} (pixel bytes {start}-"
                         f"{min(start + BLOCK_BYTES, len(pixels)) - 1}): changed since it was written")


def blocks_to_check(count: int, budget: int = VERIFY_BYTES) -> list[int]:
    """Every block while they fit in `budget` bytes; else that many, evenly spaced, always the first and last."""
    most = max(2, budget // BLOCK_BYTES)
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})
