"""Per-module mutation scores from mutmut's results, the equivalent mutants listed in docs/mutation.md left out.

Run after `mutmut run` (see docs/mutation.md):  python tests/mutation_scores.py [--min 90]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS_DOC = ROOT / "docs" / "mutation.md"
DETECTED = ("killed", "timeout")  # a mutant that makes the tests hang is caught as surely as one that fails them
UNRUN = "not checked"


def mutmut_results() -> dict[str, str]:
    """mutant name -> mutmut's verdict, for every mutant generated."""
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return dict(line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)


def module_of(mutant: str) -> str:
    """covid_sweep.core.files.x_publish_dir__mutmut_3 -> covid_sweep.core.files (methods are xǁClassǁname)."""
    parts = mutant.split(".")
    first = next(i for i, part in enumerate(parts) if part.startswith(("x_", "xǁ")))
    return ".".join(parts[:first])


def equivalents(doc: Path = EQUIVALENTS_DOC) -> set[str]:
    return set(re.findall(r"`(covid_sweep\.[^`\s]+__mutmut_\d+)`", doc.read_text()))


def scores(results: dict[str, str], equivalent: set[str]) -> dict[str, Counter]:
    by_module: dict[str, Counter] = defaultdict(Counter)
    for mutant, verdict in results.items():
        by_module[module_of(mutant)]["equivalent" if mutant in equivalent else verdict] += 1
    return by_module


def score(counts: Counter) -> float | None:
    judged = sum(n for verdict, n in counts.items() if verdict not in ("equivalent", UNRUN))
    return None if judged == 0 else 100 * sum(counts[v] for v in DETECTED) / judged


def table(by_module: dict[str, Counter]) -> list[str]:
    lines = [f"{'module':<40} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} {'no tests':>8} "
             f"{'equiv.':>6} {'unrun':>5} {'score':>6}"]
    for module, counts in sorted(by_module.items()):
        value = score(counts)
        lines.append(f"{module:<40} {sum(counts.values()):>7} {counts['killed']:>6} {counts['timeout']:>7} "
                     f"{counts['survived']:>8} {counts['no tests']:>8} {counts['equivalent']:>6} {counts[UNRUN]:>5} "
                     f"{'-' if value is None else f'{value:.0f} %':>6}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min", type=float, help="exit 1 when a module that was run scores below this (percent)")
    args = parser.parse_args(argv)
    listed = equivalents()
    results = mutmut_results()
    unknown = sorted(listed - results.keys())
    by_module = scores(results, listed)
    print("\n".join(table(by_module)))
    if unknown:  # the code moved under the list: its mutant numbers no longer mean what the doc says
        print(f"docs/mutation.md lists {len(unknown)} mutant(s) mutmut no longer makes, e.g. {unknown[0]}", file=sys.stderr)
    low = [m for m, c in by_module.items() if (s := score(c)) is not None and args.min is not None and s < args.min]
    if low:
        print(f"below {args.min:g} %: {', '.join(sorted(low))}", file=sys.stderr)
    return 1 if low or unknown else 0


if __name__ == "__main__":
    sys.exit(main())
