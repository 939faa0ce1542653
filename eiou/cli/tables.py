"""`eiou tables`: gather metrics.json files into per-table CSV, Markdown and LaTeX."""

from __future__ import annotations

import argparse
from pathlib import Path

from eiou import experiments, tables
from eiou.cli import add_output, reading

HELP = "gather metrics.json files into per-table CSV/Markdown/LaTeX, paper numbers beside"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, help="results/plan.json")
    parser.add_argument(
        "--runs-dir", default="results/runs", help="folder of <run_id>/metrics.json"
    )
    parser.add_argument(
        "--comparisons",
        type=Path,
        default=None,
        help="eiou compare's CSV: print each row's difference to the baseline with its interval",
    )
    add_output(
        parser,
        "folder for the tables (default: %(default)s)",
        required=False,
        default=Path("results/tables"),
    )
    parser.add_argument(
        "--table",
        action="append",
        help="only this table (repeatable; 'scoring': the scoring-methods table; default: "
        "every table)",
    )


def run(args: argparse.Namespace) -> int:
    with reading(args.plan, "plan"):
        plan = experiments.load_plan(args.plan)
    written = tables.write_tables(plan, args.runs_dir, args.output, args.table, args.comparisons)
    for path in written:
        print(path)
    return 0
