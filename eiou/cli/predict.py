"""`eiou predict`: run a trained detector on a split and write COCO-format results."""

from __future__ import annotations

import argparse
import logging
import zipfile
from pathlib import Path

from eiou.cli import UserError, add_output, add_set

HELP = "Predict a split with a trained checkpoint (one process); write COCO results JSON."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="run config YAML")
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="model_final.pth or a training checkpoint"
    )
    add_output(parser, "predictions JSON to write")
    add_set(parser, "--set model.scoring.method=cls")
    parser.add_argument(
        "--split", default=None, help="split to predict (default: predict.split, i.e. 'test')"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: config)")
    parser.add_argument(
        "--candidates",
        type=Path,
        default=None,
        help="also write each image's pre-NMS candidates here (e.g. candidates.pt), for "
        "`eiou rescore`",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show a progress bar (default: yes)",
    )


def check_checkpoint(path: Path) -> None:
    """Fail with one line unless ``path`` is a complete ``torch.save`` archive."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist (train the run first)")
    if not zipfile.is_zipfile(path):
        raise UserError(f"checkpoint {path} is not a PyTorch checkpoint (truncated or corrupt)")


def run(args: argparse.Namespace) -> int:
    from eiou.config import load_run_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_run_config(args.config, overrides=args.set)
    check_checkpoint(args.checkpoint)

    from eiou.predict import predict

    results = predict(
        cfg,
        args.checkpoint,
        args.output,
        split=args.split,
        device=args.device,
        progress=args.progress,
        candidates=args.candidates,
    )
    print(f"wrote {len(results)} detections to {args.output}")
    if args.candidates is not None:
        print(f"wrote the candidates to {args.candidates}")
    return 0
