"""`eiou train`: train the detector of a run config, resuming from its last checkpoint."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

HELP = "Train a detector from a run config (resumes from <output-dir>/checkpoints/)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="run config YAML")
    parser.add_argument(
        "--output-dir",
        type=Path,
        required=True,
        help="folder for checkpoints/, train_log.jsonl and model_final.pth",
    )
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from the newest checkpoint in --output-dir (default: yes)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from eiou.config import RunConfigError
    from eiou.data import DatasetError
    from eiou.engines import EngineUnavailableError, WeightsUnavailableError
    from eiou.train import NonFiniteLossError, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        final = train(
            args.config, args.output_dir, resume=args.resume, progress=not args.no_progress
        )
    except (
        RunConfigError,
        DatasetError,
        WeightsUnavailableError,
        EngineUnavailableError,
        NonFiniteLossError,
    ) as err:
        raise SystemExit(f"eiou train: {err}") from None
    if os.environ.get("RANK", "0") == "0":
        print(f"wrote {final}")
    return 0
