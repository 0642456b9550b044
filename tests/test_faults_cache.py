"""Fault injection on the decoded-image cache (issue 26, items 3, 4 and 5), one test per fault, named after it.

The cache (covid_sweep/data/decoded_cache.py) is shared by every trial and agent. What is guaranteed: a damaged
entry (cut short, zeroed, changed) is never trusted but rebuilt, saying so in one line that names the file and why;
concurrent builds each publish a whole file; a failed write (full disk, size limit) is one line naming the file,
never a bare OSError, and leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from covid_sweep.cli import main
from covid_sweep.data import decoded_cache
from covid_sweep.data.layout import cached_images, decode_resized, fingerprint, load_split

ROOT = Path(__file__).resolve().parents[1]


def _decoded_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "decoded"  # conftest points COVID_SWEEP_CACHE at tmp_path/cache


def _train_entry(tmp_path: Path) -> Path:
    entries = [p for p in _decoded_dir(tmp_path).iterdir() if p.name.startswith("train-") and not p.name.startswith(".")]
    assert len(entries) == 1, entries
    return entries[0]


def _pixel_span(entry: Path) -> tuple[int, int]:
    """(offset, length) of the pixels, from the entry's .npy header."""
    with open(entry, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        shape, _, _ = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}[version](fh)
        return fh.tell(), int(np.prod(shape))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def _one_line_error(result, *needles) -> str:
    """check-data failed with one line ("Error: ..."), its last, and no traceback (it prints counts before the cache)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert errors == lines[-1:] and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# ---- item 3: a cache file cut short between two sweeps ---------------------------------------------------

def test_truncated_decoded_cache_is_rebuilt_with_one_line_and_check_data_still_passes(tiny_data, tmp_path):
    first = CliRunner().invoke(main, ["check-data", str(tiny_data)])
    assert first.exit_code == 0, first.output
    entry = _train_entry(tmp_path)
    with open(entry, "r+b") as fh:
        fh.truncate(entry.stat().st_size // 2)

    again = CliRunner().invoke(main, ["check-data", str(tiny_data)])

    assert again.exit_code == 0, again.output
    notices = [line for line in again.output.splitlines() if "decoded-image cache" in line]
    assert len(notices) == 1 and str(entry) in notices[0] and "truncated" in notices[0] and "rebuilding" in notices[0]
    assert "Traceback" not in again.output
    split = load_split(tiny_data, "train")
    assert np.array_equal(cached_images(split, 32), decode_resized(split, 32))  # whole again, and trusted
    assert _leftovers(entry.parent) == []


# ---- item 4: a cache file zeroed, or changed, at the same size ------------------------------------------

def _zero_the_pixels(entry: Path) -> None:
    offset, length = _pixel_span(entry)
    with open(entry, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(length))


def _flip_one_byte_of_the_last_image(entry: Path) -> None:
    offset, length = _pixel_span(entry)
    with open(entry, "r+b") as fh:
        fh.seek(offset + length - 100)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x10]))


@pytest.mark.parametrize("damage", [_zero_the_pixels, _flip_one_byte_of_the_last_image], ids=["zeroed", "one-byte"])
def test_decoded_cache_changed_at_the_same_size_is_caught_by_its_checksum_and_rebuilt(tiny_data, tmp_path, capsys,
                                                                                      damage):
    split = load_split(tiny_data, "train")
    expected = decode_resized(split, 32)
    cached_images(split, 32)
    entry = _train_entry(tmp_path)
    size = entry.stat().st_size
    damage(entry)
    assert entry.stat().st_size == size
    capsys.readouterr()

    images = cached_images(split, 32)  # what the next trial's start does

    assert np.array_equal(images, expected)  # the decoded images, never the damaged ones
    notices = capsys.readouterr().err.strip().splitlines()
    assert len(notices) == 1 and str(entry) in notices[0] and "checksum mismatch" in notices[0], notices
    assert np.array_equal(cached_images(split, 32), expected) and capsys.readouterr().err == ""  # rebuilt once


def test_a_huge_cache_checks_first_last_and_evenly_spaced_blocks_within_its_budget():
    assert decoded_cache.blocks_to_check(78) == list(range(78))  # 543 images at 224 px: every block
    sampled = decoded_cache.blocks_to_check(4000, budget=16 * decoded_cache.BLOCK_BYTES)
    assert len(sampled) == 16 and sampled[0] == 0 and sampled[-1] == 3999
    assert max(np.diff(sampled)) - min(np.diff(sampled)) <= 1


# ---- concurrent builders and readers ----------------------------------------------------------------------

def test_two_builders_of_one_damaged_entry_at_once_each_publish_a_whole_file(tiny_data, tmp_path, monkeypatch):
    split = load_split(tiny_data, "train")
    expected = decode_resized(split, 32)
    cached_images(split, 32)
    _zero_the_pixels(_train_entry(tmp_path))
    both_building = threading.Barrier(2, timeout=120)
    real_decode = decode_resized

    def decode_while_the_other_decodes(s, size):
        both_building.wait()  # both found the entry bad before either renamed its rebuild into place
        return real_decode(s, size)

    monkeypatch.setattr("covid_sweep.data.layout.decode_resized", decode_while_the_other_decodes)
    results, errors = [None, None], []

    def trial(i):
        try:
            results[i] = np.array(cached_images(split, 32))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and all(np.array_equal(r, expected) for r in results)
    assert _leftovers(_decoded_dir(tmp_path)) == []
    assert np.array_equal(decoded_cache.open_checked(_train_entry(tmp_path), expected.shape), expected)


def test_an_entry_being_written_is_never_visible_under_its_name(tiny_data, tmp_path, monkeypatch):
    split = load_split(tiny_data, "train")
    seen_mid_write = []
    real_write = decoded_cache.write_npy_with_checksums

    def write_and_look(fh, array):
        real_write(fh, array)
        fh.flush()
        try:  # another trial opening the entry now
            decoded_cache.open_checked(next(_decoded_dir(tmp_path).glob("train-*.npy")), array.shape)
            seen_mid_write.append("opened")
        except StopIteration:
            seen_mid_write.append("absent")

    monkeypatch.setattr(decoded_cache, "write_npy_with_checksums", write_and_look)
    cached_images(split, 32)
    assert seen_mid_write == ["absent"]


# ---- item 5: a full disk, or any write error, while writing the cache ----------------------------------------

class _DiskThatFills:
    """A file on a disk with `room` bytes left: what write(2) does then, as Python's file objects raise it."""

    def __init__(self, fh, room: int):
        self._fh, self._room = fh, room

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self._room:
            self._fh.write(data[:self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)


def test_full_disk_while_writing_the_decoded_cache_is_one_line_naming_it_and_leaves_nothing(tiny_data, tmp_path,
                                                                                           monkeypatch):
    real_write = decoded_cache.write_npy_with_checksums
    monkeypatch.setattr(decoded_cache, "write_npy_with_checksums",
                        lambda fh, array: real_write(_DiskThatFills(fh, room=20_000), array))

    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])

    key = fingerprint(load_split(tiny_data, "train"))
    line = _one_line_error(result, f"train-{key}-32-", "no space left", "COVID_SWEEP_CACHE")
    assert str(_decoded_dir(tmp_path)) in line
    assert _leftovers(_decoded_dir(tmp_path)) == [] and list(_decoded_dir(tmp_path).glob("*.npy")) == []
    monkeypatch.undo()
    assert CliRunner().invoke(main, ["check-data", str(tiny_data)]).exit_code == 0  # nothing left blocks a rerun


def test_a_cache_that_cannot_fit_on_its_disk_is_refused_before_decoding_for_minutes(tiny_data, tmp_path, monkeypatch):
    decoded = []
    monkeypatch.setattr(decoded_cache.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10_000})())
    monkeypatch.setattr("covid_sweep.data.layout.decode_resized", lambda *args: decoded.append(args))

    result = CliRunner().invoke(main, ["check-data", str(tiny_data)])

    _one_line_error(result, str(_decoded_dir(tmp_path)), "no space left", "MB needed")
    assert decoded == []


# Sets the limit, then becomes the command (exec): no preexec_fn, which is unsafe in a test process with threads.
# A write past the limit then fails with EFBIG instead of SIGXFSZ killing the process.
UNDER_FILE_SIZE_LIMIT = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def test_a_real_short_write_of_the_cache_is_one_line_naming_it_not_a_bare_oserror(tiny_data, tmp_path):
    # the kernel cuts the write short, as on a full disk: numpy's tofile (np.save) then raised
    # "OSError: 73728 requested and 49872 written", with no errno, no path and a traceback
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", UNDER_FILE_SIZE_LIMIT, "50000", "-m", "covid_sweep", "check-data",
                          str(tiny_data)], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 1 and len(lines) == 1, run.stderr[-3000:]  # the counts went to stdout
    assert lines[0].startswith("Error: ") and str(_decoded_dir(tmp_path)) in lines[0] and "File too large" in lines[0]
    assert _leftovers(_decoded_dir(tmp_path)) == []


# ---- the remembered fingerprint (the cache key) ---------------------------------------------------------------

def test_zeroed_fingerprint_memo_is_recomputed_not_used_as_a_cache_key(tiny_data, tmp_path):
    split = load_split(tiny_data, "train")
    key = fingerprint(split)
    (memo,) = (tmp_path / "cache" / "fingerprints").iterdir()
    memo.write_bytes(bytes(memo.stat().st_size))
    assert fingerprint(split) == key
    assert cached_images(split, 32).shape == (24, 32, 32, 3)
