"""`eiou figures`: experiment figures (from a plan) and/or toy figures (from toy CSVs)."""

from __future__ import annotations

import argparse

from eiou import experiments, figures

HELP = (
    "draw the figures (seaborn; PNG and PDF): Fig 7, AP by IoU, differences to the baseline "
    "with intervals, training, toy"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", help="results/plan.json: draw the experiment figures")
    parser.add_argument("--runs-dir", default="results/runs")
    parser.add_argument(
        "--comparisons",
        default=None,
        help="eiou compare's CSV: draw each row's difference to the baseline with its interval",
    )
    parser.add_argument("--toy-dir", help="folder of `eiou toy` CSV files: draw the toy figures")
    parser.add_argument("--out-dir", default="reports/figures")


def run(args: argparse.Namespace) -> int:
    if not args.plan and not args.toy_dir:
        print("error: give --plan, --toy-dir or both")
        return 2
    written = []
    if args.plan:
        plan = experiments.load_plan(args.plan)
        written += figures.make_experiment_figures(
            plan, args.runs_dir, args.out_dir, args.comparisons
        )
    if args.toy_dir:
        written += figures.make_toy_figures(args.toy_dir, args.out_dir)
    for path in written:
        print(path)
    return 0
