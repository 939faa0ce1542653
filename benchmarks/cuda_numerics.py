"""Every box loss on CUDA against the same loss on the CPU: values and gradients.

Usage::

    python benchmarks/cuda_numerics.py [--pairs 100000] [--output FILE.md]

Draws a seeded set of (prediction, target) box pairs in the anchor-normalised frame
covering every configuration of the paper's Fig. 2 (overlapping, contained, apart along one
or both axes, touching, inverted), computes each built-in loss (with CT, SOT and both EIoU
gradients) and its gradient with respect to the prediction in float32 on the CPU and on
CUDA, and reports the largest absolute and relative differences, with float64 on the CPU as
the reference for both. Exits non-zero when CUDA is further from float64 than 10x the
CPU's own float32 error (plus 1e-6), i.e. when the GPU path computes something else.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

from eiou import io, losses

CASES: dict[str, dict] = {
    "iou (-ln IoU)": {"name": "iou"},
    "giou": {"name": "giou"},
    "diou": {"name": "diou"},
    "ciou": {"name": "ciou"},
    "eiou": {"name": "eiou"},
    "eiou + CT": {"name": "eiou", "power": 2},
    "eiou + CT + SOT": {"name": "eiou", "power": 2, "sot": True},
    "eiou + CT + SOT (paper gradient)": {
        "name": "eiou",
        "power": 2,
        "sot": True,
        "gradient": "paper",
    },
    "eiou (paper gradient)": {"name": "eiou", "gradient": "paper"},
}


def pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred, target)`` float64 ``(n, 4)``: targets of size 0.5..2, predictions moved by up
    to 3 box sizes (a third apart), scaled, and 5 % inverted."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 4
    wh = 0.5 + 1.5 * torch.rand(n, 2, generator=g, dtype=torch.float64)
    target = torch.cat([xy, xy + wh], dim=1)
    shift = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 6 * wh
    scale = torch.exp(torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.4)
    pxy = xy + shift
    pred = torch.cat([pxy, pxy + wh * scale], dim=1)
    flip = torch.rand(n, generator=g) < 0.05
    pred[flip] = pred[flip][:, [2, 3, 0, 1]]
    return pred, target


def value_and_grad(options: dict, pred: torch.Tensor, target: torch.Tensor, device: str):
    loss = losses.get(**options)
    p = pred.to(device).clone().requires_grad_(True)
    out = loss(p, target.to(device), reduction="none")
    out.sum().backward()
    return out.detach().double().cpu(), p.grad.double().cpu()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    pred, target = pairs(args.pairs)
    lines = [
        "# Box losses on CUDA vs the CPU (float32), against float64",
        "",
        f"Command: `python benchmarks/cuda_numerics.py --pairs {args.pairs}`",
        "",
        f"{torch.cuda.get_device_name()}, torch {torch.__version__} (CUDA {torch.version.cuda}),"
        f" Python {platform.python_version()}; {args.pairs} pairs covering Fig. 2's cases.",
        "",
        "Max absolute errors against float64; `max grad`: the largest float64 gradient entry.",
        "",
        "| loss | value err, CPU | value err, CUDA | grad err, CPU | grad err, CUDA "
        "| CUDA vs CPU grad | max grad |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    bad = []
    for label, options in CASES.items():
        ref_v, ref_g = value_and_grad(options, pred, target, "cpu")
        cpu_v, cpu_g = value_and_grad(options, pred.float(), target.float(), "cpu")
        gpu_v, gpu_g = value_and_grad(options, pred.float(), target.float(), "cuda")
        errs = [
            (cpu_v - ref_v).abs().max().item(),
            (gpu_v - ref_v).abs().max().item(),
            (cpu_g - ref_g).abs().max().item(),
            (gpu_g - ref_g).abs().max().item(),
            (gpu_g - cpu_g).abs().max().item(),
            ref_g.abs().max().item(),
        ]
        lines.append(f"| {label} | " + " | ".join(f"{e:.2e}" for e in errs) + " |")
        if errs[1] > 10 * errs[0] + 1e-6 or errs[3] > 10 * errs[2] + 1e-6:
            bad.append(label)
    lines += ["", "CUDA within 10x the CPU's float32 error (+1e-6) of float64: "
              + ("yes, every loss" if not bad else "NO: " + ", ".join(bad)), ""]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.output:
        io.write_text(args.output, text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
