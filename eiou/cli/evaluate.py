"""`eiou evaluate`: COCO-protocol metrics of a predictions file, with provenance."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eiou import evaluate

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
    parser.add_argument("--output", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument(
        "--image-records",
        type=Path,
        default=None,
        help="per-image evaluation records to write (.npz, read by `eiou compare`; default: "
        f"{evaluate.RECORDS_FILE} beside --output)",
    )
    parser.add_argument(
        "--run-config",
        type=Path,
        default=None,
        help="run config or run spec YAML: its name, seed, loss, gradient and scoring modes "
        "go into the provenance",
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
    from eiou.config import RunConfigError, load_run_config

    try:
        run_config = load_run_config(args.run_config) if args.run_config is not None else {}
        metrics, records = evaluate.evaluate_with_records(
            args.gt, args.predictions, backend=args.backend
        )
    except (OSError, ValueError, ImportError, RunConfigError) as err:
        print(f"eiou evaluate: {err}", file=sys.stderr)
        return 2
    record = evaluate.provenance(
        run_config, ground_truth=str(args.gt), predictions=str(args.predictions)
    )
    records_path = args.image_records or args.output.with_name(evaluate.RECORDS_FILE)
    evaluate.write_image_records(records_path, records)
    evaluate.write_metrics(args.output, metrics, record)
    shown = ("AP", "AP50", "AP75", "AP90", "APs", "APm", "APl", "AR100")
    print(
        "  ".join(
            f"{k}={100 * metrics[k]:.1f}" if metrics[k] is not None else f"{k}=n/a" for k in shown
        )
    )
    print(f"wrote {args.output} and {records_path}")
    return 0
