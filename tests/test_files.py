"""covid_sweep.core.files: the one staged-write implementation behind artifacts, submissions, exports, data sets
and caches. Faults are injected where a full disk or a crash would strike: in the middle of a write,
between the renames."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

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


def _io_error() -> OSError:
    return OSError(errno.EIO, "I/O error")


def _out_and_staging(tmp_path, staged=("a", "b")):
    """An install target and a staging folder holding a new file for each name in `staged`."""
    out, staging = tmp_path / "out", tmp_path / "staging"
    out.mkdir()
    staging.mkdir()
    for name in staged:
        (staging / name).write_text(f"new {name}")
    return out, staging


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
    out, staging = _out_and_staging(tmp_path, ("a", "b", "c"))
    for name in ("a", "b", "c"):
        (out / name).write_text(f"old {name}")
    (out / "keep").write_text("not ours")
    # a moved in, b moved aside: then moving b in fails
    monkeypatch.setattr(files.os, "replace", failing_on_call(os.replace, 4, _io_error))
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
        # the old folder is aside; moving the new one in fails
        monkeypatch.setattr(files.os, "rename", failing_on_call(os.rename, 2, _io_error))
        with pytest.raises(OSError, match="I/O error"):
            publish_dir(staging, target, replace=True)
        monkeypatch.undo()
    assert _listing(tmp_path) == ["target"] and _listing(target) == ["old"]


def test_entries_installed_before_a_failure_are_removed_again(tmp_path, monkeypatch):
    out, staging = _out_and_staging(tmp_path)
    (out / "keep").write_text("not ours")
    monkeypatch.setattr(files.os, "replace", failing_on_call(os.replace, 2))  # a is in; moving b in fails
    with pytest.raises(WriteError):
        with files.disk_errors(out):
            install_entries(staging, out, replace=False)
    monkeypatch.undo()
    assert _listing(out) == ["keep"]


def test_new_files_get_the_mode_open_would_give_them(tmp_path, umask_022):
    write_text_atomically(tmp_path / "t.csv", "x\n")
    write_files_atomically({tmp_path / "a.csv": "a\n", tmp_path / "b.csv": "b\n"})
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"t.csv": 0o644, "a.csv": 0o644,
                                                                             "b.csv": 0o644}
    with staged_dir(tmp_path / "folder") as staging:
        (staging / "inner").write_text("x")
        publish_dir(staging, tmp_path / "folder")
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "folder" / "inner").stat().st_mode & 0o777 == 0o644


def test_bytes_and_text_are_written_exactly_as_given(tmp_path):
    payload = bytes(range(256)) + b"\r\n\x00"
    assert files.write_bytes_atomically(tmp_path / "blob", payload).read_bytes() == payload
    write_text_atomically(tmp_path / "text", "é\r\nline\n")  # utf-8, no newline translation
    assert (tmp_path / "text").read_bytes() == "é\r\nline\n".encode("utf-8")
    write_files_atomically({tmp_path / "many": "ü\r\n"})
    assert (tmp_path / "many").read_bytes() == "ü\r\n".encode("utf-8")


def test_without_hard_links_a_new_file_is_still_written_and_a_taken_name_still_refused(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")  # what a FAT or some network file systems say

    monkeypatch.setattr(files.os, "link", no_links)
    write_text_atomically(tmp_path / "new.csv", "x\n")
    assert (tmp_path / "new.csv").read_text() == "x\n" and _listing(tmp_path) == ["new.csv"]
    monkeypatch.setattr(files.os, "link", lambda src, dst: (_ for _ in ()).throw(disk_full()))
    with pytest.raises(WriteError, match="No space left"):
        write_text_atomically(tmp_path / "full.csv", "x\n")
    assert _listing(tmp_path) == ["new.csv"]


def test_a_file_created_meanwhile_is_not_replaced_without_force(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    real_link = os.link

    def race(src, dst):
        Path(dst).write_text("theirs\n")  # another process took the name after any earlier check
        return real_link(src, dst)

    monkeypatch.setattr(files.os, "link", race)
    with pytest.raises(ExistsError, match=rf"^{target}: already exists; pass --force to overwrite it$"):
        write_text_atomically(target, "mine\n")
    assert target.read_text() == "theirs\n" and _listing(tmp_path) == ["out.csv"]


def test_a_write_that_cannot_fit_is_refused_before_it_starts(tmp_path, monkeypatch):
    asked = []

    def usage(path):
        asked.append(Path(path))
        return shutil._ntuple_diskusage(10_000, 9_000, 1_000)

    monkeypatch.setattr(files.shutil, "disk_usage", usage)
    files.ensure_free_space(tmp_path / "cache" / "x.bin", 1_000)  # exactly fits
    with pytest.raises(WriteError, match=r"x.bin: could not write: 1001 bytes needed, 1000 free on its disk$"):
        files.ensure_free_space(tmp_path / "cache" / "x.bin", 1_001)
    assert asked == [tmp_path / "cache"] * 2


def test_folders_installed_before_a_failure_are_removed_again_and_the_old_entries_wait_beside_them(tmp_path, monkeypatch):
    out, staging = _out_and_staging(tmp_path, ("b",))
    (staging / "a_dir").mkdir()
    (staging / "a_dir" / "inner").write_text("new")
    (out / "b").write_text("old b")
    # a_dir moved in, old b moved aside, then moving the new b in fails
    failing_third = failing_on_call(os.replace, 3)
    monkeypatch.setattr(files.os, "replace", failing_third)
    with pytest.raises(WriteError, match=rf"^{out}: could not write: No space left on device$"):
        with files.disk_errors(out):
            install_entries(staging, out, replace=True)
    monkeypatch.undo()
    assert _listing(out) == ["b"] and (out / "b").read_text() == "old b"
    aside = Path(failing_third.calls[1][1])  # a rename inside out/ (one file system), never a copy through /tmp
    assert aside.name == "b" and aside.parent.parent == out and aside.parent.name.startswith(".old-")


def test_an_entry_created_after_the_check_is_still_not_overwritten(tmp_path, monkeypatch):
    out, staging = _out_and_staging(tmp_path)
    real_lexists, calls = os.path.lexists, []

    def racing(path):
        calls.append(path)
        if len(calls) == 3:  # both names were checked free; now another process writes b
            (out / "b").write_text("theirs")
        return real_lexists(path)

    monkeypatch.setattr(files.os.path, "lexists", racing)
    with pytest.raises(ExistsError, match=rf"^{out / 'b'}: already exists; pass --force to overwrite it$"):
        install_entries(staging, out, replace=False)
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in out.iterdir()} == {"b": "theirs"}


def test_a_failed_move_into_the_folder_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(files.os, "replace", failing_on_call(os.replace, 1))
    with pytest.raises(WriteError, match=rf"^{tmp_path}: could not write: No space left on device$"):
        write_files_atomically({tmp_path / "a.csv": "a\n"})
    monkeypatch.undo()
    assert _listing(tmp_path) == []
    with pytest.raises(AssertionError, match="^one folder only: the all-or-none move is per folder$"):
        write_files_atomically({tmp_path / "a.csv": "a\n", tmp_path / "sub" / "b.csv": "b\n"})


def test_bytes_replace_an_existing_file_unless_told_not_to(tmp_path):
    target = tmp_path / "blob"
    files.write_bytes_atomically(target, b"one")
    files.write_bytes_atomically(target, b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(ExistsError):
        files.write_bytes_atomically(target, b"three", force=False)


def test_a_published_folder_gets_plain_modes_all_the_way_down(tmp_path, umask_022):
    with staged_dir(tmp_path / "model") as staging:
        (staging / "weights").write_bytes(b"w")
        (staging / "weights").chmod(0o600)  # what safetensors leaves
        (staging / "sub").mkdir(mode=0o700)
        (staging / "sub" / "deep").write_text("d")
        (staging / "sub" / "deep").chmod(0o600)
        publish_dir(staging, tmp_path / "model")
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in sorted(tmp_path.rglob("*"))}
    assert modes == {"model": 0o755, "model/sub": 0o755, "model/sub/deep": 0o644, "model/weights": 0o644}


def test_replacing_a_published_folder_leaves_only_the_new_one(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "old").write_text("old")
    with staged_dir(target) as staging:
        (staging / "new").write_text("new")
        with pytest.raises(ExistsError, match=rf"^{target}: already exists; refusing to overwrite$"):
            publish_dir(staging, target)
        publish_dir(staging, target, replace=True)
    assert _listing(tmp_path) == ["target"] and _listing(target) == ["new"]


def test_the_temporary_file_is_hidden_beside_its_target_and_replaced_by_default(tmp_path):
    seen = []

    def write(fh):
        seen.append(Path(fh.name))  # the same file system as the target: the rename cannot turn into a copy
        fh.write("x")

    target = tmp_path / "out.csv"
    write_file_atomically(target, write)
    write_file_atomically(target, write)  # force is the default here
    tmp = seen[0]
    assert tmp.parent == tmp_path and tmp.name.startswith(".out.csv.") and tmp.name.endswith(".tmp")
    assert _listing(tmp_path) == ["out.csv"]
