"""`eiou select`: choose each tuned row's candidate on the validation split (never the test)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eiou import experiments

HELP = "choose each tuned table row's candidate by its validation metrics; write the plan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="the plan (results/plan.json)")
    parser.add_argument(
        "--runs-dir",
        default="results/runs",
        help="folder of <run_id>/metrics_val.json (the only files read)",
    )
    parser.add_argument(
        "--output", required=True, help="the plan with the choices (results/plan_selected.json)"
    )


def run(args: argparse.Namespace) -> int:
    plan = experiments.load_plan(args.plan)

    def validation_metrics(run_id: str) -> dict:
        path = Path(args.runs_dir) / run_id / "metrics_val.json"
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    try:
        resolved = experiments.select_candidates(plan, validation_metrics)
    except (OSError, ValueError) as err:
        print(f"eiou select: {err}", file=sys.stderr)
        return 2
    experiments.write_plan(args.output, resolved)
    for table in resolved["tables"]:
        for row in table["rows"]:
            if "chosen" in row:
                print(f"{table['name']}: {row['variant']} ({row['detector']}): {row['chosen']}")
    print(f"wrote {args.output}")
    return 0
