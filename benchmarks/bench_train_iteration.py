"""Time per training iteration of every box-loss variant, against smooth-L1 in the same run.

Usage::

    python benchmarks/bench_train_iteration.py [--detectors faster_rcnn retinanet]
        [--rounds 7] [--iterations 5] [--batch-size 4] [--size 128] [--threads 1]
        [--output benchmarks/results/train_iteration_cpu.md]

One iteration is what ``eiou.train`` does per step: forward with targets, the sum of the
losses, ``backward`` and an SGD step (momentum 0.9, weight decay 1e-4) on the tiny CPU
config (tiny backbone + FPN, ``--size`` px images, ``--batch-size`` images). Every variant
trains its own model from the same initial seed on the same fixed batch (random images with
1-4 boxes each), so data loading, which is identical for every variant, is left out. Rounds
are interleaved (each round times ``--iterations`` iterations of every variant in turn) so
drifts of the machine hit every variant alike; the table reports the median seconds per
iteration and the ratio to smooth-L1 of the same detector.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

from eiou import io
from eiou.config import load_run_config
from eiou.engines.torchvision import build_detector

VARIANTS: dict[str, dict] = {
    "smooth_l1 (baseline)": {"box_loss": {"name": "smooth_l1"}},
    "smooth_l1 + IoU head": {
        "box_loss": {"name": "smooth_l1"},
        "iou_head": {"enabled": True},
        "scoring": {"method": "sqrt_cls_x_iou"},
    },
    "iou (-ln IoU)": {"box_loss": {"name": "iou"}},
    "giou": {"box_loss": {"name": "giou"}},
    "diou": {"box_loss": {"name": "diou"}},
    "ciou": {"box_loss": {"name": "ciou"}},
    "eiou (sqrt_area)": {"box_loss": {"name": "eiou", "coder": "sqrt_area"}},
    "eiou + CT": {"box_loss": {"name": "eiou", "power": 2, "coder": "sqrt_area"}},
    "eiou + CT + SOT": {
        "box_loss": {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"}
    },
    "eiou + CT + SOT (paper gradient)": {
        "box_loss": {
            "name": "eiou",
            "power": 2,
            "sot": True,
            "coder": "sqrt_area",
            "gradient": "paper",
        }
    },
    "full: eiou + CT + SOT + IoU head": {
        "box_loss": {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"},
        "iou_head": {"enabled": True},
        "scoring": {"method": "sqrt_cls_x_iou"},
    },
}
BASELINE = "smooth_l1 (baseline)"
FULL = "full: eiou + CT + SOT + IoU head"
TARGET = 1.03  # the full method should cost at most 3 % more per iteration than smooth-L1


def make_batch(batch_size: int, size: int, seed: int = 0) -> tuple[list, list]:
    """Fixed random images ``(3, size, size)`` and 1-4 valid boxes per image."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch_size):
        images.append(torch.rand(3, size, size, generator=g))
        n = int(torch.randint(1, 5, (), generator=g))
        xy = torch.rand(n, 2, generator=g) * size * 0.6
        wh = torch.rand(n, 2, generator=g) * size * 0.35 + 6
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
        targets.append({"boxes": boxes, "labels": torch.randint(1, 4, (n,), generator=g)})
    return images, targets


def make_model(detector: str, variant: dict, size: int) -> tuple[torch.nn.Module, torch.optim.SGD]:
    cfg = load_run_config(
        {"model": {"detector": detector, "min_size": size, "max_size": size, **variant}}
    )
    torch.manual_seed(0)
    model = build_detector(cfg["model"], 3).train()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=1e-4)


def step(model: torch.nn.Module, optimizer: torch.optim.SGD, batch: tuple[list, list]) -> None:
    losses = model(*batch)
    total = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()


def bench(detector: str, rounds: int, iterations: int, batch: tuple[list, list], size: int):
    models = {name: make_model(detector, v, size) for name, v in VARIANTS.items()}
    for model, optimizer in models.values():  # warm-up (allocator, first-call overheads)
        for _ in range(2):
            step(model, optimizer, batch)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(rounds):
        for name, (model, optimizer) in models.items():
            torch.manual_seed(1000 + r)  # the same RPN / RoI sampling draws for every variant
            start = time.perf_counter()
            for _ in range(iterations):
                step(model, optimizer, batch)
            times[name].append((time.perf_counter() - start) / iterations)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=["faster_rcnn", "retinanet"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/train_iteration_cpu.md")
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch = make_batch(args.batch_size, args.size)
    command = "python benchmarks/bench_train_iteration.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    lines = [
        "# Time per training iteration, tiny CPU config",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, {args.threads} thread(s); batch "
        f"{args.batch_size} x {args.size} px, median of {args.rounds} interleaved rounds of "
        f"{args.iterations} iterations (forward + backward + SGD step).",
        "",
        "| detector | variant | s / iteration | vs smooth-L1 |",
        "|---|---|---:|---:|",
    ]
    verdicts = []
    for detector in args.detectors:
        medians = bench(detector, args.rounds, args.iterations, batch, args.size)
        base = medians[BASELINE]
        for name, value in medians.items():
            lines.append(f"| {detector} | {name} | {value:.4f} | {value / base:.3f}x |")
            print(f"{detector:12s} {name:36s} {value:.4f} s  {value / base:.3f}x", flush=True)
        ratio = medians[FULL] / base
        verdicts.append(
            f"- {detector}: full method {ratio:.3f}x smooth-L1 "
            f"({'within' if ratio <= TARGET else 'ABOVE'} the {TARGET:.2f}x target)"
        )
    lines += ["", "Target: the full method costs at most 3 % more per iteration.", *verdicts, ""]
    io.write_text(args.output, "\n".join(lines))
    print("\n".join(verdicts))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
