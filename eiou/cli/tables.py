"""`eiou tables`: gather metrics.json files into per-table CSV, Markdown and LaTeX."""

from __future__ import annotations

import argparse

from eiou import experiments, tables

HELP = "gather metrics.json files into per-table CSV/Markdown/LaTeX, paper numbers beside"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="results/plan.json")
    parser.add_argument(
        "--runs-dir", default="results/runs", help="folder of <run_id>/metrics.json"
    )
    parser.add_argument(
        "--comparisons",
        default=None,
        help="eiou compare's CSV: print each row's difference to the baseline with its interval",
    )
    parser.add_argument("--out-dir", default="results/tables")
    parser.add_argument(
        "--table",
        action="append",
        help="only this table (repeatable; 'scoring': the scoring-methods table)",
    )


def run(args: argparse.Namespace) -> int:
    plan = experiments.load_plan(args.plan)
    written = tables.write_tables(plan, args.runs_dir, args.out_dir, args.table, args.comparisons)
    for path in written:
        print(path)
    return 0
