"""Summarise a mutmut run (``make mutate``) as Markdown: the score per core module and the
mutants that survived, with their diffs.

Run from the repository root after ``mutmut run``; it reads ``mutants/**/*.py.meta``
(mutmut's own record of each mutant's exit code) and prints Markdown. The score is
mutmut's: killed (timeouts included) over the mutants that were tested.

    python benchmarks/mutation_report.py [--diffs] > report.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = ("killed", "timeout", "caught by type check")
UNTESTED = ("not checked", "skipped", "check was interrupted by user")


def load(mutants_dir: Path = Path("mutants")) -> dict[str, dict[str, str]]:
    """``{module path: {mutant name: status}}`` from mutmut's ``.meta`` files."""
    results = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        module = str(meta.relative_to(mutants_dir)).removesuffix(".meta")
        results[module] = {
            name: status_by_exit_code[code] for name, code in data["exit_code_by_key"].items()
        }
    return results


def score_table(results: dict[str, dict[str, str]]) -> str:
    lines = [
        "| module | mutants | killed | survived | no tests | not run | score |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total: Counter[str] = Counter()
    for module, statuses in results.items():
        counts = Counter(statuses.values())
        total.update(counts)
        lines.append(_row(f"`{module}`", counts))
    lines.append(_row("**all**", total))
    return "\n".join(lines)


def _row(name: str, counts: Counter[str]) -> str:
    killed = sum(counts[s] for s in KILLED)
    untested = sum(counts[s] for s in UNTESTED)
    tested = sum(counts.values()) - untested
    score = f"{100 * killed / tested:.1f}%" if tested else "—"
    return (
        f"| {name} | {sum(counts.values())} | {killed} | {counts['survived']} "
        f"| {counts['no tests']} | {untested} | {score} |"
    )


def survivors(results: dict[str, dict[str, str]]) -> list[str]:
    return [
        name
        for statuses in results.values()
        for name, status in statuses.items()
        if status not in KILLED and status not in UNTESTED
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffs", action="store_true", help="show each survivor's diff")
    args = parser.parse_args(argv)
    results = load()
    if not results:
        print("no mutmut results under mutants/: run `make mutate` first", file=sys.stderr)
        return 1
    print(score_table(results))
    names = survivors(results)
    print(f"\nSurviving (or untestable) mutants: {len(names)}\n")
    for name in names:
        if args.diffs:
            diff = subprocess.run(
                ["mutmut", "show", name], capture_output=True, text=True, check=False
            ).stdout
            print(f"```diff\n{diff.strip()}\n```\n")
        else:
            print(f"- `{name}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
