"""`eiou runs`: expand a preset into one run config per unique run (content-hashed ids)."""

from __future__ import annotations

import argparse
from pathlib import Path

from eiou import experiments
from eiou.cli import UserError, add_output

HELP = "expand a preset into run configs (one run.yaml per unique run) and a plan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="preset YAML, e.g. config/mini.yaml")
    add_output(
        parser,
        "folder receiving <run_id>/run.yaml (default: %(default)s)",
        required=False,
        default=Path("results/runs"),
    )
    parser.add_argument("--plan", default=None, help="also write the plan JSON to this file")
    parser.add_argument("--list", action="store_true", help="only list the run ids, write nothing")
    parser.add_argument(
        "--check-roots",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="require every dataset root to exist with its layout "
        "(default: the preset's check_data_roots)",
    )


def run(args: argparse.Namespace) -> int:
    from eiou.config import check_run_config

    config = experiments.load_config(args.config)
    plan = experiments.build_plan(config, check_roots=args.check_roots)
    problems = [f"run {rid}: {p}" for rid, s in plan["runs"].items() for p in check_run_config(s)]
    if problems:
        raise UserError(f"invalid runs in {args.config}:\n  " + "\n  ".join(problems))
    for rid in plan["runs"]:
        print(rid)
        if not args.list:
            experiments.write_run_spec(Path(args.output) / rid / "run.yaml", plan["runs"][rid])
    rows = sum(len(t["rows"]) for t in plan["tables"])
    print(f"{len(plan['runs'])} unique runs for {rows} table rows in {len(plan['tables'])} tables")
    if args.plan and not args.list:
        experiments.write_plan(args.plan, plan)
    return 0
