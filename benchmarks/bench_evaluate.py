"""Time of ``eiou.evaluate.evaluate_predictions`` with the faster_coco_eval backend, as a
ratio against the pycocotools backend (the reference).

Usage::

    python benchmarks/bench_evaluate.py [--images 500] [--categories 80] [--detections 100]
        [--rounds 5] [--seed 0] [--output benchmarks/results/evaluate_cpu.md]

The workload is COCO-like and seeded (numpy): 640x480 images with a geometric number of
objects (mean 7.3, COCO's), log-normal sizes (about 40% small, 35% medium, 25% large as
in COCO), 1% crowd regions; per image ``--detections`` detections: 1-3 noisy copies of
each object (5% with a wrong class) and the rest false positives of random classes, with
lower scores. One measurement is one full ``evaluate_predictions(gt, detections,
backend=...)`` call (indexing, matching, accumulation, summaries, metric extraction).
Rounds interleave the backends (A, B, A, B, ...) after one untimed warm-up call each; the
table reports the median seconds of each and the ratio faster_coco_eval / pycocotools
(lower is faster), and whether the two metric dicts agree (to 1e-12, and bit for bit).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import eiou
from eiou import evaluate, io

BACKENDS = ("pycocotools", "faster_coco_eval")
WIDTH, HEIGHT = 640, 480
TOLERANCE = 1e-12


def make_workload(
    images: int, categories: int, detections: int, seed: int = 0
) -> tuple[dict, list[dict]]:
    """(COCO ground truth dict, detections list); see the module docstring."""
    rng = np.random.default_rng(seed)
    image_rows = [
        {"id": i, "file_name": f"{i:06d}.jpg", "width": WIDTH, "height": HEIGHT}
        for i in range(1, images + 1)
    ]
    cats = [{"id": c, "name": f"class{c:02d}"} for c in range(1, categories + 1)]
    anns: list[dict] = []
    preds: list[dict] = []

    def boxes(n: int, median_side: float) -> np.ndarray:
        side = np.exp(rng.normal(math.log(median_side), 1.0, n))  # sqrt(area)
        aspect = np.exp(rng.normal(0.0, 0.5, n))
        w = np.clip(side * np.sqrt(aspect), 1.0, WIDTH)
        h = np.clip(side / np.sqrt(aspect), 1.0, HEIGHT)
        x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
        return np.stack([x, y, w, h], axis=1)

    for image in image_rows:
        image_id = image["id"]
        n_objects = min(int(rng.geometric(1 / 7.3)), detections // 2)
        objects = boxes(n_objects, 45.0)
        labels = rng.integers(1, categories + 1, n_objects)
        for box, label in zip(objects, labels, strict=True):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(label),
                         "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                         "iscrowd": int(rng.uniform() < 0.01)})  # fmt: skip
        image_preds = []
        for box, label in zip(objects, labels, strict=True):
            for _ in range(int(rng.integers(1, 4))):
                jitter = rng.normal(0.0, 0.05, 4) * box[[2, 3, 2, 3]]
                x, y = box[0] + jitter[0], box[1] + jitter[1]
                w, h = abs(box[2] + jitter[2]) + 0.5, abs(box[3] + jitter[3]) + 0.5
                wrong = rng.uniform() < 0.05
                image_preds.append({"image_id": image_id,
                                    "category_id": int(rng.integers(1, categories + 1))
                                    if wrong else int(label),
                                    "bbox": [float(x), float(y), float(w), float(h)],
                                    "score": float(rng.beta(5, 2))})  # fmt: skip
        image_preds = image_preds[:detections]
        for box in boxes(detections - len(image_preds), 30.0):
            image_preds.append({"image_id": image_id,
                                "category_id": int(rng.integers(1, categories + 1)),
                                "bbox": [float(v) for v in box],
                                "score": float(rng.beta(1, 4))})  # fmt: skip
        preds.extend(image_preds)
    return {"images": image_rows, "annotations": anns, "categories": cats}, preds


def _numbers(tree: Any, path: str = "") -> dict[str, Any]:
    """Flatten a result dict to ``{path: leaf}``."""
    if isinstance(tree, dict):
        return {
            k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{path}.{key}").items()
        }
    if isinstance(tree, list):
        return {
            k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{path}[{i}]").items()
        }
    return {path: tree}


def compare(ref: dict, fast: dict) -> dict[str, Any]:
    """Agreement of two ``evaluate_predictions`` results (without ``evaluator``)."""
    a = _numbers({k: v for k, v in ref.items() if k != "evaluator"})
    b = _numbers({k: v for k, v in fast.items() if k != "evaluator"})
    if a.keys() != b.keys():
        return {"same_keys": False, "within_tolerance": False, "bit_identical": False}
    differing, max_diff, within = 0, 0.0, True
    for key, x in a.items():
        y = b[key]
        if x == y:
            continue
        differing += 1
        if isinstance(x, float) and isinstance(y, float):
            max_diff = max(max_diff, abs(x - y))
            within = within and abs(x - y) <= TOLERANCE
        else:
            within = False
    return {
        "same_keys": True,
        "values": len(a),
        "differing": differing,
        "max_abs_diff": max_diff,
        "within_tolerance": within,
        "bit_identical": differing == 0,
    }


def bench(gt: dict, preds: list[dict], rounds: int) -> tuple[dict[str, list[float]], dict]:
    results = {b: evaluate.evaluate_predictions(gt, preds, backend=b) for b in BACKENDS}  # warm-up
    times: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for _ in range(rounds):
        for backend in BACKENDS:
            start = time.perf_counter()
            evaluate.evaluate_predictions(gt, preds, backend=backend)
            times[backend].append(time.perf_counter() - start)
    return times, results


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def to_markdown(
    times: dict[str, list[float]], agreement: dict, workload: dict, results: dict, command: str
) -> str:
    medians = {b: statistics.median(ts) for b, ts in times.items()}
    ratio = medians["faster_coco_eval"] / medians["pycocotools"]
    load = workload["load_average"]
    ref = results["pycocotools"]
    lines = [
        "# COCO evaluation time: faster_coco_eval against pycocotools",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"({platform.system()} {platform.machine()}; 1-min load average {load:.2f} at the "
        f"start, the machine may be shared); Python {platform.python_version()}, "
        f"pycocotools {_version('pycocotools')}, faster-coco-eval "
        f"{_version('faster-coco-eval')}, numpy {np.__version__}, eiou {eiou.__version__}.",
        "",
        f"Workload (seeded): {workload['images']} images, {workload['categories']} categories, "
        f"{workload['annotations']} ground-truth boxes ({workload['crowd']} crowd), "
        f"{workload['detections']} detections ({workload['per_image']:.0f} per image); "
        f"AP {_pct(ref['AP'])}, AP50 {_pct(ref['AP50'])}, AP90 {_pct(ref['AP90'])}, "
        f"APs/APm/APl {_pct(ref['APs'])}/{_pct(ref['APm'])}/{_pct(ref['APl'])} (pycocotools).",
        "",
        "One call: `evaluate_predictions(gt, detections, backend=...)`; "
        f"{len(times['pycocotools'])} interleaved rounds after one warm-up call each; ratio: "
        "median time / median time of pycocotools (lower is faster).",
        "",
        "| backend | median s | min s | max s | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for backend in BACKENDS:
        ts = times[backend]
        lines.append(
            f"| {backend} | {medians[backend]:.3f} | {min(ts):.3f} | {max(ts):.3f} | "
            f"{medians[backend] / medians['pycocotools']:.3f}x |"
        )
    lines += [
        "",
        f"faster_coco_eval takes {ratio:.3f}x the time ({1 / ratio:.1f} times faster).",
        "",
    ]
    if not agreement["same_keys"]:
        verdict = "NOT identical: the result dicts have different keys."
    elif agreement["bit_identical"]:
        verdict = f"identical, bit for bit (all {agreement['values']} values)."
    elif agreement["within_tolerance"]:
        verdict = (
            f"identical to within {TOLERANCE:g} ({agreement['differing']} of "
            f"{agreement['values']} values differ in their last bits, max |difference| "
            f"{agreement['max_abs_diff']:.1e}: pycocotools' precision divides by tp + fp + "
            "np.spacing(1), faster_coco_eval's by tp + fp)."
        )
    else:
        verdict = (
            f"NOT identical: {agreement['differing']} of {agreement['values']} values differ, "
            f"max |difference| {agreement['max_abs_diff']:.1e}."
        )
    lines += [f"Metrics of the two backends on this workload: {verdict}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--categories", type=int, default=80)
    parser.add_argument("--detections", type=int, default=100, help="per image")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write the Markdown table here (default: print only)",
    )
    args = parser.parse_args(argv)
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        print('bench_evaluate: needs faster-coco-eval: pip install "eiou[fast]"', file=sys.stderr)
        return 2
    gt, preds = make_workload(args.images, args.categories, args.detections, args.seed)
    workload = {
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan,
        "images": args.images,
        "categories": args.categories,
        "annotations": len(gt["annotations"]),
        "crowd": sum(a["iscrowd"] for a in gt["annotations"]),
        "detections": len(preds),
        "per_image": len(preds) / args.images,
    }
    times, results = bench(gt, preds, args.rounds)
    agreement = compare(results["pycocotools"], results["faster_coco_eval"])
    command = "python benchmarks/bench_evaluate.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    text = to_markdown(times, agreement, workload, results, command.strip())
    print(text)
    if args.output:
        io.write_text(args.output, text + "\n")
    return 0 if agreement["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
