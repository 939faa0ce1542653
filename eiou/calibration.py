"""How hard each box loss pushes at the start of training, measured on a reference set.

A detector stage's box loss reaches the network through its raw regression outputs ``r``
(``(N, 4)``, one row per positive). At the start of training ``r ~ 0``: the prediction is
the anchor (RetinaNet) or the proposal (Faster R-CNN's second stage). This module measures,
per positive, the norm of the gradient of the stage's *weighted* loss with respect to ``r``
at ``r = 0``, on a fixed, seeded reference set of (anchor, ground truth) pairs binned by
their IoU, so that loss variants can be compared (and put on the same footing) where
AP75 / AP90 are decided.

Reference distribution (:func:`reference_pairs`, version :data:`REFERENCE_VERSION`):

- ground truth: centre uniform in ``[0, 800)^2`` px, ``sqrt(area)`` log-uniform in
  ``[16, 512]`` px (COCO's small to large objects at an 800 px short side), aspect ratio
  ``h / w`` log-uniform in ``[1/3, 3]``;
- anchor / proposal: the ground truth with its centre moved by ``(w e1, h e2)`` and its
  width and height multiplied by ``exp(e3)``, ``exp(e4)``, with ``e1..e4 ~ N(0, sigma^2)``
  i.i.d. and ``sigma`` drawn per pair log-uniform in ``[0.01, 0.5]``;
- pairs are sorted into the IoU bins :data:`IOU_BINS` (``[lo, hi)``, IoU of the anchor with
  its ground truth) and the first ``pairs_per_bin`` of each bin, in draw order, are kept: every
  bin has the same weight, so the mean over all pairs is the mean over the bins.

Every loss here is translation- and scale-invariant in the anchor-normalised frame, and the
coders' offsets are too, so the gradient depends on the pairs' shapes and relative offsets,
not on their pixel size; the sizes are drawn realistically anyway.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from eiou import metrics

__all__ = [
    "IOU_BINS",
    "REFERENCE_VERSION",
    "GradientProfile",
    "ReferencePairs",
    "gradient_norms",
    "gradient_profile",
    "reference_pairs",
]

#: IoU bins ``[lo, hi)`` of the reference set: positives from the usual 0.5 threshold up to
#: 0.97 (above it every loss's gradient is near its limit at IoU 1).
IOU_BINS: tuple[tuple[float, float], ...] = (
    (0.5, 0.6),
    (0.6, 0.7),
    (0.7, 0.8),
    (0.8, 0.9),
    (0.9, 0.97),
)
#: Version of the reference distribution; bump it when :func:`reference_pairs` changes.
REFERENCE_VERSION = 1
DEFAULT_PAIRS_PER_BIN = 2000
DEFAULT_SEED = 0

#: A stage: ``stage(raw, anchors, gt_boxes, avg_factor)`` returns the stage's weighted loss
#: (a scalar) or an object with a ``.loss`` scalar (e.g. a ``BoxRegression``'s output).
Stage = Callable[[Tensor, Tensor, Tensor, float], Any]


class ReferencePairs(NamedTuple):
    """The reference set: ``anchors`` and ``gt_boxes`` ``(N, 4)`` xyxy pixels (float64),
    ``iou`` ``(N,)`` of each pair and ``bin_index`` ``(N,)`` into :data:`IOU_BINS`."""

    anchors: Tensor
    gt_boxes: Tensor
    iou: Tensor
    bin_index: Tensor


class GradientProfile(NamedTuple):
    """Mean per-positive gradient norm in each IoU bin, and over all pairs (= over the bins)."""

    per_bin: tuple[float, ...]
    mean: float


def _log_uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _draw(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` (anchor, ground truth) pairs of the reference distribution, before binning."""
    centre = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 800
    side = _log_uniform(n, 16.0, 512.0, generator)
    aspect = _log_uniform(n, 1 / 3, 3.0, generator)
    size = torch.stack((side / aspect.sqrt(), side * aspect.sqrt()), -1)  # (w, h)
    gt = torch.cat((centre - size / 2, centre + size / 2), -1)
    sigma = _log_uniform(n, 0.01, 0.5, generator)[:, None]
    noise = torch.randn(n, 4, generator=generator, dtype=torch.float64) * sigma
    anchor_centre = centre + size * noise[:, :2]
    anchor_size = size * noise[:, 2:].exp()
    anchors = torch.cat((anchor_centre - anchor_size / 2, anchor_centre + anchor_size / 2), -1)
    return anchors, gt


@functools.lru_cache(maxsize=4)
def reference_pairs(
    pairs_per_bin: int = DEFAULT_PAIRS_PER_BIN, seed: int = DEFAULT_SEED
) -> ReferencePairs:
    """The seeded reference set (see the module docstring), ``pairs_per_bin`` per IoU bin.

    Deterministic for a given ``(pairs_per_bin, seed)`` (float64 CPU generator); cached, so
    treat the returned tensors as read-only.
    """
    generator = torch.Generator().manual_seed(seed)
    kept: list[list[tuple[Tensor, Tensor, Tensor]]] = [[] for _ in IOU_BINS]
    counts = [0] * len(IOU_BINS)
    while min(counts) < pairs_per_bin:
        anchors, gt = _draw(16 * pairs_per_bin, generator)
        iou = metrics.iou(anchors, gt, eps=0.0)
        for b, (low, high) in enumerate(IOU_BINS):
            take = torch.where((iou >= low) & (iou < high))[0][: pairs_per_bin - counts[b]]
            kept[b].append((anchors[take], gt[take], iou[take]))
            counts[b] += len(take)
    anchors = torch.cat([a for chunks in kept for a, _, _ in chunks])
    gt = torch.cat([g for chunks in kept for _, g, _ in chunks])
    iou = torch.cat([i for chunks in kept for _, _, i in chunks])
    bin_index = torch.arange(len(IOU_BINS)).repeat_interleave(pairs_per_bin)
    return ReferencePairs(anchors, gt, iou, bin_index)


def gradient_norms(stage: Stage, anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """Per positive ``||d loss / d r_i||`` at raw outputs ``r = 0``, ``(N,)``.

    ``stage`` is called once on all pairs with ``avg_factor = 1``, so the value is the
    gradient one positive receives when the stage's normaliser is 1; in a detector it is
    divided by the normaliser (the sampled RoIs in Faster R-CNN, the positives in RetinaNet).
    Each pair's loss depends on its own row of ``r`` only, so one backward pass gives every
    pair's gradient.
    """
    raw = torch.zeros(anchors.shape[0], 4, dtype=torch.float32, requires_grad=True)
    out = stage(raw, anchors, gt_boxes, 1.0)
    loss = getattr(out, "loss", out)
    (grad,) = torch.autograd.grad(loss, raw)
    return grad.double().norm(dim=-1)


def gradient_profile(stage: Stage, pairs: ReferencePairs | None = None) -> GradientProfile:
    """:func:`gradient_norms` of ``stage`` on the reference set, averaged per IoU bin."""
    pairs = reference_pairs() if pairs is None else pairs
    norms = gradient_norms(stage, pairs.anchors, pairs.gt_boxes)
    per_bin = tuple(float(norms[pairs.bin_index == b].mean()) for b in range(len(IOU_BINS)))
    return GradientProfile(per_bin, float(norms.mean()))
