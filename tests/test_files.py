"""covid_sweep.core.files: the one staged-write implementation behind artifacts, submissions, exports, data sets
and caches. Faults are injected where a full disk or a crash would strike: in the middle of a write,
between the renames."""

from __future__ import annotations

import errno
import os

import pytest
from helpers.faults import disk_full, failing_on_call

from covid_sweep.core import files
from covid_sweep.core.errors import UserError
from covid_sweep.core.files import (
    ExistsError,
    WriteError,
    install_entries,
    publish_dir,
    staged_dir,
    write_file_atomically,
    write_files_atomically,
    write_text_atomically,
)


def _full_disk_after(n_bytes: int):
    def write(fh):
        fh.write("x" * n_bytes)
        raise disk_full()
    return write


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_part_way_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(WriteError, match=rf"^{target}: could not write: No space left on device$"):
        write_file_atomically(target, _full_disk_after(100))
    assert target.read_text() == "old\n" and _listing(tmp_path) == ["out.csv"]
    assert isinstance(WriteError("x"), UserError)  # the CLI prints it as one line


def test_a_bug_in_the_writer_is_not_dressed_up_as_a_disk_error(tmp_path):
    def buggy(fh):
        raise OSError(errno.EBADF, "bad file descriptor")

    with pytest.raises(OSError) as caught:
        write_file_atomically(tmp_path / "out.csv", buggy)
    assert not isinstance(caught.value, UserError) and _listing(tmp_path) == []


def test_without_force_an_existing_file_is_never_replaced(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("mine\n")
    with pytest.raises(ExistsError, match="already exists; pass --force"):
        write_text_atomically(target, "new\n")
    assert target.read_text() == "mine\n" and _listing(tmp_path) == ["out.csv"]
    write_text_atomically(target, "new\n", force=True)
    assert target.read_text() == "new\n"


def test_several_files_are_written_all_or_none(tmp_path, monkeypatch):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    b.write_text("old b\n")
    monkeypatch.setattr(files.os, "fsync", failing_on_call(os.fsync, 2))  # the disk fills up at the second file
    with pytest.raises(WriteError):
        write_files_atomically({a: "new a\n", b: "new b\n"}, force=True)
    monkeypatch.undo()
    assert _listing(tmp_path) == ["b.csv"] and b.read_text() == "old b\n"
    write_files_atomically({a: "new a\n", b: "new b\n"}, force=True)
    assert a.read_text() == "new a\n" and b.read_text() == "new b\n" and _listing(tmp_path) == ["a.csv", "b.csv"]


def test_several_files_without_force_refuse_if_any_exists_and_write_none(tmp_path):
    (tmp_path / "b.csv").write_text("mine\n")
    with pytest.raises(ExistsError, match="b.csv: already exists"):
        write_files_atomically({tmp_path / "a.csv": "a\n", tmp_path / "b.csv": "b\n"})
    assert _listing(tmp_path) == ["b.csv"] and (tmp_path / "b.csv").read_text() == "mine\n"


def test_install_entries_puts_the_old_entries_back_when_a_rename_fails(tmp_path, monkeypatch):
    out, staging = tmp_path / "out", tmp_path / "staging"
    out.mkdir()
    staging.mkdir()
    for name in ("a", "b", "c"):
        (out / name).write_text(f"old {name}")
        (staging / name).write_text(f"new {name}")
    (out / "keep").write_text("not ours")
    real_replace, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 4:  # a moved in, b moved aside: then moving b in fails
            raise OSError(errno.EIO, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", flaky)
    with pytest.raises(OSError, match="I/O error"):
        install_entries(staging, out, replace=True)
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a": "old a", "b": "old b", "c": "old c",
                                                              "keep": "not ours"}


def test_staged_dir_is_removed_on_every_path(tmp_path):
    with pytest.raises(RuntimeError):
        with staged_dir(tmp_path / "target") as staging:
            (staging / "half").write_text("x")
            raise RuntimeError("crash")
    assert _listing(tmp_path) == []
    with staged_dir(tmp_path / "target") as staging:
        (staging / "whole").write_text("x")
        publish_dir(staging, tmp_path / "target")
    assert _listing(tmp_path) == ["target"] and _listing(tmp_path / "target") == ["whole"]


def test_publish_dir_refuses_an_existing_target_unless_asked_and_keeps_it_if_the_swap_fails(tmp_path, monkeypatch):
    target = tmp_path / "target"
    target.mkdir()
    (target / "old").write_text("kept")
    with staged_dir(target) as staging:
        (staging / "new").write_text("x")
        with pytest.raises(ExistsError):
            publish_dir(staging, target)
        real_rename, calls = os.rename, []

        def flaky(src, dst):
            calls.append(dst)
            if len(calls) == 2:  # the old folder is aside; moving the new one in fails
                raise OSError(errno.EIO, "I/O error")
            return real_rename(src, dst)

        monkeypatch.setattr(files.os, "rename", flaky)
        with pytest.raises(OSError, match="I/O error"):
            publish_dir(staging, target, replace=True)
        monkeypatch.undo()
    assert _listing(tmp_path) == ["target"] and _listing(target) == ["old"]
