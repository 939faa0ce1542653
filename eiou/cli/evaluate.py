"""`eiou evaluate`: COCO-protocol metrics of a predictions file, with provenance."""

from __future__ import annotations

import argparse
from pathlib import Path

from eiou import evaluate
from eiou.cli import UserError, add_output, reading

HELP = "evaluate COCO-format predictions against ground truth (AP, AP90, recall per IoU)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", type=Path, required=True, help="ground truth COCO JSON")
    parser.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="detections, COCO results format (list of image_id, "
        "category_id, bbox [x, y, w, h], score)",
    )
    add_output(parser, "metrics JSON to write")
    parser.add_argument(
        "--run-config",
        type=Path,
        default=None,
        help="run spec YAML: its seed, loss, gradient and scoring modes go into the provenance",
    )
    parser.add_argument(
        "--backend",
        choices=evaluate.BACKENDS,
        default="pycocotools",
        help="evaluation engine: pycocotools (default, the paper's reference) or "
        'faster_coco_eval (pip install "eiou[fast]"); the numbers are identical, '
        "faster_coco_eval is faster; auto: faster_coco_eval where installed",
    )


def run(args: argparse.Namespace) -> int:
    from eiou.config import read_yaml

    run_config = {} if args.run_config is None else read_yaml(args.run_config, "run config")
    with reading(args.gt, "ground truth"):
        gt = evaluate.load_ground_truth(args.gt)
    with reading(args.predictions, "predictions"):
        predictions = evaluate.load_predictions(args.predictions)
    try:
        metrics = evaluate.evaluate_predictions(gt, predictions, backend=args.backend)
    except (ValueError, ImportError) as err:
        raise UserError(f"{args.predictions} against {args.gt}: {err}") from None
    record = evaluate.provenance(
        run_config, ground_truth=str(args.gt), predictions=str(args.predictions)
    )
    evaluate.write_metrics(args.output, metrics, record)
    shown = ("AP", "AP50", "AP75", "AP90", "APs", "APm", "APl", "AR100")
    print(
        "  ".join(
            f"{k}={100 * metrics[k]:.1f}" if metrics[k] is not None else f"{k}=n/a" for k in shown
        )
    )
    print(f"wrote {args.output}")
    return 0
