"""Ranges of EIoU, U_e, every box loss and its gradient on the pairs of ``cuda_numerics.py``.

Usage::

    python benchmarks/eiou_ranges.py [--pairs 100000] [--output FILE.md]

Float64 on the CPU, on the seeded pairs of :func:`cuda_numerics.pairs` (5 % of the
predictions inverted along both axes), split into proper and inverted predictions: the
range of EIoU and ``U_e`` and, per loss of :data:`cuda_numerics.CASES`, the range of the
per-pair loss and the largest gradient entry with respect to the prediction.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cuda_numerics import CASES, pairs

from eiou import io, losses, metrics


def _range(values: torch.Tensor) -> str:
    if values.numel() == 0:
        return "—"
    return f"{values.min().item():.4g} .. {values.max().item():.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    pred, target = pairs(args.pairs)
    inverted = (pred[:, 2] < pred[:, 0]) | (pred[:, 3] < pred[:, 1])
    groups = {"proper": ~inverted, "inverted": inverted}
    parts = metrics.extended_iou_parts(pred, target)
    lines = [
        "# EIoU, U_e and the box losses over proper and inverted predictions (float64)",
        "",
        f"Command: `python benchmarks/eiou_ranges.py --pairs {args.pairs}`",
        "",
        f"torch {torch.__version__}, Python {platform.python_version()}, CPU; {args.pairs} "
        f"pairs of `cuda_numerics.pairs()`, {int(inverted.sum())} predictions inverted along "
        "both axes.",
        "",
        "| quantity | proper | inverted |",
        "|---|---:|---:|",
        "| EIoU | " + " | ".join(_range(parts.value[m]) for m in groups.values()) + " |",
        "| U_e | " + " | ".join(_range(parts.union[m]) for m in groups.values()) + " |",
        "",
        "| loss | value, proper | value, inverted | max abs grad, proper "
        "| max abs grad, inverted |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, options in CASES.items():
        p = pred.clone().requires_grad_(True)
        value = losses.get(**options, reduction="none")(p, target)
        value.sum().backward()
        value = value.detach()
        grad = p.grad.abs().amax(-1)
        cells = [_range(value[m]) for m in groups.values()]
        cells += [f"{grad[m].max().item():.4g}" for m in groups.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output:
        io.write_text(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
