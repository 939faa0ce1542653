"""`eiou runs`: expand a preset into one run config per unique run (content-hashed ids)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eiou import experiments

HELP = "expand a preset into run configs (one run.yaml per unique run) and a plan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="preset YAML, e.g. config/mini.yaml")
    parser.add_argument(
        "--out-dir", default="results/runs", help="folder receiving <run_id>/run.yaml"
    )
    parser.add_argument("--plan", default=None, help="also write the plan JSON to this file")
    parser.add_argument("--list", action="store_true", help="only list the run ids, write nothing")
    parser.add_argument(
        "--no-check-roots", action="store_true", help="do not require dataset roots to exist"
    )


def run(args: argparse.Namespace) -> int:
    from eiou.config import check_run_config

    try:
        config = experiments.load_config(args.config)
        plan = experiments.build_plan(config, check_roots=False if args.no_check_roots else None)
    except experiments.ConfigError as err:
        print(f"eiou runs: {err}", file=sys.stderr)
        return 2
    problems = [f"run {rid}: {p}" for rid, s in plan["runs"].items() for p in check_run_config(s)]
    if problems:
        print("eiou runs: invalid runs:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    for rid in plan["runs"]:
        print(rid)
        if not args.list:
            experiments.write_run_spec(Path(args.out_dir) / rid / "run.yaml", plan["runs"][rid])
    rows = sum(len(t["rows"]) for t in plan["tables"])
    print(f"{len(plan['runs'])} unique runs for {rows} table rows in {len(plan['tables'])} tables")
    if args.plan and not args.list:
        experiments.write_plan(args.plan, plan)
    return 0
