"""The localisation loss of one detector stage, built from the core by name.

:class:`BoxRegression` turns a stage's raw outputs (offsets relative to anchors or
proposals) into the input space its loss expects:

- ``input_space == "offsets"`` (smooth-L1): ``loss(pred_offsets, coder.encode(gt, anchors))``;
- ``input_space == "boxes"`` (IoU family): ``loss(coder.decode_normalized(pred, anchors),
  coder.normalize(gt, anchors))``, i.e. boxes divided by ``S = sqrt(anchor area)``, so SOT's
  ``U_e`` is in units of anchor area (paper, Algorithm 1).

The same coder decodes at inference, so a model trained with the ``sqrt_area`` coder
predicts with it too.

The standard coder keeps torchvision's / Detectron's weights per stage; the ``sqrt_area``
output scale and the loss weight, when the config leaves them ``null``, follow one rule,
:data:`eiou.calibration.RULE` (see :mod:`eiou.calibration`): the ``sqrt_area`` output scale
moves boxes as much per unit of raw output as the stage's standard coder (equal ``|det|`` of
the Jacobian), and each loss's weight makes its mean per-positive gradient at the start of
training (raw outputs 0, IoU 0.5-0.97 on the reference set) equal smooth-L1's on the same
stage. The built-in values (``python -m eiou.calibration`` recomputes them):

===============================  ===============  ==============
setting                          faster_rcnn      retinanet, rpn
===============================  ===============  ==============
standard coder weights           (10, 10, 5, 5)   (1, 1, 1, 1)
``sqrt_area`` output scale       7.07 (sqrt 50)   1
weight: smooth-L1 (reference)    1                1
weight: -ln IoU                  6.75             0.479
weight: GIoU                     8.29             0.591
weight: DIoU, CIoU               8.70             0.614
weight: EIoU (``sqrt_area``)     8.16             0.710
weight: EIoU + CT                18.5             1.61
weight: EIoU + CT + SOT          15.5             1.35
===============================  ===============  ==============

(Before this rule: output scale 10 and weight 10 for every IoU loss on Faster R-CNN,
weight 2 on RetinaNet, which gave starting gradients from 0.38x to 4.2x smooth-L1's;
``benchmarks/results/grad_table_before.md``.) IoU-head variants have the weights of their
box loss: the head does not change the box gradient.

The loss is normalised per stage as the detectors do (:data:`NORMALISERS`); the weights
compare losses within a stage, so the normaliser cancels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from eiou import calibration, coders, losses
from eiou.coders import BoxCoder
from eiou.losses import BoxLoss

__all__ = [
    "DEFAULT_CODER_WEIGHTS",
    "DEFAULT_SQRT_AREA_WEIGHTS",
    "NORMALISERS",
    "BoxRegression",
    "RegressionLoss",
    "build_box_regression",
    "reference_regression",
]

#: Standard-coder weights per detector (torchvision/Detectron defaults).
DEFAULT_CODER_WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "faster_rcnn": (10.0, 10.0, 5.0, 5.0),
    "retinanet": (1.0, 1.0, 1.0, 1.0),
    "rpn": (1.0, 1.0, 1.0, 1.0),
}

#: Output scale of the ``sqrt_area`` coder per stage: the raw outputs are divided by it
#: before decoding (see :class:`BoxRegression`). Rule (a) of :mod:`eiou.calibration`:
#: ``(wx wy ww wh)^(1/4)`` of the stage's standard-coder weights.
DEFAULT_SQRT_AREA_WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    stage: calibration.sqrt_area_output_scale(weights)
    for stage, weights in DEFAULT_CODER_WEIGHTS.items()
}

#: What each stage divides the sum of its positives' box losses by (see the detectors).
NORMALISERS: dict[str, str] = {
    "faster_rcnn": "sampled RoIs (512 per image, at most 25 % positive)",
    "retinanet": "positive anchors (at least 1)",
    "rpn": "sampled anchors (256 per image, at most 50 % positive)",
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
            ``U_e`` are unchanged. The default (:data:`DEFAULT_SQRT_AREA_WEIGHTS`) makes a
            unit of raw output move a box as much as under the stage's standard coder.

    ``settings`` holds what :func:`build_box_regression` resolved (JSON-serialisable; see
    :func:`eiou.calibration.describe`); empty for a module built by hand.
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
        self.settings: dict[str, Any] = {}

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


def reference_regression(stage: str) -> BoxRegression:
    """The calibration reference of a stage: smooth-L1 (beta 1/9) on its standard coder
    with its default weights, loss weight 1."""
    coder = coders.get("standard", weights=DEFAULT_CODER_WEIGHTS[stage])
    return BoxRegression(losses.get("smooth_l1"), coder, 1.0)


def build_box_regression(cfg: Mapping[str, Any], stage: str) -> BoxRegression:
    """A :class:`BoxRegression` from a ``model.box_loss`` mapping.

    Keys: ``name`` (registry name or dotted path), ``coder`` (``standard | sqrt_area``),
    ``coder_weights`` (standard coder: its weights; ``sqrt_area``: the output scale; default
    per stage), ``weight`` (``None``: calibrated by :mod:`eiou.calibration`, from its table
    for the built-in variants, computed for any other loss); every other key (``power``,
    ``sot``, ``gradient``, ``beta``, ``mode``, ...) is an option of the loss. ``stage`` is
    ``faster_rcnn``, ``retinanet`` or ``rpn``. The resolved values are in ``.settings``.
    """
    options = {k: v for k, v in cfg.items() if k not in STAGE_KEYS and v is not None}
    if options.get("gradient") == "autograd" and cfg["name"] not in ("eiou", "smooth_eiou"):
        options.pop("gradient")  # the default; only the EIoU family takes the option
    box_loss = losses.get(cfg["name"], **options)
    coder_name = cfg.get("coder") or "standard"
    coder, output_scale = build_coder(coder_name, cfg.get("coder_weights"), stage)
    weight = cfg.get("weight")
    regression = BoxRegression(box_loss, coder, 1.0 if weight is None else weight, output_scale)
    weight_source = "config"
    if weight is None:
        regression.weight, weight_source = calibration.default_weight(
            cfg, stage, regression, reference_regression(stage)
        )
    coder_source = "config" if cfg.get("coder_weights") is not None else "default"
    if coder_name == "sqrt_area" and coder_source == "default":
        coder_source = "rule"
    regression.settings = {
        "stage": stage,
        "loss": cfg["name"],
        "input_space": box_loss.input_space,
        "options": {
            **{k: v for k, v in options.items() if k not in ("power", "sot")},
            "power": float(box_loss.power),
            "sot": bool(box_loss.sot),
        },
        "coder": coder.name,
        "coder_weights": list(coder.weights) if output_scale is None else None,
        "output_scale": None if output_scale is None else list(output_scale),
        "coder_source": coder_source,
        "weight": regression.weight,
        "weight_source": weight_source if weight_source == "config" else f"rule ({weight_source})",
        "normaliser": NORMALISERS[stage],
    }
    return regression


def stock_rpn_settings() -> dict[str, Any]:
    """``settings`` of torchvision's own RPN (used when ``model.rpn_box_loss`` is null)."""
    return {
        "stage": "rpn",
        "loss": "smooth_l1 (torchvision RegionProposalNetwork)",
        "input_space": "offsets",
        "options": {"beta": 1.0 / 9, "power": 1.0, "sot": False},
        "coder": "standard",
        "coder_weights": list(DEFAULT_CODER_WEIGHTS["rpn"]),
        "output_scale": None,
        "coder_source": "default",
        "weight": 1.0,
        "weight_source": "torchvision",
        "normaliser": NORMALISERS["rpn"],
    }
