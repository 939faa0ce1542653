"""The localisation loss of one detector stage, built from the core by name.

:class:`BoxRegression` turns a stage's raw outputs (offsets relative to anchors or
proposals) into the input space its loss expects:

- ``input_space == "offsets"`` (smooth-L1): ``loss(pred_offsets, coder.encode(gt, anchors))``;
- ``input_space == "boxes"`` (IoU family): ``loss(coder.decode_normalized(pred, anchors),
  coder.normalize(gt, anchors))``, i.e. boxes divided by ``S = sqrt(anchor area)``, so SOT's
  ``U_e`` is in units of anchor area (paper, Algorithm 1).

The same coder decodes at inference, so a model trained with the ``sqrt_area`` coder
predicts with it too.

Default loss weights (``weight: null`` in the config), per detector:

============  =========  ==========  ======================================================
detector      smooth-L1  IoU family  reason
============  =========  ==========  ======================================================
faster_rcnn   1          10          the box loss is divided by all sampled RoIs (512 per
                                     image, ~25 % positive) and an IoU loss is ~10x smaller
                                     than smooth-L1 on (10, 10, 5, 5)-weighted offsets; the
                                     public GIoU/DIoU reproductions used 10-12
retinanet     1          2           divided by the positives only; mmdetection's RetinaNet
                                     GIoU config uses 2
============  =========  ==========  ======================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from eiou import coders, losses
from eiou.coders import BoxCoder
from eiou.losses import BoxLoss

__all__ = ["DEFAULT_LOSS_WEIGHTS", "BoxRegression", "RegressionLoss", "build_box_regression"]

#: (detector, "offsets" | "boxes") -> default loss weight; see the module docstring.
DEFAULT_LOSS_WEIGHTS: dict[tuple[str, str], float] = {
    ("faster_rcnn", "offsets"): 1.0,
    ("faster_rcnn", "boxes"): 10.0,
    ("retinanet", "offsets"): 1.0,
    ("retinanet", "boxes"): 2.0,
}

#: Standard-coder weights per detector (torchvision/Detectron defaults).
DEFAULT_CODER_WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "faster_rcnn": (10.0, 10.0, 5.0, 5.0),
    "retinanet": (1.0, 1.0, 1.0, 1.0),
    "rpn": (1.0, 1.0, 1.0, 1.0),
}

#: Output scale of the ``sqrt_area`` coder per stage: the raw outputs are divided by it
#: before decoding (see :class:`BoxRegression`).
DEFAULT_SQRT_AREA_WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "faster_rcnn": (10.0, 10.0, 10.0, 10.0),
    "retinanet": (1.0, 1.0, 1.0, 1.0),
    "rpn": (1.0, 1.0, 1.0, 1.0),
}

#: Keys of ``model.box_loss`` that configure the stage, not the loss itself.
STAGE_KEYS = ("name", "coder", "coder_weights", "weight")


class RegressionLoss(NamedTuple):
    """A stage's weighted loss (scalar) and the matched pairs in the normalised frame.

    ``pred_boxes`` (detached) and ``target_boxes`` are ``(N, 4)`` xyxy divided by the
    anchor's ``S``; the IoU head takes its target ``q_g`` from them.
    """

    loss: Tensor
    pred_boxes: Tensor
    target_boxes: Tensor


class BoxRegression(nn.Module):
    """A core :class:`~eiou.losses.BoxLoss`, a box coder and a loss weight.

    Args:
        box_loss: the per-pair loss; its ``input_space`` decides what it is fed.
        coder: encodes targets / decodes predictions (training and inference).
        weight: multiplies the reduced loss.
        output_scale: ``(4,)``; the network's raw outputs are divided by it before the
            coder sees them (``None``: 1). This is the role the ``(10, 10, 5, 5)`` weights
            play inside the standard coder: Algorithm 1's offsets of matched proposals are
            ~0.1, and an unscaled last layer makes every step 10x too large in box space
            (Smooth-EIoU with weight 10 diverges within 30 iterations at lr 0.02). It is a
            reparametrisation of the last layer: the normalised frame, the loss and SOT's
            ``U_e`` are unchanged.
    """

    def __init__(
        self,
        box_loss: BoxLoss,
        coder: BoxCoder,
        weight: float,
        output_scale: tuple[float, float, float, float] | None = None,
    ) -> None:
        super().__init__()
        self.box_loss = box_loss
        self.coder = coder
        self.weight = float(weight)
        scale = None if output_scale is None else torch.tensor(output_scale, dtype=torch.float32)
        self.register_buffer("output_scale", scale, persistent=False)

    def offsets(self, raw: Tensor) -> Tensor:
        """The coder's offsets ``(..., 4)`` (float32) from the network's raw outputs."""
        raw = raw.float()
        return raw if self.output_scale is None else raw / self.output_scale

    def decode(self, raw: Tensor, anchors: Tensor) -> Tensor:
        """Boxes ``(..., 4)`` in pixels from raw outputs relative to ``anchors`` (float32)."""
        return self.coder.decode(self.offsets(raw), anchors.float())

    def forward(
        self, pred_offsets: Tensor, anchors: Tensor, gt_boxes: Tensor, avg_factor: float | Tensor
    ) -> RegressionLoss:
        """Loss of matched pairs: ``weight * sum_i loss_i / avg_factor``.

        Args:
            pred_offsets: ``(N, 4)`` raw regression outputs (any float dtype; computed in
                float32 so pixel-sized anchors keep their precision under AMP; divided by
                ``output_scale``).
            anchors: ``(N, 4)`` xyxy pixels (anchors or proposals).
            gt_boxes: ``(N, 4)`` xyxy pixels, the ground truth matched to each anchor.
            avg_factor: the normaliser (e.g. the number of sampled RoIs).
        """
        pred_offsets, anchors, gt_boxes = (
            self.offsets(pred_offsets),
            anchors.float(),
            gt_boxes.float(),
        )
        target_boxes = self.coder.normalize(gt_boxes, anchors)
        if self.box_loss.input_space == "offsets":
            target = self.coder.encode(gt_boxes, anchors)
            value = self.box_loss(pred_offsets, target, reduction="mean", avg_factor=avg_factor)
            with torch.no_grad():
                pred_boxes = self.coder.decode_normalized(pred_offsets, anchors)
        else:
            pred = self.coder.decode_normalized(pred_offsets, anchors)
            value = self.box_loss(pred, target_boxes, reduction="mean", avg_factor=avg_factor)
            pred_boxes = pred.detach()
        return RegressionLoss(self.weight * value, pred_boxes, target_boxes)

    def extra_repr(self) -> str:
        scale = None if self.output_scale is None else tuple(self.output_scale.tolist())
        return f"coder={self.coder.name!r}, weight={self.weight:g}, output_scale={scale}"


def build_coder(
    name: str, weights: Any, stage: str
) -> tuple[BoxCoder, tuple[float, float, float, float] | None]:
    """The coder and the raw-output scale of a stage.

    ``standard``: ``weights`` (default per stage) go into the coder, no output scale.
    ``sqrt_area``: ``weights`` (default :data:`DEFAULT_SQRT_AREA_WEIGHTS`) are the output scale.
    """
    if weights is not None and len(weights) != 4:
        raise ValueError(f"coder_weights needs 4 numbers, got {weights!r}")
    if name == "standard":
        weights = tuple(float(w) for w in (weights or DEFAULT_CODER_WEIGHTS[stage]))
        return coders.get("standard", weights=weights), None
    scale = tuple(float(w) for w in (weights or DEFAULT_SQRT_AREA_WEIGHTS[stage]))
    return coders.get(name), scale  # type: ignore[return-value]


def build_box_regression(cfg: Mapping[str, Any], stage: str) -> BoxRegression:
    """A :class:`BoxRegression` from a ``model.box_loss`` mapping.

    Keys: ``name`` (registry name or dotted path), ``coder`` (``standard | sqrt_area``),
    ``coder_weights`` (standard coder only; default per stage), ``weight`` (``None``: the
    default of :data:`DEFAULT_LOSS_WEIGHTS`); every other key (``power``, ``sot``,
    ``gradient``, ``beta``, ``mode``, ...) is an option of the loss. ``stage`` is
    ``faster_rcnn``, ``retinanet`` or ``rpn``.
    """
    options = {k: v for k, v in cfg.items() if k not in STAGE_KEYS and v is not None}
    if options.get("gradient") == "autograd" and cfg["name"] not in ("eiou", "smooth_eiou"):
        options.pop("gradient")  # the default; only the EIoU family takes the option
    box_loss = losses.get(cfg["name"], **options)
    coder, output_scale = build_coder(cfg.get("coder", "standard"), cfg.get("coder_weights"), stage)
    weight = cfg.get("weight")
    if weight is None:
        detector = "faster_rcnn" if stage == "rpn" else stage
        weight = DEFAULT_LOSS_WEIGHTS[(detector, box_loss.input_space)]
    return BoxRegression(box_loss, coder, weight, output_scale)
