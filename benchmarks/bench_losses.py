"""Forward+backward time of every box loss, as a ratio against torchvision's GIoU loss.

Usage::

    python benchmarks/bench_losses.py [--sizes 1000 100000 1000000] [--repeats 15]
        [--device cpu|cuda|all] [--output benchmarks/results/losses_cpu.md]

Each measurement is one ``loss(pred, target, reduction="sum").backward()`` on N random box
pairs (float32; 80% overlapping, 20% apart). Measurements of all losses are interleaved
round by round so drifts of the machine hit every loss alike; the table reports the
median time per loss and its ratio to ``torchvision.ops.generalized_box_iou_loss`` timed
in the same rounds. Lower is faster; 1.00x means as fast as the peer.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torchvision.ops import generalized_box_iou_loss

import eiou
from eiou import io, losses

PEER = "torchvision generalized_box_iou_loss"

VARIANTS: dict[str, dict] = {
    "smooth_l1 (offsets)": {"name": "smooth_l1"},
    "iou (-ln IoU)": {"name": "iou"},
    "giou": {"name": "giou"},
    "diou": {"name": "diou"},
    "ciou": {"name": "ciou"},
    "eiou (1 - EIoU)": {"name": "eiou"},
    "Smooth-EIoU (CT)": {"name": "eiou", "power": 2},
    "Smooth-EIoU + SOT (autograd)": {"name": "eiou", "power": 2, "sot": True},
    "Smooth-EIoU + SOT (paper)": {"name": "eiou", "power": 2, "sot": True, "gradient": "paper"},
}
TARGETS = {  # issue targets at N = 1e6 on CPU, as ratios to the peer
    "Smooth-EIoU + SOT (autograd)": 1.0,
    "Smooth-EIoU + SOT (paper)": 0.7,
}


def make_pairs(n: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """N float32 (pred, target) box pairs: 80% overlapping, 20% apart."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 500
    wh = torch.rand(n, 2, generator=g) * 100 + 4
    target = torch.cat([xy, xy + wh], -1)
    jitter = (torch.rand(n, 4, generator=g) - 0.5) * wh.repeat(1, 2) * 0.5
    pred = target + jitter
    apart = torch.rand(n, generator=g) < 0.2
    pred[apart] += 300
    pred = torch.cat([pred[:, :2], torch.maximum(pred[:, :2] + 1, pred[:, 2:])], -1)
    return pred.to(device), target.to(device)


def _timer(fn: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(n: int, device: str, repeats: int) -> list[dict]:
    pred, target = make_pairs(n, device)
    offsets, offset_targets = torch.randn_like(pred), torch.randn_like(pred)
    calls: dict[str, Callable[[], None]] = {}

    def peer() -> None:
        p = pred.detach().requires_grad_()
        generalized_box_iou_loss(p, target, reduction="sum").backward()

    calls[PEER] = peer
    for label, spec in VARIANTS.items():
        options = dict(spec)
        loss = losses.get(options.pop("name"), **options)
        inputs = (offsets, offset_targets) if loss.input_space == "offsets" else (pred, target)

        def call(loss=loss, inputs=inputs) -> None:
            p = inputs[0].detach().requires_grad_()
            loss(p, inputs[1], reduction="sum").backward()

        calls[label] = call
    for fn in calls.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(repeats):
        for label, fn in calls.items():
            times[label].append(_timer(fn, device))
    peer_median = statistics.median(times[PEER])
    return [
        {
            "device": device,
            "N": n,
            "loss": label,
            "median_ms": 1e3 * statistics.median(ts),
            "ratio": statistics.median(ts) / peer_median,
        }
        for label, ts in times.items()
    ]


def to_markdown(rows: list[dict], command: str) -> str:
    sizes = sorted({r["N"] for r in rows})
    lines = [
        "# Box-loss forward+backward time",
        "",
        f"Command: `{command}`",
        "",
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, eiou "
        f"{eiou.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads.",
        "",
        f"Ratio: median time / median time of `{PEER}` in the same interleaved rounds "
        "(lower is faster).",
        "",
    ]
    for device in sorted({r["device"] for r in rows}):
        header = "| loss | " + " | ".join(f"N={n:.0e} ms | ratio" for n in sizes) + " |"
        lines += [f"## {device}", "", header, "|---|" + "---:|---:|" * len(sizes)]
        for label in [PEER, *VARIANTS]:
            cells = []
            for n in sizes:
                (row,) = [
                    r for r in rows if r["device"] == device and r["N"] == n and r["loss"] == label
                ]
                cells.append(f"{row['median_ms']:.2f} | {row['ratio']:.2f}x")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        if device == "cpu" and 1_000_000 in sizes:
            lines.append("Targets at N=1e6 on CPU:")
            for label, target in TARGETS.items():
                (row,) = [
                    r
                    for r in rows
                    if r["device"] == device and r["N"] == 1_000_000 and r["loss"] == label
                ]
                verdict = "met" if row["ratio"] <= target else "NOT met"
                lines.append(f"- {label}: {row['ratio']:.2f}x (target <= {target}x): {verdict}")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write the Markdown table here (default: print only)",
    )
    args = parser.parse_args(argv)
    devices = ["cpu"] if args.device == "cpu" else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append("cuda")
    if args.device == "all":
        devices.insert(0, "cpu")
    rows = [r for device in devices for n in args.sizes for r in bench(n, device, args.repeats)]
    command = "python benchmarks/bench_losses.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    text = to_markdown(rows, command.strip())
    print(text)
    if args.output:
        io.write_text(args.output, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
