"""`eiou compare`: every table row against its baseline, with bootstrap confidence intervals."""

from __future__ import annotations

import argparse

from eiou import experiments, statistics

HELP = (
    "every table row against its baseline: differences with 95% intervals from a paired "
    "bootstrap over test images and seeds (comparisons.csv)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="results/plan.json")
    parser.add_argument(
        "--runs-dir",
        default="results/runs",
        help=f"folder of <run_id>/{statistics.RECORDS_FILE} (from eiou evaluate) and metrics.json",
    )
    parser.add_argument(
        "--output", default="results/tables/comparisons.csv", help="the CSV to write"
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
        print(f"eiou compare: {err}")
        return 2
    statistics.write_comparisons(args.output, frame)
    shown = frame[frame["metric"].isin(statistics.DIFFERENCE_METRICS) & frame["diff"].notna()]
    resolved = shown[shown["resolved"] != 0]
    print(
        f"{len(shown)} differences to a baseline ({', '.join(statistics.DIFFERENCE_METRICS)}), "
        f"{len(resolved)} resolved at {args.confidence:.0%} ({args.replicates} replicates)"
    )
    print(f"wrote {args.output}")
    return 0
