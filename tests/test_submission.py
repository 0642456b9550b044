"""Submission files: validation before writing, atomic no-clobber writes, reading and scoring errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from covid_sweep.cli import main
from covid_sweep.data.layout import DataError
from covid_sweep.inference import submission as sub
from covid_sweep.inference.submission import SubmissionError

IDS = ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]
TRUTH = [1, 0, 1, 1, 0, 0]


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def labels(tmp_path) -> Path:
    return _csv(tmp_path / "labels.csv", "file_name,COVID\n" + "".join(f"{i},{y}\n" for i, y in zip(IDS, TRUTH)))


def _submission(tmp_path, rows, header="file_name,COVID", name="submission.csv") -> Path:
    return _csv(tmp_path / name, header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


# ---- validation before writing ---------------------------------------------------------------------

def test_written_submission_follows_the_sample_order(tmp_path):
    shuffled = IDS[::-1]
    labels = [1, 0, 0, 1, 1, 0]
    path = sub.write_submission(tmp_path / "s.csv", shuffled, labels, IDS)
    lines = path.read_text().splitlines()
    assert lines[0] == "file_name,COVID"
    assert [line.split(",")[0] for line in lines[1:]] == IDS
    assert dict(line.split(",") for line in lines[1:]) == {i: str(y) for i, y in zip(shuffled, labels)}
    assert sub.read_submission(path).ids == tuple(IDS)


@pytest.mark.parametrize("ids, labels, message", [
    (IDS[:-1], [0] * 5, r"1 file_name\(s\) of sample_submission.csv missing: 'f.png'"),
    (IDS + ["zzz.png"], [0] * 7, r"row 8: extra file_name 'zzz.png' is not in sample_submission.csv"),
    (IDS + ["a.png"], [0] * 7, r"row 8: duplicate file_name 'a.png' \(first at row 2\)"),
    (IDS, [0, 1, 2, 0, 0, 0], r"row 4: COVID of 'c.png' must be 0 or 1, got 2"),
    (IDS, [0, 1, "1", 0, 0, 0], r"row 4: COVID of 'c.png' must be 0 or 1, got '1'"),
    (IDS, [0, 1, 0.5, 0, 0, 0], r"row 4: COVID of 'c.png' must be 0 or 1, got 0.5"),
    (IDS, [0] * 5, r"6 ids but 5 labels"),
])
def test_an_invalid_submission_is_never_written(tmp_path, ids, labels, message):
    with pytest.raises(SubmissionError, match=message):
        sub.write_submission(tmp_path / "s.csv", ids, labels, IDS)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_needs_force(tmp_path, umask_022):
    target = _csv(tmp_path / "s.csv", "precious\n")
    with pytest.raises(SubmissionError, match="already exists; pass --force"):
        sub.write_submission(target, IDS, TRUTH, IDS)
    assert target.read_text() == "precious\n"
    sub.write_submission(target, IDS, TRUTH, IDS, force=True)
    assert sub.read_submission(target).labels == tuple(TRUTH)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]  # no temp file left
    assert (target.stat().st_mode & 0o777) == 0o644  # what open() gives under umask 022, not mkstemp's 0600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = _csv(tmp_path / "s.csv", "precious\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        sub.write_submission(target, IDS, TRUTH, IDS, force=True)
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


def test_probabilities_are_checked_and_round_trip(tmp_path):
    probs = np.array([0.1, 0.9, 0.123456789, 1.0, 0.0, 0.5], dtype=np.float32)
    path = sub.write_probabilities(tmp_path / "p.csv", IDS, probs)
    back = sub.read_probabilities(path)
    assert np.array_equal(np.array([back[i] for i in IDS], dtype=np.float32), probs)
    with pytest.raises(SubmissionError, match=r"row 3: prob of 'b.png' must be a probability in \[0, 1\], got nan"):
        sub.write_probabilities(tmp_path / "q.csv", IDS, [0.1, float("nan"), 0, 0, 0, 0])


# ---- reading and scoring ---------------------------------------------------------------------------

def test_score_matches_sklearn(tmp_path, labels):
    predicted = [1, 1, 0, 1, 0, 0]
    probs = [0.9, 0.6, 0.4, 0.8, 0.2, 0.45]
    path = _submission(tmp_path, zip(IDS[::-1], predicted[::-1]))  # any order is fine for scoring
    result = sub.score(path, labels)
    assert result.n == 6
    assert result.accuracy == pytest.approx(accuracy_score(TRUTH, predicted))
    assert result.f1 == pytest.approx(f1_score(TRUTH, predicted))
    assert result.sensitivity == pytest.approx(2 / 3) and result.specificity == pytest.approx(2 / 3)
    assert [list(r) for r in result.confusion] == confusion_matrix(TRUTH, predicted).tolist()
    assert result.auc is None
    probs_file = _csv(tmp_path / "probs.csv", "file_name,prob\n" + "".join(f"{i},{p}\n" for i, p in zip(IDS, probs)))
    with_probs = sub.score(path, labels, probs_file)
    assert with_probs.auc == pytest.approx(roc_auc_score(TRUTH, probs)) and with_probs.auc_source == str(probs_file)
    in_column = _submission(tmp_path, zip(IDS, predicted, probs), header="file_name,COVID,prob", name="s2.csv")
    assert sub.score(in_column, labels).auc == pytest.approx(roc_auc_score(TRUTH, probs))


@pytest.mark.parametrize("text, message", [
    ("file_name,label\na.png,1\n", r"missing column 'COVID' \(found \['file_name', 'label'\]\)"),
    ("id,COVID\na.png,1\n", r"missing column 'file_name'"),
    ("", r"missing column 'file_name', 'COVID' \(found no header\)"),
    ("file_name,COVID\n", r"no rows"),
    ("file_name,COVID\na.png,1\nb.png,0\na.png,0\n", r"row 4: duplicate file_name 'a.png' \(first at row 2\)"),
    ("file_name,COVID\na.png,1\nb.png,2\n", r"row 3: COVID of 'b.png' must be 0 or 1, got '2'"),
    ("file_name,COVID\na.png,1\nb.png,0.7\n", r"row 3: COVID of 'b.png' must be 0 or 1, got '0.7'"),
    ("file_name,COVID\na.png,yes\n", r"row 2: COVID of 'a.png' must be 0 or 1, got 'yes'"),
    ("file_name,COVID\na.png,\n", r"row 2: COVID of 'a.png' must be 0 or 1, got ''"),
    ("file_name,COVID\n,1\n", r"row 2: empty file_name"),
    ("file_name,COVID,prob\na.png,1,1.5\n", r"row 2: prob of 'a.png' must be a probability in \[0, 1\], got '1.5'"),
])
def test_unreadable_submissions_name_file_and_row(tmp_path, labels, text, message):
    path = _csv(tmp_path / "bad.csv", text)
    with pytest.raises(SubmissionError, match=message) as err:
        sub.score(path, labels)
    assert str(err.value).startswith(str(path))


def test_missing_and_extra_ids_are_named(tmp_path, labels):
    missing = _submission(tmp_path, [(i, 0) for i in IDS if i not in ("b.png", "e.png")])
    with pytest.raises(SubmissionError, match=r"submission.csv: 2 file_name\(s\) of labels.csv missing: 'b.png', 'e.png'"):
        sub.score(missing, labels)
    extra = _submission(tmp_path, [(i, 0) for i in IDS] + [("new.png", 1)], name="extra.csv")
    with pytest.raises(SubmissionError, match=r"extra.csv: row 8: extra file_name 'new.png' is not in labels.csv"):
        sub.score(extra, labels)


def test_probabilities_file_errors(tmp_path, labels):
    good = _submission(tmp_path, zip(IDS, TRUTH))
    no_column = _csv(tmp_path / "p1.csv", "file_name,p\n" + "".join(f"{i},0.5\n" for i in IDS))
    with pytest.raises(SubmissionError, match=r"p1.csv: missing column 'prob'"):
        sub.score(good, labels, no_column)
    short = _csv(tmp_path / "p2.csv", "file_name,prob\n" + "".join(f"{i},0.5\n" for i in IDS[1:]))
    with pytest.raises(SubmissionError, match=r"p2.csv: 1 file_name\(s\) of labels.csv missing: 'a.png'"):
        sub.score(good, labels, short)
    bad = _csv(tmp_path / "p3.csv", "file_name,prob\n" + "".join(f"{i},{'x' if i == 'c.png' else 0.5}\n" for i in IDS))
    with pytest.raises(SubmissionError, match=r"p3.csv: row 4: prob of 'c.png' must be a probability"):
        sub.score(good, labels, bad)


def test_a_bad_label_file_is_a_data_error(tmp_path):
    good = _submission(tmp_path, zip(IDS, TRUTH))
    bad_labels = _csv(tmp_path / "l.csv", "file_name,COVID\na.png,3\n")
    with pytest.raises(DataError, match=r"l.csv: row 2: COVID must be 0 or 1"):
        sub.score(good, bad_labels)


# ---- the CLI ---------------------------------------------------------------------------------------

def test_score_command(tmp_path, labels):
    predicted = [1, 1, 0, 1, 0, 0]
    path = _submission(tmp_path, zip(IDS, predicted))
    rows = "".join(f"{i},{0.9 if y else 0.1}\n" for i, y in zip(IDS, predicted))
    probs = _csv(tmp_path / "probabilities.csv", "file_name,prob\n" + rows)
    runner = CliRunner()
    out = runner.invoke(main, ["score", str(path), str(labels)])
    assert out.exit_code == 0, out.output
    assert "accuracy     0.6667" in out.output and "add --probs" in out.output
    assert "  true 1           1       2" in out.output
    out = runner.invoke(main, ["score", str(path), str(labels), "--probs", str(probs), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["auc"] == pytest.approx(roc_auc_score(TRUTH, [0.9 if y else 0.1 for y in predicted]))
    assert data["confusion_matrix"]["matrix"] == [[2, 1], [1, 2]]


def test_score_command_errors_are_one_line(tmp_path, labels):
    path = _submission(tmp_path, [(i, 0) for i in IDS] + [("a.png", 1)])
    out = CliRunner().invoke(main, ["score", str(path), str(labels)])
    assert out.exit_code == 1
    assert out.output.strip().count("\n") == 0
    assert "row 8: duplicate file_name 'a.png'" in out.output and "Traceback" not in out.output
