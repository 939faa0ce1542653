"""`eiou predict`: run a trained detector on a split and write COCO-format results."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "Predict a split with a trained checkpoint; write COCO results JSON."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="run config YAML")
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="model_final.pth or a training checkpoint"
    )
    parser.add_argument("--output", type=Path, required=True, help="predictions JSON to write")
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from eiou.config import RunConfigError
    from eiou.engines import EngineUnavailableError
    from eiou.predict import predict

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        results = predict(
            args.config,
            args.checkpoint,
            args.output,
            split=args.split,
            device=args.device,
            progress=not args.no_progress,
            candidates=args.candidates,
        )
    except (RunConfigError, FileNotFoundError, EngineUnavailableError) as err:
        raise SystemExit(f"eiou predict: {err}") from None
    print(f"wrote {len(results)} detections to {args.output}")
    if args.candidates is not None:
        print(f"wrote the candidates to {args.candidates}")
    return 0
