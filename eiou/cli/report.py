"""`eiou report`: the Markdown summary under reports/."""

from __future__ import annotations

import argparse
from pathlib import Path

from eiou import experiments, report
from eiou.cli import add_output, reading

HELP = "write the Markdown summary (tables, figures, runs) under reports/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, help="results/plan.json")
    parser.add_argument(
        "--tables-dir",
        default="results/tables",
        help="folder of the tables `eiou tables` wrote (default: %(default)s)",
    )
    parser.add_argument(
        "--figures-dir",
        default="reports/figures",
        help="folder of the figures `eiou figures` drew (default: %(default)s)",
    )
    add_output(
        parser,
        "Markdown file to write (default: %(default)s)",
        required=False,
        default=Path("reports/summary.md"),
    )


def run(args: argparse.Namespace) -> int:
    with reading(args.plan, "plan"):
        plan = experiments.load_plan(args.plan)
    print(report.write_summary(plan, args.tables_dir, args.figures_dir, args.output))
    return 0
