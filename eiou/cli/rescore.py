"""`eiou rescore`: every scoring method on the candidates `eiou predict` recorded."""

from __future__ import annotations

import argparse
from pathlib import Path

from eiou.cli import UserError, add_output

HELP = (
    "apply each scoring method to the candidates of `eiou predict --candidates`; write one "
    "COCO results file per method (no retraining, no second network pass)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from eiou.rescoring import scoring_methods

    parser.add_argument("--config", type=Path, required=True, help="the run config YAML")
    parser.add_argument(
        "--candidates", type=Path, required=True, help="candidates.pt of `eiou predict`"
    )
    add_output(
        parser, "folder receiving <method>/predictions.json and run.yaml (that method's config)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where NMS runs (default cpu); the kind of device `eiou predict` ran on gives "
        "its predictions bit for bit",
    )
    parser.add_argument(
        "--method",
        action="append",
        choices=scoring_methods(),
        help="only this method (repeatable; default: every method the candidates allow)",
    )


def run(args: argparse.Namespace) -> int:
    from eiou.rescoring import rescore_run

    try:
        written = rescore_run(
            args.config, args.candidates, args.output, args.method, device=args.device
        )
    except ValueError as err:  # a bad candidates file or method; config errors are reported
        raise UserError(f"{args.candidates}: {err}") from None
    for method, path in written.items():
        print(f"{method}: wrote {path}")
    return 0
