"""Time of the bootstrap's AP (``eiou.statistics.metrics`` on ``B`` image-weight vectors at
once) as a ratio against pycocotools' ``COCOeval.accumulate()`` on the same evaluation, the
computation that each replicate repeats with other image multiplicities.

Usage::

    python benchmarks/bench_statistics.py [--images 500] [--categories 80] [--detections 100]
        [--replicates 1000] [--threads 1 4] [--rounds 3] [--seed 0] [--output FILE]

The workload is ``bench_evaluate.make_workload`` (COCO-like, seeded: a geometric number of
objects per image, COCO's area mix, 1% crowd, ``--detections`` detections per image).
pycocotools evaluates it once (``evaluate()``); that evaluator gives the per-image records
(``eiou.evaluate.image_records``) and the peer. Rounds interleave, after one untimed warm-up
each: ``accumulate()`` (the peer) and ``metrics(prepared, W)`` with ``W`` the ``(B, I)``
bootstrap multiplicities, once per thread count. The table reports median seconds, seconds
per replicate and the ratio (per replicate) / (one accumulate); unit weights are checked
against pycocotools' precision and recall arrays. The last line projects the compare stage
from the measured time of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import io as _io
import math
import os
import platform
import statistics as stats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_evaluate import make_workload
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import eiou
from eiou import evaluate, io
from eiou import statistics as boot


def _evaluated(gt: dict, preds: list[dict]) -> tuple[COCOeval, float]:
    """pycocotools' evaluator after ``evaluate()`` and ``accumulate()``; evaluate's seconds."""
    with contextlib.redirect_stdout(_io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(preds), "bbox")
        start = time.perf_counter()
        e.evaluate()
        seconds = time.perf_counter() - start
        e.accumulate()
        e.summarize()
    return e, seconds


def _accumulate(e: COCOeval) -> float:
    with contextlib.redirect_stdout(_io.StringIO()):
        start = time.perf_counter()
        e.accumulate()
        return time.perf_counter() - start


def _bootstrap(prepared: boot.PreparedRecords, weights: np.ndarray, threads: int) -> float:
    start = time.perf_counter()
    boot.metrics(prepared, weights, threads=threads)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--categories", type=int, default=80)
    parser.add_argument("--detections", type=int, default=100, help="per image")
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown here")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    gt, preds = make_workload(args.images, args.categories, args.detections, args.seed)
    e, evaluate_s = _evaluated(gt, preds)
    start = time.perf_counter()
    records = evaluate.image_records(e, "pycocotools")
    records_s = time.perf_counter() - start
    start = time.perf_counter()
    prepared = boot.prepare(records)
    prepare_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        evaluate.write_image_records(Path(tmp) / evaluate.RECORDS_FILE, records)
        records_bytes = (Path(tmp) / evaluate.RECORDS_FILE).stat().st_size

    precision, recall = boot.precision_recall(prepared)
    ref_p, ref_r = e.eval["precision"][:, :, :, 0, 2], e.eval["recall"][:, :, 0, 2]
    agreement = max(float(np.abs(precision - ref_p).max()), float(np.abs(recall - ref_r).max()))

    weights = boot.bootstrap_weights(args.images, args.replicates, np.random.default_rng(0))
    _accumulate(e)  # warm-ups
    for threads in args.threads:
        _bootstrap(prepared, weights[:10], threads)
    times: dict[str, list[float]] = {"accumulate": []}
    times.update({f"threads={t}": [] for t in args.threads})
    for _ in range(args.rounds):
        times["accumulate"].append(_accumulate(e))
        for threads in args.threads:
            times[f"threads={threads}"].append(_bootstrap(prepared, weights, threads))
    median = {k: stats.median(v) for k, v in times.items()}
    peer = median["accumulate"]

    command = "python benchmarks/bench_statistics.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    lines = [
        "# Bootstrap AP: eiou.statistics.metrics against pycocotools' accumulate",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.system()}; 1-min load "
        f"average {load:.2f} at the start, the machine may be shared); Python "
        f"{platform.python_version()}, numpy {np.__version__}, eiou {eiou.__version__}.",
        "",
        f"Workload (seeded): {args.images} images, {args.categories} categories, "
        f"{len(gt['annotations'])} ground-truth boxes, {records.num_detections} detections "
        f"kept by the evaluation; AP {100 * e.stats[0]:.1f}. pycocotools' evaluate() took "
        f"{evaluate_s:.2f} s; extracting the records from it {records_s:.2f} s "
        f"({records_s / evaluate_s:.2f}x), preparing them {prepare_s:.3f} s; "
        f"`{evaluate.RECORDS_FILE}` holds them in {records_bytes / 2**20:.1f} MiB "
        f"({records_bytes / max(records.num_detections, 1):.1f} bytes per detection).",
        "",
        f"Unit weights against pycocotools' precision and recall arrays: max |difference| "
        f"{agreement:.1e}.",
        "",
        f"Peer: one `COCOeval.accumulate()` (the AP of one test set). Measured: "
        f"`metrics(prepared, W)` for W of shape ({args.replicates}, {args.images}). "
        f"{args.rounds} interleaved rounds after a warm-up; median seconds.",
        "",
        "| computation | median s | min s | max s | s per replicate | ratio per replicate |",
        "|---|---:|---:|---:|---:|---:|",
        f"| accumulate (1 test set) | {peer:.3f} | {min(times['accumulate']):.3f} | "
        f"{max(times['accumulate']):.3f} | {peer:.4f} | 1.000x |",
    ]
    for threads in args.threads:
        key = f"threads={threads}"
        per = median[key] / args.replicates
        lines.append(
            f"| {args.replicates} replicates, {key} | {median[key]:.3f} | {min(times[key]):.3f} "
            f"| {max(times[key]):.3f} | {per:.4f} | {per / peer:.5f}x |"
        )
    first = f"threads={args.threads[0]}"
    ratio = median[first] / args.replicates / peer
    one_run = median[first] * boot.DEFAULT_REPLICATES / args.replicates
    lines += [
        "",
        f"One replicate costs {ratio:.5f}x one accumulate ({1 / ratio:.0f} times less; "
        f"{args.threads[0]} thread). At this size a run's {boot.DEFAULT_REPLICATES} replicates "
        f"(the default) take about {one_run:.0f} s here, so a comparison stage over 51 runs "
        f"(50 rows and a shared baseline, one seed each) about {51 * one_run / 60:.0f} min.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        io.write_text(args.output, text + "\n")
    return 0 if agreement <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
