"""The README is a user's guide: every covid-sweep command it shows must exist as written, and the cheap ones
must run. Expensive commands (sweeps, training, exports) are checked against the real click CLI instead of
being run, so a renamed subcommand or option fails here rather than on a reader's machine."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from covid_sweep.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAX_WORDS = 3500  # issue 28: a user's guide; measurements and inventories live in docs/

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`(covid-sweep [^`]+)`")


def _covid_sweep_words(line: str) -> list[str] | None:
    """The words after `covid-sweep` when the line runs it (environment assignments may come first)."""
    line = line.split(" #")[0].strip()
    if line.startswith("#"):
        return None
    words = shlex.split(line.replace("$PWD", "."), posix=True) if line else []
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]
    return words[1:] if words and words[0] == "covid-sweep" else None


def readme_commands() -> list[list[str]]:
    """Every covid-sweep command of the README: lines of its sh/bash blocks and inline code spans."""
    commands = []
    for lang, body in FENCE.findall(README):
        if lang in ("sh", "bash", "console", "shell"):
            commands += [w for w in map(_covid_sweep_words, body.splitlines()) if w]
    prose = FENCE.sub("", README)
    commands += [w for w in (_covid_sweep_words(" ".join(m.split())) for m in INLINE.findall(prose)) if w]
    return commands


def _options(words: list[str]) -> list[str]:
    """Option names as written, without the usage syntax around them: [--a N] [--b | --c LIST]..."""
    found = []
    for word in words:
        word = word.strip("[]|.").split("=")[0]
        if re.fullmatch(r"--?[a-z][a-z0-9-]*", word):
            found.append(word)
    return found


def _known(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(param.opts, param.secondary_opts)
    return names


COMMANDS = readme_commands()


def test_the_readme_shows_the_quick_start_and_every_kind_of_command():
    assert ["sweep", "sweeps/smoke.yaml", "--data", "ucsd-covid-ct"] in COMMANDS  # the parser still finds it
    assert {words[0] for words in COMMANDS} >= {"sweep", "status", "export-best", "report", "check-data", "train"}


@pytest.mark.parametrize("words", COMMANDS, ids=lambda words: " ".join(words)[:60])
def test_every_subcommand_and_option_the_readme_uses_exists(words):
    assert words[0] in main.commands, f"README runs `covid-sweep {words[0]}`, which does not exist"
    unknown = [o for o in _options(words[1:]) if o not in _known(main.commands[words[0]])]
    assert not unknown, f"`covid-sweep {' '.join(words)}`: no such option {unknown}"


def test_help_of_every_subcommand_the_readme_uses():
    runner = CliRunner()
    for name in sorted({words[0] for words in COMMANDS}):
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, f"covid-sweep {name} --help: {result.output}"


def test_every_sweep_file_the_readme_names_validates(monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository root
    named = sorted(set(re.findall(r"sweeps/[\w-]+\.yaml", README)))
    assert "sweeps/smoke.yaml" in named
    for path in named:
        result = CliRunner().invoke(main, ["validate", path])
        assert result.exit_code == 0, f"covid-sweep validate {path}: {result.output}"
        assert "valid" in result.output


def test_check_data_as_the_readme_shows_it_runs_on_a_tiny_data_set(tiny_data):
    lines = [words for words in COMMANDS if words[0] == "check-data"]
    assert lines
    for words in lines:
        # its one argument is a placeholder (DATA, path/to/data): the generated set stands in for it
        args = [str(tiny_data) if not w.startswith("-") else w for w in words[1:]]
        result = CliRunner().invoke(main, ["check-data", *args])
        assert result.exit_code == 0, result.output
        assert "layout OK" in result.output


def test_the_readme_stays_a_short_guide():
    assert len(README.split()) <= MAX_WORDS


def test_every_relative_link_of_the_readme_points_to_a_file():
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    relative = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert "docs/measurements.md" in relative
    missing = [t for t in relative if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
