"""`eiou` command line: one verb per pipeline stage.

Each verb lives in its own module ``eiou.cli.<verb>`` exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Add a verb by adding its module name to
``VERBS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

VERBS: tuple[str, ...] = ("toy",)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per verb."""
    from eiou import __version__

    parser = argparse.ArgumentParser(
        prog="eiou",
        description="EIoU, CT, SOT and the IoU head: library, experiments and reproduction.",
    )
    parser.add_argument("--version", action="version", version=f"eiou {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        module = importlib.import_module(f"eiou.cli.{verb.replace('-', '_')}")
        verb_parser = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``eiou`` command."""
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
