"""`eiou report`: the Markdown summary under reports/."""

from __future__ import annotations

import argparse

from eiou import experiments, report

HELP = "write the Markdown summary (tables, figures, runs) under reports/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="results/plan.json")
    parser.add_argument("--tables-dir", default="results/tables")
    parser.add_argument("--figures-dir", default="reports/figures")
    parser.add_argument("--output", default="reports/summary.md")


def run(args: argparse.Namespace) -> int:
    plan = experiments.load_plan(args.plan)
    print(report.write_summary(plan, args.tables_dir, args.figures_dir, args.output))
    return 0
