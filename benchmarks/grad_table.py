"""How hard each built-in box-loss variant pushes at the start of training (Markdown table).

Usage::

    python benchmarks/grad_table.py [--pairs-per-bin 2000] [--seed 0] [--lr 0.01]
        [--output benchmarks/results/grad_table_after.md]

For every built-in variant (``eiou.experiments.BUILTIN_VARIANTS``) and both detectors, the
stage's real ``BoxRegression`` (``build_box_regression(variant["box_loss"], detector)``, so
the detector's default coder, output scale and loss weight) is evaluated at raw regression
outputs 0 (prediction = proposal / anchor) on the reference set of
``eiou.calibration.reference_pairs`` (seeded; anchors around ground truths with realistic
sizes and aspect ratios; the same number of pairs in each IoU bin). Each cell is the mean
over the bin's positives of ``||d (weight * loss_i) / d r_i||``, the gradient one positive's
raw outputs ``r_i`` receive when the stage's normaliser is 1. In training it is divided by
the normaliser: Faster R-CNN's second stage divides by the sampled RoIs (512 per image, at
most 25 % positive, so at least 4 per positive), RetinaNet by the positives. "mean" is the
mean over all pairs (= over the bins), "vs smooth-L1" its ratio to the same detector's
smooth-L1 row, and "step dIoU" the mean IoU gain of one plain gradient step
``r = -lr * gradient`` (``--lr``), the variant's effective learning rate in box space.
Variants with the IoU head add the head's KL loss (a random head on random features, its
target from the stage's detached predictions) before differentiating: the head must not
change the box gradient, and the table shows whether it does.

A second table gives the Jacobian of raw outputs -> box corners at raw outputs 0 (units of
``S = sqrt(anchor area)`` per unit of raw output) of each detector's coders: its singular
values and ``|det|^(1/4)``, at a square anchor and at a 1:3 anchor.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

import torch
import torchvision

from eiou import calibration, coders, io, metrics
from eiou.engines.torchvision.box_regression import BoxRegression, build_box_regression
from eiou.experiments import BUILTIN_VARIANTS
from eiou.heads import IoUHead, iou_head_loss, iou_target

DETECTORS = {
    "faster_rcnn": "Faster R-CNN second stage (normaliser: the sampled RoIs)",
    "retinanet": "RetinaNet (normaliser: the positives)",
}
BASELINE = "smooth_l1"
ALIASES = {"ours": "eiou_ct_sot_iou_head"}  # same settings, one row


def with_iou_head(regression: BoxRegression, head_weight: float, n: int) -> calibration.Stage:
    """The stage's loss plus the IoU head's KL loss, as the detectors add them."""
    generator = torch.Generator().manual_seed(1)
    head = IoUHead(16)
    features = torch.randn(n, 16, generator=generator)

    def stage(raw: torch.Tensor, anchors: torch.Tensor, gt: torch.Tensor, avg: float) -> Any:
        out = regression(raw, anchors, gt, avg)
        target = iou_target(out.pred_boxes, out.target_boxes)
        return out.loss + head_weight * iou_head_loss(head(features).squeeze(1), target)

    return stage


def one_step_iou_gain(
    regression: BoxRegression,
    stage: calibration.Stage,
    pairs: calibration.ReferencePairs,
    lr: float,
) -> float:
    """Mean IoU gain of one gradient step ``r = -lr * d loss / d r`` from ``r = 0``."""
    raw = torch.zeros(pairs.anchors.shape[0], 4, requires_grad=True)
    out = stage(raw, pairs.anchors, pairs.gt_boxes, 1.0)
    (grad,) = torch.autograd.grad(getattr(out, "loss", out), raw)
    with torch.no_grad():
        boxes = regression.decode(-lr * grad, pairs.anchors).double()
        gain = metrics.iou(boxes, pairs.gt_boxes, eps=0.0) - pairs.iou
    return float(gain.mean())


def coder_label(regression: BoxRegression) -> str:
    if regression.output_scale is not None:
        scale = ", ".join(f"{s:.4g}" for s in regression.output_scale.tolist())
        return f"{regression.coder.name} / ({scale})"
    return f"{regression.coder.name} ({', '.join(f'{w:g}' for w in regression.coder.weights)})"


def loss_label(cfg: dict[str, Any]) -> str:
    parts = [cfg["name"]]
    if (cfg.get("power") or 1) != 1:
        parts.append(f"power {cfg['power']:g}")
    if cfg.get("sot"):
        parts.append("SOT")
    return ", ".join(parts)


def gradient_rows(pairs: calibration.ReferencePairs, lr: float) -> list[dict[str, Any]]:
    rows = []
    for detector in DETECTORS:
        for name, variant in BUILTIN_VARIANTS.items():
            if name in ALIASES:
                continue
            regression = build_box_regression(variant["box_loss"], detector)
            stage: calibration.Stage = regression
            if variant["iou_head"]["enabled"]:
                weight = variant["iou_head"].get("weight", 1.0)
                stage = with_iou_head(regression, weight, pairs.anchors.shape[0])
            profile = calibration.gradient_profile(stage, pairs)
            rows.append(
                {
                    "detector": detector,
                    "variant": name,
                    "loss": loss_label(variant["box_loss"]),
                    "coder": coder_label(regression),
                    "weight": regression.weight,
                    "per_bin": profile.per_bin,
                    "mean": profile.mean,
                    "step": one_step_iou_gain(regression, stage, pairs, lr),
                }
            )
    for row in rows:
        base = next(
            r for r in rows if r["detector"] == row["detector"] and r["variant"] == BASELINE
        )
        row["ratio"] = row["mean"] / base["mean"]
    return rows


def jacobian_rows() -> list[dict[str, Any]]:
    """Raw outputs -> box corners at ``r = 0``, in units of S, per detector's coders."""
    rows = []
    anchors = {"square": (0.0, 0.0, 60.0, 60.0), "1:3 (h:w)": (0.0, 0.0, 180.0, 60.0)}
    for detector in DETECTORS:
        for coder in ("standard", "sqrt_area"):
            regression = build_box_regression({"name": "giou", "coder": coder}, detector)
            for shape, box in anchors.items():
                anchor = torch.tensor([box], dtype=torch.float64)
                scale = float(coders.anchor_scale(anchor)[0])

                jac = torch.autograd.functional.jacobian(
                    lambda raw, reg=regression, a=anchor: reg.decode(raw[None], a)[0],
                    torch.zeros(4),
                )
                jac = jac.double() / scale
                sv = torch.linalg.svdvals(jac)
                rows.append(
                    {
                        "detector": detector,
                        "coder": coder_label(regression),
                        "anchor": shape,
                        "singular": ", ".join(f"{v:.4f}" for v in sv.tolist()),
                        "det": float(jac.det().abs() ** 0.25),
                    }
                )
    return rows


def render(rows: list[dict], jac: list[dict], args: argparse.Namespace, command: str) -> str:
    bins = [f"{lo:g}-{hi:g}" for lo, hi in calibration.IOU_BINS]
    lines = [
        "# Per-positive gradient of the box loss at the start of training",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}. Reference set: "
        f"`eiou.calibration.reference_pairs` v{calibration.REFERENCE_VERSION}, "
        f"{args.pairs_per_bin} pairs per IoU bin, seed {args.seed}.",
        "",
        "Each cell: mean over the bin's positives of `||d(weight * loss_i) / d r_i||` at raw "
        "outputs `r = 0` (prediction = proposal / anchor), the detector's real `BoxRegression` "
        "with its default coder, output scale and weight, and a normaliser of 1. In training "
        "it is divided by the normaliser (Faster R-CNN: the sampled RoIs, 512 per image, at "
        "most 25 % positive; RetinaNet: the positives). `mean`: over all pairs (= over the "
        f"bins); `vs smooth-L1`: ratio of the means; `step dIoU`: mean IoU gain (x 1e-3) of "
        f"one step `r = -{args.lr:g} * gradient`.",
        "",
    ]
    for detector, title in DETECTORS.items():
        lines += [
            f"## {title}",
            "",
            "| variant | loss | coder / output scale | weight | "
            + " | ".join(bins)
            + " | mean | vs smooth-L1 | step dIoU |",
            "|---|---|---|---:|" + "---:|" * len(bins) + "---:|---:|---:|",
        ]
        for r in rows:
            if r["detector"] != detector:
                continue
            cells = " | ".join(f"{v:.2f}" for v in r["per_bin"])
            lines.append(
                f"| {r['variant']} | {r['loss']} | {r['coder']} | {r['weight']:.3g} | {cells} "
                f"| {r['mean']:.2f} | {r['ratio']:.2f}x | {1e3 * r['step']:.2f} |"
            )
        lines.append("")
    head_rows = [r for r in rows if r["variant"].endswith("_iou_head")]
    diffs = []
    for r in head_rows:
        plain = "smooth_l1" if r["variant"].startswith("smooth_l1") else "eiou_ct_sot"
        twin = next(x for x in rows if x["detector"] == r["detector"] and x["variant"] == plain)
        diffs.append(max(abs(a - b) for a, b in zip(r["per_bin"], twin["per_bin"], strict=True)))
    lines += [
        "Rows with `_iou_head` include the IoU head's loss; the largest difference to the same "
        f"row without the head is {max(diffs):.2g}: the head does not change the box gradient.",
        "",
        "## Jacobian raw outputs -> box corners at `r = 0` (units of S per unit of raw output)",
        "",
        "| detector | coder / output scale | anchor | singular values | abs(det)^(1/4) |",
        "|---|---|---|---|---:|",
    ]
    for r in jac:
        lines.append(
            f"| {r['detector']} | {r['coder']} | {r['anchor']} | {r['singular']} | {r['det']:.4f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-per-bin", type=int, default=calibration.DEFAULT_PAIRS_PER_BIN)
    parser.add_argument("--seed", type=int, default=calibration.DEFAULT_SEED)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pairs = calibration.reference_pairs(args.pairs_per_bin, args.seed)
    command = "python benchmarks/grad_table.py " + " ".join(argv or sys.argv[1:])
    text = render(gradient_rows(pairs, args.lr), jacobian_rows(), args, command.strip())
    print(text)
    if args.output is not None:
        io.write_text(args.output, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
