"""The box loss over the foreground anchors, shared by the RPN and RetinaNet subclasses."""

from __future__ import annotations

import torch
from detectron2.layers import cat
from detectron2.structures import Boxes
from torch import Tensor

from eiou.engines.torchvision.box_regression import BoxRegression, RegressionLoss


def regress_foreground_anchors(
    box_regression: BoxRegression,
    anchors: list[Boxes],
    pred_anchor_deltas: list[Tensor],
    gt_boxes: list[Tensor],
    positive: Tensor,
    normalizer: float | Tensor,
) -> RegressionLoss:
    """``box_regression`` over the anchors where ``positive`` (N, R) is true.

    ``anchors``: per level (R_l, 4) xyxy in pixels, the same for every image;
    ``pred_anchor_deltas``: per level (N, R_l, 4) raw outputs; ``gt_boxes``: per image (R, 4)
    the matched ground truth of every anchor, xyxy in pixels.
    """
    images = positive.shape[0]
    all_anchors = Boxes.cat(anchors).tensor.unsqueeze(0).expand(images, -1, -1)
    return box_regression(
        cat(pred_anchor_deltas, dim=1)[positive],
        all_anchors[positive],
        torch.stack(gt_boxes)[positive],
        normalizer,
    )
