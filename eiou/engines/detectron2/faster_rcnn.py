"""detectron2's Faster R-CNN + FPN with the box loss, coder, IoU head and scoring of the core.

Everything is detectron2's (``GeneralizedRCNN``, its backbone and FPN, RPN, ``StandardROIHeads``
with its pooler, box head, matcher and sampler) except two replaceable parts:

- :class:`IoUFastRCNNOutputLayers`, the box predictor: its ``losses`` feed the
  class-specific regression of each foreground RoI, the RoI and its matched ground truth to
  a ``BoxRegression`` (:mod:`eiou.engines.torchvision.box_regression`; normalised by the
  number of sampled RoIs, as detectron2 and Detectron do) and train the optional IoU head
  (one linear layer on the box-head features, KL loss of Eq. 32 towards the detached IoU of
  the decoded prediction, mean over foreground RoIs); its ``inference`` decodes with the
  training coder and applies :func:`eiou.scoring.nms_with_scoring`; the classification
  loss is detectron2's;
- :class:`LossRPN` (only with ``model.rpn_box_loss``): the RPN with a core box loss and coder;
  without it detectron2's RPN is used unchanged.

detectron2 counts classes ``0..K-1`` with ``K`` the background; the adapter
(:mod:`eiou.engines.detectron2.detector`) maps our labels ``1..K`` onto them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec, cat, cross_entropy, nonzero_tuple
from detectron2.modeling.backbone import build_backbone
from detectron2.modeling.meta_arch import GeneralizedRCNN
from detectron2.modeling.proposal_generator import RPN, build_proposal_generator
from detectron2.modeling.roi_heads import FastRCNNOutputLayers, StandardROIHeads
from detectron2.structures import Boxes, Instances
from torch import Tensor

from eiou.engines.detectron2.anchors import regress_foreground_anchors
from eiou.engines.torchvision.box_regression import BoxRegression
from eiou.heads import IoUHead, iou_head_loss, iou_target
from eiou.scoring import nms_with_scoring

__all__ = ["IoUFastRCNNOutputLayers", "LossRPN", "build_faster_rcnn"]


class IoUFastRCNNOutputLayers(FastRCNNOutputLayers):
    """detectron2's box predictor with a core box loss and coder, an optional IoU head and
    IoU-aware scoring.

    Args:
        input_shape, **kwargs: as for ``FastRCNNOutputLayers`` (built from a config with
            ``IoUFastRCNNOutputLayers(cfg, input_shape, box_regression=...)``); its
            ``box2box_transform``, ``smooth_l1_beta`` and ``box_reg_loss_type`` are unused:
            the loss and the coder come with ``box_regression``.
        box_regression: loss + coder of the second stage.
        iou_head: add the IoU head (:class:`eiou.heads.IoUHead`) on the box-head features.
        iou_head_weight: weight of the IoU-head loss.
        scoring_method: one of :data:`eiou.scoring.SCORING_METHODS`.

    ``forward(x)`` returns ``(scores (R, K + 1), deltas (R, 4 K))`` as detectron2's, plus
    ``iou_logits (R, 1)`` with the IoU head.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        box_regression: BoxRegression,
        iou_head: bool = False,
        iou_head_weight: float = 1.0,
        scoring_method: str = "cls",
        **kwargs: Any,
    ) -> None:
        super().__init__(input_shape, **kwargs)
        if scoring_method != "cls" and not iou_head:
            raise ValueError(f"scoring method {scoring_method!r} needs the IoU head enabled")
        self.box_regression = box_regression
        size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.iou_head = IoUHead(size) if iou_head else None
        self.iou_head_weight = float(iou_head_weight)
        self.scoring_method = scoring_method

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        scores, deltas = super().forward(x)
        if self.iou_head is None:
            return scores, deltas
        return scores, deltas, self.iou_head(x)

    # ------------------------------------------------------------------ training
    def losses(  # type: ignore[override]
        self, predictions: tuple[Tensor, ...], proposals: list[Instances]
    ) -> dict[str, Tensor]:
        """``loss_cls`` (detectron2's), ``loss_box_reg`` (``weight * sum over foreground
        RoIs / sampled RoIs``) and, with the IoU head, ``loss_iou``."""
        scores, deltas = predictions[:2]
        gt_classes = cat([p.gt_classes for p in proposals], dim=0) if proposals else torch.empty(0)
        if proposals:
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
                dim=0,
            )
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=deltas.device)
        if self.use_sigmoid_ce:
            loss_cls = self.sigmoid_cross_entropy_loss(scores, gt_classes)
        else:
            loss_cls = cross_entropy(scores, gt_classes, reduction="mean")

        fg = nonzero_tuple((gt_classes >= 0) & (gt_classes < self.num_classes))[0]
        if deltas.shape[1] == 4:  # class-agnostic regression
            fg_deltas = deltas[fg]
        else:
            fg_deltas = deltas.view(-1, self.num_classes, 4)[fg, gt_classes[fg]]
        reg = self.box_regression(
            fg_deltas, proposal_boxes[fg], gt_boxes[fg], max(gt_classes.numel(), 1)
        )
        losses = {"loss_cls": loss_cls, "loss_box_reg": reg.loss}
        losses = {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}
        if self.iou_head is not None and len(predictions) > 2:
            target = iou_target(reg.pred_boxes, reg.target_boxes)
            losses["loss_iou"] = self.iou_head_weight * iou_head_loss(
                predictions[2][fg, 0].float(), target, reduction="mean"
            )
        return losses

    # ------------------------------------------------------------------ inference
    def _decode(self, deltas: Tensor, proposal_boxes: Tensor) -> Tensor:
        """Boxes ``(R, 4 k)`` in pixels from deltas ``(R, 4 k)`` with the training coder."""
        rois, k = deltas.shape[0], deltas.shape[1] // 4
        anchors = proposal_boxes[:, None, :].expand(rois, k, 4)
        return self.box_regression.decode(deltas.view(rois, k, 4), anchors).view(rois, 4 * k)

    def predict_boxes(  # type: ignore[override]
        self, predictions: tuple[Tensor, ...], proposals: list[Instances]
    ) -> list[Tensor]:
        if not proposals:
            return []
        boxes = self._decode(predictions[1], cat([p.proposal_boxes.tensor for p in proposals]))
        return list(boxes.split([len(p) for p in proposals]))

    def predict_boxes_for_gt_classes(  # type: ignore[override]
        self, predictions: tuple[Tensor, ...], proposals: list[Instances]
    ) -> list[Tensor]:
        if not proposals:
            return []
        boxes = self._decode(predictions[1], cat([p.proposal_boxes.tensor for p in proposals]))
        k = boxes.shape[1] // 4
        if k > 1:
            gt_classes = cat([p.gt_classes for p in proposals]).clamp(0, k - 1)
            boxes = boxes.view(-1, k, 4)[torch.arange(len(boxes), device=boxes.device), gt_classes]
        return list(boxes.split([len(p) for p in proposals]))

    def predict_probs(  # type: ignore[override]
        self, predictions: tuple[Tensor, ...], proposals: list[Instances]
    ) -> list[Tensor]:
        return super().predict_probs(predictions[:2], proposals)

    def inference(  # type: ignore[override]
        self, predictions: tuple[Tensor, ...], proposals: list[Instances]
    ) -> tuple[list[Instances], list[Tensor]]:
        """Per image an ``Instances`` with ``pred_boxes``, ``scores`` (the scoring method's),
        ``pred_classes`` (``0..K-1``) and, with the IoU head, ``pred_iou``; and the index of
        the RoI of each detection."""
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        ious: list[Tensor | None] = [None] * len(proposals)
        if self.iou_head is not None and len(predictions) > 2:
            ious = list(
                torch.sigmoid(predictions[2][:, 0].float()).split([len(p) for p in proposals])
            )
        results = [
            self._inference_single_image(b, s, i, p.image_size)
            for b, s, i, p in zip(boxes, scores, ious, proposals, strict=True)
        ]
        return [r[0] for r in results], [r[1] for r in results]

    def _inference_single_image(
        self,
        boxes: Tensor,
        scores: Tensor,
        ious: Tensor | None,
        image_shape: tuple[int, int],
    ) -> tuple[Instances, Tensor]:
        # detectron2's fast_rcnn_inference_single_image up to the NMS, which is the core's
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
        rois = torch.arange(len(boxes), device=boxes.device)
        if not valid.all():
            boxes, scores, rois = boxes[valid], scores[valid], rois[valid]
            ious = ious[valid] if ious is not None else None
        scores = scores[:, :-1]
        k = boxes.shape[1] // 4
        clipped = Boxes(boxes.reshape(-1, 4))
        clipped.clip(image_shape)
        boxes = clipped.tensor.view(-1, k, 4)
        mask = scores > self.test_score_thresh
        index = mask.nonzero()  # (D, 2): RoI, class
        boxes = boxes[index[:, 0], 0] if k == 1 else boxes[mask]
        scores = scores[mask]
        ious = ious[index[:, 0]] if ious is not None else None
        keep, final = nms_with_scoring(
            boxes, scores, index[:, 1], ious, self.scoring_method, self.test_nms_thresh
        )
        if self.test_topk_per_image >= 0:
            keep, final = keep[: self.test_topk_per_image], final[: self.test_topk_per_image]
        result = Instances(image_shape)
        result.pred_boxes = Boxes(boxes[keep])
        result.scores = final
        result.pred_classes = index[keep, 1]
        if ious is not None:
            result.pred_iou = ious[keep]
        return result, rois[index[keep, 0]]


class LossRPN(RPN):
    """detectron2's RPN with the box loss and coder of a :class:`BoxRegression`.

    Anchors are labelled and sampled by detectron2; both losses are normalised by the number
    of sampled anchors (``batch_size_per_image * images``), as detectron2's. Proposals are
    decoded with the same coder. Built with ``LossRPN(cfg, input_shape, box_regression=...)``.
    """

    @configurable
    def __init__(self, *, box_regression: BoxRegression, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.box_regression = box_regression

    def _decode_proposals(  # type: ignore[override]
        self, anchors: list[Boxes], pred_anchor_deltas: list[Tensor]
    ) -> list[Tensor]:
        images = pred_anchor_deltas[0].shape[0]
        return [
            self.box_regression.decode(deltas, level.tensor.unsqueeze(0).expand(images, -1, -1))
            for level, deltas in zip(anchors, pred_anchor_deltas, strict=True)
        ]

    def losses(  # type: ignore[override]
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[Tensor],
        gt_labels: list[Tensor],
        pred_anchor_deltas: list[Tensor],
        gt_boxes: list[Tensor],
    ) -> dict[str, Tensor]:
        """``loss_rpn_cls`` (detectron2's) and ``loss_rpn_loc`` (the core's box loss)."""
        images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R): 1 foreground, 0 background, -1 ignored
        positive = labels == 1
        normalizer = self.batch_size_per_image * images
        reg = regress_foreground_anchors(
            self.box_regression, anchors, pred_anchor_deltas, gt_boxes, positive, normalizer
        )
        valid = labels >= 0
        objectness = F.binary_cross_entropy_with_logits(
            cat(pred_objectness_logits, dim=1)[valid],
            labels[valid].to(torch.float32),
            reduction="sum",
        )
        losses = {"loss_rpn_cls": objectness / normalizer, "loss_rpn_loc": reg.loss}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}


def build_faster_rcnn(
    cfg: CfgNode,
    box_regression: BoxRegression,
    *,
    rpn_box_regression: BoxRegression | None = None,
    iou_head: bool = False,
    iou_head_weight: float = 1.0,
    scoring_method: str = "cls",
) -> GeneralizedRCNN:
    """detectron2's ``GeneralizedRCNN`` of ``cfg`` built from its parts, with
    :class:`IoUFastRCNNOutputLayers` as the box predictor and, given
    ``rpn_box_regression``, :class:`LossRPN` as the proposal generator."""
    backbone = build_backbone(cfg)
    shape = backbone.output_shape()
    if rpn_box_regression is None:
        proposal_generator = build_proposal_generator(cfg, shape)
    else:
        proposal_generator = LossRPN(cfg, shape, box_regression=rpn_box_regression)
    roi_args = StandardROIHeads.from_config(cfg, shape)  # pooler, box head, matcher, sampler
    roi_args["box_predictor"] = IoUFastRCNNOutputLayers(
        cfg,
        roi_args["box_head"].output_shape,
        box_regression=box_regression,
        iou_head=iou_head,
        iou_head_weight=iou_head_weight,
        scoring_method=scoring_method,
    )
    return GeneralizedRCNN(
        backbone=backbone,
        proposal_generator=proposal_generator,
        roi_heads=StandardROIHeads(**roi_args),
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
        input_format=cfg.INPUT.FORMAT,
    )
