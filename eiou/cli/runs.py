"""`eiou runs`: expand a preset into one run spec per unique run (content-hashed ids)."""

from __future__ import annotations

import argparse
from pathlib import Path

from eiou import experiments

HELP = "expand a preset config into run specs (one YAML per unique run) and a plan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="preset YAML, e.g. config/mini.yaml")
    parser.add_argument("--schema", default=None, help="JSON schema (default: workflow/schemas)")
    parser.add_argument("--out-dir", default="results/runs", help="where <run_id>/run.yaml go")
    parser.add_argument("--plan", default=None, help="also write the plan JSON here")
    parser.add_argument("--list", action="store_true", help="only list the runs, write nothing")
    parser.add_argument(
        "--no-check-roots", action="store_true", help="do not require dataset roots to exist"
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = experiments.load_config(args.config, args.schema)
        plan = experiments.build_plan(config, check_roots=False if args.no_check_roots else None)
    except experiments.ConfigError as err:
        print(f"error: {err}")
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
