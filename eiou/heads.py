"""The IoU head (paper Sec. III-E): one layer predicting the IoU of each regressed box.

The head is a single linear layer on the detector's shared box-head features; its sigmoid
output ``q_p`` is trained towards ``q_g``, the standard IoU of the decoded predicted box with
its ground truth (no gradient into ``q_g``), with the KL divergence of Eq. 32 between
Bernoulli(``q_g``) and Bernoulli(``q_p``). ``q_g`` is the *standard* IoU (EIoU clamped at 0),
so it is in ``[0, 1]`` even for a positive whose prediction drifted off its target, and it is
computed here from boxes, so the head works with any localisation loss.

The paper trains the head on positives only. :func:`best_iou_target` gives the target of a
box that has no assigned ground truth (a sampled negative, ``model.iou_head.negatives:
true``, a labelled departure from the paper): its IoU with the ground truth it overlaps most.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from eiou import metrics
from eiou.losses import reduce_loss

__all__ = ["IoUHead", "best_iou_target", "iou_head_loss", "iou_target"]


class IoUHead(nn.Module):
    """One linear layer: features ``(N, in_features)`` -> IoU logits ``(N, num_outputs)``.

    ``num_outputs=1`` is class-agnostic (the paper's single-layer head); pass the number
    of classes for one output per class. The predicted IoU is ``sigmoid(logits)``.
    Weights start at N(0, 0.01) and the bias at 0, like the detectors' box predictors.
    """

    def __init__(self, in_features: int, num_outputs: int = 1) -> None:
        super().__init__()
        self.predictor = nn.Linear(in_features, num_outputs)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features: Tensor) -> Tensor:
        """IoU logits ``(N, num_outputs)`` of flattened features ``(N, ...)``."""
        return self.predictor(features.flatten(1))


def iou_target(pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
    """``q_g``: the standard IoU ``(...)`` of decoded predictions with their ground truth.

    Boxes ``(..., 4)`` xyxy in any common frame (pixels, or the anchor-normalised frame:
    the IoU is scale invariant). Detached, in ``[0, 1]``, float32 or float64.
    """
    with torch.no_grad():
        return metrics.iou(pred_boxes.detach(), target_boxes.detach()).clamp(0, 1)


def best_iou_target(pred_boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    """``q_g`` of boxes without an assigned ground truth: for each of ``pred_boxes`` ``(N, 4)``
    its standard IoU with the one of ``gt_boxes`` ``(G, 4)`` it overlaps most, ``(N,)``.

    Both xyxy in one frame (e.g. the network's input pixels); the IoU is
    :func:`eiou.metrics.iou`, as for :func:`iou_target`. 0 where ``G == 0``. Detached, in
    ``[0, 1]``.
    """
    with torch.no_grad():
        pred, gt = pred_boxes.detach(), gt_boxes.detach()
        if gt.shape[0] == 0:
            return pred.new_zeros(
                pred.shape[0], dtype=torch.promote_types(pred.dtype, torch.float32)
            )
        overlaps = metrics.iou(pred[:, None, :], gt[None, :, :].to(pred.dtype))  # (N, G)
        return overlaps.max(dim=1).values.clamp(0, 1)


def iou_head_loss(
    logits: Tensor,
    target_iou: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """KL(Bernoulli(q_g) || Bernoulli(sigmoid(logits))), Eq. 32, per element.

    Written as binary cross-entropy with the soft target ``q_g`` minus the entropy of
    ``q_g``, so it is 0 (up to rounding) when ``sigmoid(logits) == q_g``, and its gradient
    with respect to the logits is ``sigmoid(logits) - q_g``.

    Args:
        logits: ``(...)`` IoU-head outputs before the sigmoid.
        target_iou: ``(...)`` ``q_g`` in ``[0, 1]`` (see :func:`iou_target`).
        weight, reduction, avg_factor: as for the box losses (:func:`eiou.losses.reduce_loss`).
    """
    target_iou = target_iou.detach().to(logits.dtype if logits.is_floating_point() else None)
    cross_entropy = nn.functional.binary_cross_entropy_with_logits(
        logits, target_iou, reduction="none"
    )
    negative_entropy = torch.xlogy(target_iou, target_iou) + torch.xlogy(
        1 - target_iou, 1 - target_iou
    )
    return reduce_loss(cross_entropy + negative_entropy, weight, reduction, avg_factor)
