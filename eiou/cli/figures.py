"""`eiou figures`: experiment figures (from a plan) and/or toy figures (from toy CSVs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from eiou import experiments, figures
from eiou.cli import UserError, add_output, reading

HELP = (
    "draw the figures (seaborn; PNG and PDF): Fig 7, AP by IoU, differences to the baseline "
    "with intervals, training, toy"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, help="results/plan.json: draw the experiment figures")
    parser.add_argument(
        "--runs-dir",
        default="results/runs",
        help="folder of <run_id>/metrics.json and train_log.jsonl (default: %(default)s)",
    )
    parser.add_argument(
        "--comparisons",
        type=Path,
        default=None,
        help="eiou compare's CSV: draw each row's difference to the baseline with its interval",
    )
    parser.add_argument("--toy-dir", help="folder of `eiou toy` CSV files: draw the toy figures")
    add_output(
        parser,
        "folder for the figures (default: %(default)s)",
        required=False,
        default=Path("reports/figures"),
    )


def run(args: argparse.Namespace) -> int:
    if not args.plan and not args.toy_dir:
        raise UserError("give --plan, --toy-dir or both")
    written = []
    if args.plan:
        with reading(args.plan, "plan"):
            plan = experiments.load_plan(args.plan)
        written += figures.make_experiment_figures(
            plan, args.runs_dir, args.output, args.comparisons
        )
    if args.toy_dir:
        written += figures.make_toy_figures(args.toy_dir, args.output)
    for path in written:
        print(path)
    return 0
