"""Faster R-CNN + FPN whose second-stage box loss, coder and IoU head come from the core.

:class:`IoURoIHeads` replaces torchvision's ``RoIHeads`` box branch (masks and keypoints
are not supported):

- training: proposals are matched and sampled as in torchvision; the class-specific
  regression of each positive RoI for its ground-truth class is passed with the RoI and
  the matched ground truth to a :class:`BoxRegression` (loss normalised by the number of
  sampled RoIs, as torchvision and Detectron do); the IoU head (one linear layer on the
  box-head features) is trained on the positives with the KL loss of Eq. 32 towards the
  standard IoU of the decoded prediction with its ground truth (detached, mean over
  positives); with ``model.iou_head.negatives: true`` (a departure from the paper) also on
  the sampled background RoIs, whose target is the IoU of the box decoded for their
  highest-scoring object class with the ground truth it overlaps most (0 in an image
  without objects), mean over positives and negatives;
- inference: boxes are decoded with the training coder, scored by softmax, and
  :func:`eiou.scoring.select_detections` applies the configured scoring method per class.

:class:`LossRPN` is torchvision's RPN with a configurable box loss (``model.rpn_box_loss``);
without one, the stock RPN (smooth-L1, beta 1/9) is used.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.ops import boxes as box_ops

from eiou.engines.torchvision.box_regression import BoxRegression
from eiou.heads import IoUHead, best_iou_target, iou_head_loss, iou_target
from eiou.scoring import select_detections

__all__ = ["IoURoIHeads", "LossRPN"]


class IoURoIHeads(RoIHeads):
    """``RoIHeads`` with a core box loss and coder, an optional IoU head and IoU scoring.

    Args:
        *args, **kwargs: as for ``torchvision.models.detection.roi_heads.RoIHeads`` (the
            ``bbox_reg_weights`` argument is unused: the coder comes with ``box_regression``).
        box_regression: loss + coder of the second stage.
        iou_head: ``IoUHead`` on the box-head features, or ``None``.
        iou_head_weight: weight of the IoU-head loss.
        iou_head_negatives: also train the IoU head on the sampled background RoIs
            (:meth:`negative_iou_targets`; the paper trains it on positives only).
        scoring_method: one of :data:`eiou.scoring.SCORING_METHODS`.
    """

    def __init__(
        self,
        *args: Any,
        box_regression: BoxRegression,
        iou_head: IoUHead | None = None,
        iou_head_weight: float = 1.0,
        iou_head_negatives: bool = False,
        scoring_method: str = "cls",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.box_regression = box_regression
        self.iou_head = iou_head
        self.iou_head_weight = float(iou_head_weight)
        self.iou_head_negatives = bool(iou_head_negatives)
        if scoring_method != "cls" and iou_head is None:
            raise ValueError(f"scoring method {scoring_method!r} needs the IoU head enabled")
        self.scoring_method = scoring_method

    # ------------------------------------------------------------------ training
    def sample_proposals(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Match and sample RoIs as torchvision does.

        Returns per image: sampled proposals ``(R_i, 4)``, their labels ``(R_i,)`` (0 =
        background) and the matched ground-truth boxes ``(R_i, 4)`` (meaningless where the
        label is 0), all in the network's input-image pixels.
        """
        self.check_targets(targets)
        dtype, device = proposals[0].dtype, proposals[0].device
        gt_boxes = [t["boxes"].to(dtype) for t in targets]
        gt_labels = [t["labels"] for t in targets]
        proposals = self.add_gt_proposals(proposals, gt_boxes)
        matched_idxs, labels = self.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        sampled_inds = self.subsample(labels)
        sampled, sampled_labels, matched_gt = [], [], []
        for img, inds in enumerate(sampled_inds):
            sampled.append(proposals[img][inds])
            sampled_labels.append(labels[img][inds])
            boxes = gt_boxes[img]
            if boxes.numel() == 0:
                boxes = torch.zeros((1, 4), dtype=dtype, device=device)
            matched_gt.append(boxes[matched_idxs[img][inds]])
        return sampled, sampled_labels, matched_gt

    def compute_losses(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        iou_logits: Tensor | None,
        labels: list[Tensor],
        proposals: list[Tensor],
        matched_gt_boxes: list[Tensor],
        gt_boxes: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The second-stage losses.

        Args:
            class_logits: ``(R, K + 1)``; box_regression: ``(R, 4 (K + 1))`` class-specific
                offsets; iou_logits: ``(R, 1)`` or ``None``; labels, proposals,
                matched_gt_boxes: per image, concatenating to ``(R,)``, ``(R, 4)``, ``(R, 4)``.
            gt_boxes: per image, all its ground-truth boxes ``(G_i, 4)``; needed only to
                train the IoU head on negatives.

        Returns:
            ``loss_classifier`` (cross-entropy, mean over RoIs), ``loss_box_reg``
            (``weight * sum over positives / R``) and, with the IoU head, ``loss_iou``
            (``iou_head_weight * KL`` mean over positives, and over the negatives too with
            ``iou_head_negatives``).
        """
        labels_all = torch.cat(labels)
        proposals_all = torch.cat(proposals)
        gt_all = torch.cat(matched_gt_boxes)
        loss_classifier = F.cross_entropy(class_logits, labels_all)
        pos = torch.where(labels_all > 0)[0]
        offsets = box_regression.reshape(box_regression.shape[0], -1, 4)[pos, labels_all[pos]]
        reg = self.box_regression(offsets, proposals_all[pos], gt_all[pos], labels_all.numel())
        out = {"loss_classifier": loss_classifier, "loss_box_reg": reg.loss}
        if self.iou_head is not None and iou_logits is not None:
            rows, target = pos, iou_target(reg.pred_boxes, reg.target_boxes)
            if self.iou_head_negatives:
                if gt_boxes is None:
                    raise ValueError("training the IoU head on negatives needs gt_boxes")
                neg, neg_target = self.negative_iou_targets(
                    class_logits, box_regression, labels, proposals, gt_boxes
                )
                rows, target = torch.cat([pos, neg]), torch.cat([target, neg_target])
            out["loss_iou"] = self.iou_head_weight * iou_head_loss(
                iou_logits[rows, 0].float(), target, reduction="mean"
            )
        return out

    def negative_iou_targets(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        labels: list[Tensor],
        proposals: list[Tensor],
        gt_boxes: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """The sampled background RoIs and their IoU-head targets.

        Each background RoI is decoded (no gradient) with the regression of its
        highest-scoring object class, the box it would be reported with; its target is
        :func:`eiou.heads.best_iou_target` of that box with its image's ground truth (input
        pixels; 0 in an image without objects).

        Returns:
            ``rows`` ``(N,)`` int64 indices into the concatenated RoIs and ``targets`` ``(N,)``.
        """
        num_classes = class_logits.shape[-1]
        offsets = box_regression.detach().reshape(box_regression.shape[0], num_classes, 4)
        rows, targets = [], []
        start = 0
        for labels_i, proposals_i, gt_i in zip(labels, proposals, gt_boxes, strict=True):
            neg = torch.where(labels_i == 0)[0]
            row = neg + start
            best = class_logits[row, 1:].detach().argmax(dim=1) + 1
            boxes = self.box_regression.decode(offsets[row, best], proposals_i[neg])
            rows.append(row)
            targets.append(best_iou_target(boxes, gt_i))
            start += labels_i.numel()
        return torch.cat(rows), torch.cat(targets)

    # ------------------------------------------------------------------ inference
    def predict_boxes(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        iou_logits: Tensor | None,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Per image ``{"boxes" (D, 4) xyxy pixels, "labels" (D,), "scores" (D,)}``.

        Adds ``"predicted_iou"`` ``(D,)`` when the IoU head is enabled. Scores are the
        configured scoring method's (``cls``: softmax probability).
        """
        num_classes = class_logits.shape[-1]
        per_image = [p.shape[0] for p in proposals]
        offsets = box_regression.reshape(box_regression.shape[0], num_classes, 4)
        anchors = torch.cat(proposals).unsqueeze(1).expand_as(offsets)
        pred_boxes = self.box_regression.decode(offsets, anchors)
        pred_scores = F.softmax(class_logits.float(), -1)
        pred_iou = None
        if self.iou_head is not None and iou_logits is not None:
            pred_iou = torch.sigmoid(iou_logits.float()).expand(-1, num_classes)
        results = []
        for i, (boxes, scores, shape) in enumerate(
            zip(
                pred_boxes.split(per_image), pred_scores.split(per_image), image_shapes, strict=True
            )
        ):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)
            labels = torch.arange(num_classes, device=boxes.device).expand_as(scores)
            boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:], labels[:, 1:]
            ious = pred_iou.split(per_image)[i][:, 1:].reshape(-1) if pred_iou is not None else None
            scores, labels = scores.reshape(-1), labels.reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            ious = ious[keep] if ious is not None else None
            results.append(
                select_detections(
                    boxes,
                    scores,
                    labels,
                    ious,
                    self.scoring_method,
                    self.nms_thresh,
                    self.detections_per_img,
                )
            )
        return results

    def forward(  # type: ignore[override]
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.has_mask() or self.has_keypoint():
            raise NotImplementedError("IoURoIHeads supports the box branch only")
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            proposals, labels, matched_gt = self.sample_proposals(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        iou_logits = self.iou_head(box_features) if self.iou_head is not None else None
        if self.training:
            losses = self.compute_losses(
                class_logits,
                box_regression,
                iou_logits,
                labels,
                proposals,
                matched_gt,
                [t["boxes"] for t in targets],
            )
            return [], losses
        return self.predict_boxes(
            class_logits, box_regression, iou_logits, proposals, image_shapes
        ), {}


class LossRPN(RegionProposalNetwork):
    """torchvision's RPN with the box loss and coder of a :class:`BoxRegression`.

    The loss is normalised by the number of sampled anchors, as in torchvision.
    """

    def __init__(self, *args: Any, box_regression: BoxRegression, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.box_regression = box_regression

    def forward(  # type: ignore[override]
        self,
        images: Any,
        features: dict[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        feature_list = list(features.values())
        objectness, pred_bbox_deltas = self.head(feature_list)
        anchors = self.anchor_generator(images, feature_list)
        num_images = len(anchors)
        num_anchors_per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        objectness, pred_bbox_deltas = concat_box_prediction_layers(objectness, pred_bbox_deltas)
        all_anchors = torch.cat(anchors)
        proposals = self.box_regression.decode(pred_bbox_deltas.detach(), all_anchors)
        proposals = proposals.view(num_images, -1, 4)
        boxes, _ = self.filter_proposals(
            proposals, objectness, images.image_sizes, num_anchors_per_level
        )
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
            pos_masks, neg_masks = self.fg_bg_sampler(labels)
            pos = torch.where(torch.cat(pos_masks))[0]
            neg = torch.where(torch.cat(neg_masks))[0]
            sampled = torch.cat([pos, neg])
            gt = torch.cat(matched_gt_boxes)
            reg = self.box_regression(
                pred_bbox_deltas[pos], all_anchors[pos], gt[pos], sampled.numel()
            )
            losses = {
                "loss_objectness": F.binary_cross_entropy_with_logits(
                    objectness.flatten()[sampled], torch.cat(labels)[sampled]
                ),
                "loss_rpn_box_reg": reg.loss,
            }
        return boxes, losses
