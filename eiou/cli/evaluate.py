"""`eiou evaluate`: COCO-protocol metrics of a predictions file, with provenance."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eiou import evaluate

HELP = "evaluate COCO-format predictions against ground truth (AP, AP90, recall per IoU)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gt",
        type=Path,
        default=None,
        help="ground truth COCO JSON (default: the --split of --run-config's data)",
    )
    parser.add_argument(
        "--split",
        default="test",
        help="with --run-config and no --gt: the split whose ground truth to use (test, or "
        "val: the held-out part of the training data)",
    )
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
        f"{evaluate.RECORDS_FILE} beside a metrics.json --output, eval_images_<x>.npz beside "
        "metrics_<x>.json)",
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


def _ground_truth(args: argparse.Namespace, run_config: dict) -> object:
    """The --gt file, or the COCO ground truth of --split of the run's data section."""
    if args.gt is not None:
        return args.gt
    if "data" not in run_config:
        raise ValueError("give --gt, or --run-config with a data section (and --split)")
    from eiou.data import build_dataset

    return build_dataset(run_config["data"], args.split, train=False).coco


def run(args: argparse.Namespace) -> int:
    from eiou.config import RunConfigError, load_run_config

    try:
        run_config = load_run_config(args.run_config) if args.run_config is not None else {}
        gt = _ground_truth(args, run_config)
        metrics, records = evaluate.evaluate_with_records(
            gt, args.predictions, backend=args.backend
        )
    except (OSError, ValueError, ImportError, RunConfigError) as err:
        print(f"eiou evaluate: {err}", file=sys.stderr)
        return 2
    record = evaluate.provenance(
        run_config,
        ground_truth=str(args.gt) if args.gt is not None else f"split {args.split}",
        predictions=str(args.predictions),
    )
    records_path = args.image_records or evaluate.records_path_for(args.output)
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
