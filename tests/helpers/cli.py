"""What a user's mistake looks like from the CLI: one line, never a traceback."""

from __future__ import annotations


def one_line_error(result, *needles) -> str:
    """A CLI failure printed as one line (click's "Error: ..."), exit status 1, naming every needle."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
