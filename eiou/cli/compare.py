"""`eiou compare`: every table row against its baseline, with bootstrap confidence intervals."""

from __future__ import annotations

import argparse
from pathlib import Path

from eiou import experiments, statistics
from eiou.cli import UserError, add_output, reading

HELP = (
    "every table row against its baseline: differences with 95% intervals from a paired "
    "bootstrap over test images and seeds (comparisons.csv)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plan", type=Path, required=True, help="the plan (results/plan_selected.json)"
    )
    parser.add_argument(
        "--runs-dir",
        default="results/runs",
        help=f"folder of <run_id>/{statistics.RECORDS_FILE} (from eiou evaluate) and metrics.json",
    )
    add_output(
        parser,
        "the CSV to write (default: %(default)s)",
        required=False,
        default=Path("results/tables/comparisons.csv"),
    )
    parser.add_argument(
        "--replicates",
        type=int,
        default=statistics.DEFAULT_REPLICATES,
        help="bootstrap replicates (default: %(default)s)",
    )
    parser.add_argument(
        "--confidence", type=float, default=0.95, help="interval coverage (default: 0.95)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: 0)")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads (classes in parallel; default: 1)"
    )


def run(args: argparse.Namespace) -> int:
    with reading(args.plan, "plan"):
        plan = experiments.load_plan(args.plan)
    try:
        frame = statistics.compare_plan(
            plan,
            args.runs_dir,
            replicates=args.replicates,
            confidence=args.confidence,
            seed=args.seed,
            threads=args.threads,
        )
    except (OSError, ValueError) as err:
        raise UserError(str(err)) from None
    statistics.write_comparisons(args.output, frame)
    shown = frame[frame["metric"].isin(statistics.DIFFERENCE_METRICS) & frame["diff"].notna()]
    resolved = shown[shown["resolved"] != 0]
    print(
        f"{len(shown)} differences to a baseline ({', '.join(statistics.DIFFERENCE_METRICS)}), "
        f"{len(resolved)} resolved at {args.confidence:.0%} ({args.replicates} replicates)"
    )
    print(f"wrote {args.output}")
    return 0
