"""Which pyramid levels and anchor sizes the ``tiny`` backbone's detectors use, and why.

Usage::

    python benchmarks/ablate_tiny_pyramid.py [--preset config/mini.yaml]
        [--datasets shapes_voc shapes_coco] [--workdir benchmarks/.work/tiny_pyramid]
        [--threads 1] [--output benchmarks/results/tiny_pyramid_cpu.md]

Trains the preset's smooth-L1 run of each detector (its data, schedule and seed exactly as
the workflow would) once per pyramid setting below, then predicts and evaluates the test
split with the COCO protocol. Only the levels and the anchor sizes change between rows of a
detector; ``default`` marks what :func:`eiou.engines.torchvision.build_detector` uses now.
The ResNet backbones are not affected: they keep the paper's settings.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torchvision
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from eiou import experiments, io
from eiou.data import build_dataset
from eiou.engines.torchvision import build as build_module
from eiou.evaluate import evaluate_predictions
from eiou.predict import predict
from eiou.train import train

#: (detector, label, levels, anchor sizes or None for the default, is the default)
P2_P6 = ([1, 2, 3, 4], LastLevelMaxPool)
P3_P7 = ([2, 3, 4], lambda: LastLevelP6P7(32, 32))
SETTINGS = [
    ("faster_rcnn", "P2..P6, sizes 8..128 (anchor = 2x stride)", None, [8, 16, 32, 64, 128], False),
    ("faster_rcnn", "P2..P6, sizes 32..512 (the paper's: 8x stride)", None, None, True),
    ("retinanet", "P3..P7, sizes 8..128 (1x stride)", P3_P7, [8, 16, 32, 64, 128], False),
    (
        "retinanet",
        "P3..P7, sizes 32..512 (the paper's: 4x stride)",
        P3_P7,
        [32, 64, 128, 256, 512],
        False,
    ),
    ("retinanet", "P2..P6, sizes 16..256 (4x stride)", P2_P6, None, True),
]
METRICS = ("AP", "AP50", "AP75", "AP90", "APs", "APm", "APl")


def baseline_specs(preset: Path, datasets: list[str], workdir: Path) -> dict[tuple[str, str], dict]:
    """The preset's smooth-L1 tiny run spec per (dataset, detector), data under ``workdir``."""
    plan = experiments.build_plan(experiments.load_config(preset))
    specs = {}
    for spec in plan["runs"].values():
        key = (spec["data"]["name"], spec["model"]["detector"])
        if (
            key[0] in datasets
            and spec["model"]["box_loss"]["name"] == "smooth_l1"
            and not spec["model"]["iou_head"]["enabled"]
            and spec["model"]["backbone"] == "tiny"
        ):
            spec = copy.deepcopy(spec)
            data_dir = str(workdir / "data" / key[0])
            spec["data"]["root"] = spec["data"]["annotations"] = data_dir
            specs.setdefault(key, spec)
    missing = [
        (d, det) for d in datasets for det in ("faster_rcnn", "retinanet") if (d, det) not in specs
    ]
    if missing:
        raise SystemExit(f"{preset}: no smooth-L1 tiny run for {missing}")
    return specs


def run_setting(spec: dict, levels, sizes, out: Path) -> dict:
    """Train, predict and evaluate one setting; results are cached in ``out/metrics.json``."""
    done = out / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    spec = copy.deepcopy(spec)
    spec["model"]["anchor_sizes"] = sizes
    patch = (
        mock.patch.object(build_module, "retinanet_levels", lambda _: (levels[0], levels[1]()))
        if levels is not None
        else contextlib.nullcontext()
    )
    with patch:
        start = time.perf_counter()
        final = train(spec, out / "run", progress=False)
        seconds = time.perf_counter() - start
        gt = build_dataset(spec["data"], spec["data"]["test_split"], train=False).coco
        predictions = predict(spec, final, out / "predictions.json", progress=False)
    metrics = evaluate_predictions(gt, predictions)
    result = {k: 100 * metrics[k] for k in METRICS}
    result["seconds_per_iteration"] = seconds / spec["train"]["max_iter"]
    io.write_json(done, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", type=Path, default=Path("config/mini.yaml"))
    parser.add_argument("--datasets", nargs="+", default=["shapes_voc", "shapes_coco"])
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.work/tiny_pyramid"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/tiny_pyramid_cpu.md")
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = baseline_specs(args.preset, args.datasets, args.workdir)
    command = "python benchmarks/ablate_tiny_pyramid.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    schedule = next(iter(specs.values()))["train"]
    lines = [
        "# Pyramid levels and anchor sizes of the tiny detectors",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, {args.threads} thread(s). Preset "
        f"`{args.preset}`: smooth-L1 runs, {schedule['max_iter']} iterations of "
        f"{schedule['batch_size']} images at lr {schedule['base_lr']} (at "
        f"{schedule['base_batch_size']} images), seed {next(iter(specs.values()))['seed']}; "
        "COCO-protocol metrics on the test split, in percent.",
        "",
        "| dataset | detector | levels, anchors | default | "
        + " | ".join(METRICS)
        + " | s / iteration |",
        "|---|---|---|---|" + "---:|" * (len(METRICS) + 1),
    ]
    for dataset in args.datasets:
        for detector, label, levels, sizes, default in SETTINGS:
            slug = f"{dataset}-{detector}-" + "".join(c for c in label if c.isalnum())[:24]
            result = run_setting(specs[dataset, detector], levels, sizes, args.workdir / slug)
            cells = " | ".join(f"{result[k]:.1f}" for k in METRICS)
            row = (
                f"| {dataset} | {detector} | {label} | {'yes' if default else ''} | {cells} | "
                f"{result['seconds_per_iteration']:.3f} |"
            )
            lines.append(row)
            print(row, flush=True)
    io.write_text(args.output, "\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
