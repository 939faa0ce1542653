"""`eiou` command line: one verb per pipeline stage.

Each verb lives in its own module ``eiou.cli.<verb>`` exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Add a verb by adding its module name to
``VERBS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

VERBS: tuple[str, ...] = (
    "toy",
    "runs",
    "data",
    "train",
    "predict",
    "rescore",
    "evaluate",
    "select",
    "compare",
    "tables",
    "figures",
    "report",
)


def _load(verb: str):
    return importlib.import_module(f"eiou.cli.{verb.replace('-', '_')}")


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per verb.

    Only the module of ``verb`` (the one being run) is imported, so one verb's heavy
    imports or errors never slow down or break another; the top-level ``--help`` reads each
    module's first docstring line without importing it.
    """
    from eiou import __version__

    parser = argparse.ArgumentParser(
        prog="eiou",
        description="EIoU, CT, SOT and the IoU head: library, experiments and reproduction.",
    )
    parser.add_argument("--version", action="version", version=f"eiou {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in VERBS:
        if name == verb:
            module = _load(name)
            verb_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(verb_parser)
            verb_parser.set_defaults(_run=module.run)
        else:
            sub.add_parser(name, help=_summary(name), add_help=False)
    return parser


def _summary(verb: str) -> str:
    """First line of a verb module's docstring, read without importing it."""
    import ast
    from pathlib import Path

    path = Path(__file__).with_name(f"{verb.replace('-', '_')}.py")
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError):
        return ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return first.split(": ", 1)[1] if first.startswith("`eiou ") and ": " in first else first


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``eiou`` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(verb if verb in VERBS else None).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
