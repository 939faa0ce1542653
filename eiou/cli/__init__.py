"""`eiou` command line: one verb per pipeline stage.

Each verb lives in its own module ``eiou.cli.<verb>`` exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Add a verb by adding its module name to
``VERBS``.

Conventions shared by every verb: what a verb writes is ``--output`` (a file or a folder,
as its help says); booleans are flags (``--resume`` / ``--no-resume``); every option has a
help text. A user error (bad arguments, a missing or malformed YAML or JSON file, an
unreadable checkpoint, an empty predictions file, a dataset that is not where the config
says) prints one message naming the file and the problem, without a traceback, and exits
with status :data:`EXIT_USER_ERROR` (2, as argparse does for bad arguments); a run that
fails on its own (a non-finite loss) exits with :data:`EXIT_FAILURE` (1).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USER_ERROR",
    "VERBS",
    "CommandError",
    "UserError",
    "add_output",
    "build_parser",
    "main",
    "reading",
]

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

#: Exit status of a user error: bad arguments, a missing or malformed input file.
EXIT_USER_ERROR = 2
#: Exit status of a run that failed on its own (e.g. a non-finite loss).
EXIT_FAILURE = 1

#: Old spellings of ``--output``, still accepted, not shown in the help.
HIDDEN_ALIASES = frozenset({"--output-dir", "--out-dir", "--out"})

#: Library errors that mean "the input is wrong" (their messages name the file or key);
#: named, not imported, so that ``eiou --help`` imports none of their modules.
_USER_ERRORS = frozenset(
    {
        "eiou.config.RunConfigError",
        "eiou.experiments.ConfigError",
        "eiou.schemas.SchemaError",
        "eiou.data.coco.DatasetError",
        "eiou.engines.WeightsUnavailableError",
        "eiou.engines.EngineUnavailableError",
        "builtins.FileNotFoundError",
    }
)
_FAILURES = frozenset({"eiou.train.NonFiniteLossError"})


class UserError(Exception):
    """A problem with a command's arguments or input files; the message names the file."""


class CommandError(SystemExit):
    """How :func:`main` ends on an error it reported: ``code`` is the exit status and
    ``str()`` the message (already printed to stderr)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Formatter(argparse.HelpFormatter):
    """Help without the hidden aliases."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if action.option_strings and any(s in HIDDEN_ALIASES for s in action.option_strings):
            action = argparse.Action(
                [s for s in action.option_strings if s not in HIDDEN_ALIASES],
                action.dest,
                nargs=action.nargs,
                metavar=action.metavar,
            )
        return super()._format_action_invocation(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose sub-parsers share its help format."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        for alias in sorted(HIDDEN_ALIASES, key=len, reverse=True):  # "--output/-o/--out.."
            message = message.replace(f"/{alias}", "")
        super().error(message)


def add_output(
    parser: argparse.ArgumentParser, help: str, *, required: bool = True, default: Any = None
) -> None:
    """The verb's ``--output`` (``-o``): the file or folder it writes."""
    from pathlib import Path

    parser.add_argument(
        "--output",
        "-o",
        *sorted(HIDDEN_ALIASES),
        dest="output",
        type=Path,
        required=required,
        default=default,
        help=help,
    )


def add_set(parser: argparse.ArgumentParser, example: str) -> None:
    """The verb's ``--set KEY=VALUE ...``: run-config overrides, dotted keys, YAML values."""
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"override config keys: dotted keys, YAML values ({example})",
    )


@contextlib.contextmanager
def reading(path: Any, what: str) -> Iterator[None]:
    """Turn the errors of reading ``path`` (missing, unreadable, not valid JSON or YAML)
    into one :class:`UserError` naming ``what`` and the file."""
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a folder, not a file") from None
    except OSError as err:
        raise UserError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a text file") from None
    except (ValueError, KeyError, TypeError) as err:  # not JSON, or not the expected JSON
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise UserError(f"{what} {path} is empty (0 bytes)") from None
        if isinstance(err, KeyError):
            problem = f"missing key {err}"
        else:
            problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{what} {path}: {problem}") from None


def _qualified_names(error: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(error).__mro__}


def _load(verb: str):
    return importlib.import_module(f"eiou.cli.{verb.replace('-', '_')}")


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per verb.

    Only the module of ``verb`` (the one being run) is imported, so one verb's heavy
    imports or errors never slow down or break another; the top-level ``--help`` reads each
    module's first docstring line without importing it.
    """
    from eiou import __version__

    parser = _Parser(
        prog="eiou",
        description="EIoU, CT, SOT and the IoU head: library, experiments and reproduction.",
        epilog=f"Exit status: 0 success, {EXIT_FAILURE} a run failed (e.g. a non-finite "
        f"loss), {EXIT_USER_ERROR} a user error (bad arguments, a missing or malformed "
        "input file); errors are one message naming the file, without a traceback.",
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
    """Entry point of the ``eiou`` command: the verb's exit status.

    Raises:
        CommandError: (a ``SystemExit``) after printing a user error or a failed run as
            one message, with the exit status of the module docstring.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(verb if verb in VERBS else None).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # the reader stopped early (`eiou runs --list | head -n 1`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        names = _qualified_names(err)
        if isinstance(err, UserError) or names & _USER_ERRORS:
            code = EXIT_USER_ERROR
        elif names & _FAILURES:
            code = EXIT_FAILURE
        else:
            raise
        message = f"eiou {args.verb}: {err}"
        print(message, file=sys.stderr)
        raise CommandError(message, code) from None


if __name__ == "__main__":
    sys.exit(main())
