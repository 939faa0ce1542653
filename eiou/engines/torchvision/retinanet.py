"""RetinaNet whose box loss, coder and IoU head come from the core.

- The regression tower gains one 3x3 conv output per anchor (the IoU head, logits), so the
  predicted IoU shares the box features, as in the paper's Faster R-CNN head.
- Training: anchors are matched as in torchvision (IoU >= 0.5 positive, < 0.4 negative,
  low-quality matches allowed); the classification loss is torchvision's focal loss; the
  box loss sums over the positive anchors of the batch and divides by their number
  (Detectron's normalisation); the IoU head is trained on the positives with the KL loss of
  Eq. 32 towards the standard IoU of the decoded prediction (detached), mean over positives.
  With ``model.iou_head.negatives: true`` (a departure from the paper) it is also trained on
  :data:`NEGATIVES_PER_POSITIVE` negative anchors per positive of each image (at least that
  many in an image without objects): the negatives with the highest class score, i.e. the
  ones most likely to be reported as false positives, each decoded (no gradient) and given
  the IoU of its box with the ground truth it overlaps most (0 without objects) as target;
  the loss is then the mean over positives and negatives.
- Inference: per level the top-k candidates above the score threshold are decoded with the
  training coder; :func:`eiou.scoring.select_detections` applies the configured scoring.

Loss names match the Faster R-CNN ones: ``loss_classifier``, ``loss_box_reg``, ``loss_iou``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.retinanet import (
    RetinaNet,
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
)
from torchvision.ops import boxes as box_ops

from eiou.engines.torchvision.box_regression import BoxRegression
from eiou.heads import best_iou_target, iou_head_loss, iou_target
from eiou.scoring import select_detections

__all__ = [
    "NEGATIVES_PER_POSITIVE",
    "IoURetinaNet",
    "IoURetinaNetHead",
    "IoURetinaNetRegressionHead",
]

#: With ``iou_head_negatives``: negative anchors whose IoU head is trained, per positive
#: anchor of the image (1 : 3, the balance of Faster R-CNN's RoI sampler, positive fraction
#: 0.25); an image without positives counts as one.
NEGATIVES_PER_POSITIVE = 3


class IoURetinaNetRegressionHead(RetinaNetRegressionHead):
    """torchvision's regression tower plus an optional IoU output (``A`` channels of a 3x3
    conv on the tower, like the box offsets).

    With the IoU head, ``bbox_reg`` is one conv with ``5 A`` outputs: the first ``4 A`` are
    the box offsets, the last ``A`` the IoU logits. One conv instead of two convs on the same
    input computes the same thing (each output channel has its own kernel, initialised as
    torchvision initialises ``bbox_reg``) at a lower cost: the input is unfolded once.

    ``forward`` returns ``{"bbox_regression": (N, HWA, 4)}`` and, with the IoU head,
    ``"iou_logits": (N, HWA)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        norm_layer: Callable[..., nn.Module] | None = None,
        iou_head: bool = False,
    ) -> None:
        super().__init__(in_channels, num_anchors, norm_layer=norm_layer)
        self.iou_head = iou_head
        if iou_head:
            self.bbox_reg = nn.Conv2d(in_channels, num_anchors * 5, kernel_size=3, padding=1)
            nn.init.normal_(self.bbox_reg.weight, std=0.01)
            nn.init.zeros_(self.bbox_reg.bias)

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:  # type: ignore[override]
        regressions, ious = [], []
        for features in x:
            out = self.bbox_reg(self.conv(features))
            n, _, h, w = out.shape
            a = out.shape[1] // (5 if self.iou_head else 4)
            reg = out[:, : 4 * a]
            regressions.append(reg.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
            if self.iou_head:
                ious.append(out[:, 4 * a :].permute(0, 2, 3, 1).reshape(n, -1))
        result = {"bbox_regression": torch.cat(regressions, dim=1)}
        if self.iou_head:
            result["iou_logits"] = torch.cat(ious, dim=1)
        return result


class IoURetinaNetHead(RetinaNetHead):
    """Classification head + :class:`IoURetinaNetRegressionHead`."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        norm_layer: Callable[..., nn.Module] | None = None,
        iou_head: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        self.classification_head = RetinaNetClassificationHead(
            in_channels, num_anchors, num_classes, norm_layer=norm_layer
        )
        self.regression_head = IoURetinaNetRegressionHead(
            in_channels, num_anchors, norm_layer=norm_layer, iou_head=iou_head
        )

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:  # type: ignore[override]
        return {"cls_logits": self.classification_head(x), **self.regression_head(x)}


class IoURetinaNet(RetinaNet):
    """RetinaNet with a core box loss and coder, an optional IoU head and IoU scoring.

    Args:
        backbone, num_classes, **kwargs: as for ``torchvision``'s ``RetinaNet``
            (``num_classes`` counts the background index 0, which is never a target).
        box_regression: loss + coder.
        iou_head: add the IoU output to the regression tower.
        iou_head_weight: weight of the IoU-head loss.
        iou_head_negatives: also train the IoU head on negative anchors
            (:meth:`negative_iou_targets`; the paper trains it on positives only).
        scoring_method: one of :data:`eiou.scoring.SCORING_METHODS`.
        norm_layer: norm of the head towers (``None``: none, torchvision's v1).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        box_regression: BoxRegression,
        iou_head: bool = False,
        iou_head_weight: float = 1.0,
        iou_head_negatives: bool = False,
        scoring_method: str = "cls",
        norm_layer: Callable[..., nn.Module] | None = None,
        **kwargs: Any,
    ) -> None:
        anchor_generator = kwargs.get("anchor_generator")
        if anchor_generator is None:
            raise ValueError("IoURetinaNet needs an explicit anchor_generator")
        head = IoURetinaNetHead(
            backbone.out_channels,
            anchor_generator.num_anchors_per_location()[0],
            num_classes,
            norm_layer=norm_layer,
            iou_head=iou_head,
        )
        super().__init__(backbone, num_classes, head=head, **kwargs)
        if scoring_method != "cls" and not iou_head:
            raise ValueError(f"scoring method {scoring_method!r} needs the IoU head enabled")
        self.box_regression = box_regression
        self.iou_head_weight = float(iou_head_weight)
        self.iou_head_negatives = bool(iou_head_negatives)
        self.scoring_method = scoring_method

    def match_anchors(
        self, targets: list[dict[str, Tensor]], anchors: list[Tensor]
    ) -> list[Tensor]:
        """Per image ``(A,)`` index of the matched ground truth; -1 negative, -2 ignored."""
        matched = []
        for anchors_per_image, target in zip(anchors, targets, strict=True):
            if target["boxes"].numel() == 0:
                matched.append(
                    torch.full(
                        (anchors_per_image.size(0),),
                        -1,
                        dtype=torch.int64,
                        device=anchors_per_image.device,
                    )
                )
                continue
            quality = box_ops.box_iou(target["boxes"], anchors_per_image)
            matched.append(self.proposal_matcher(quality))
        return matched

    def compute_loss(  # type: ignore[override]
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
    ) -> dict[str, Tensor]:
        """``loss_classifier`` (focal), ``loss_box_reg`` and, with the IoU head, ``loss_iou``."""
        matched = self.match_anchors(targets, anchors)
        losses = {
            "loss_classifier": self.head.classification_head.compute_loss(
                targets, head_outputs, matched
            )
        }
        offsets, anchor_rows, gt_rows, iou_rows = [], [], [], []
        for i, (target, idx) in enumerate(zip(targets, matched, strict=True)):
            fg = torch.where(idx >= 0)[0]
            offsets.append(head_outputs["bbox_regression"][i, fg])
            anchor_rows.append(anchors[i][fg])
            gt_rows.append(target["boxes"][idx[fg]])
            if "iou_logits" in head_outputs:
                iou_rows.append(head_outputs["iou_logits"][i, fg])
        num_fg = sum(o.shape[0] for o in offsets)
        reg = self.box_regression(
            torch.cat(offsets), torch.cat(anchor_rows), torch.cat(gt_rows), max(1, num_fg)
        )
        losses["loss_box_reg"] = reg.loss
        if iou_rows:
            logits = torch.cat(iou_rows)
            target_iou = iou_target(reg.pred_boxes, reg.target_boxes)
            if self.iou_head_negatives:
                (image, anchor), negative_target = self.negative_iou_targets(
                    targets, head_outputs, anchors, matched
                )
                logits = torch.cat([logits, head_outputs["iou_logits"][image, anchor]])
                target_iou = torch.cat([target_iou, negative_target])
            losses["loss_iou"] = self.iou_head_weight * iou_head_loss(
                logits.float(), target_iou, reduction="mean"
            )
        return losses

    def negative_iou_targets(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched: list[Tensor],
    ) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """The negative anchors the IoU head is trained on, and their targets.

        Per image, the ``NEGATIVES_PER_POSITIVE * max(1, positives)`` negative anchors
        (matched index -1; ignored anchors are left out) with the highest class score
        (background column excluded), each decoded with its regression (no gradient); the
        target is :func:`eiou.heads.best_iou_target` of that box with the image's ground
        truth (input pixels).

        Returns:
            ``((image, anchor), targets)``: index tensors ``(N,)`` into the ``(images,
            anchors)`` head outputs, and the targets ``(N,)``.
        """
        images, rows, values = [], [], []
        for i, (target, idx) in enumerate(zip(targets, matched, strict=True)):
            negative = torch.where(idx == -1)[0]
            wanted = NEGATIVES_PER_POSITIVE * max(1, int((idx >= 0).sum()))
            scores = head_outputs["cls_logits"][i, negative, 1:].detach().amax(dim=1)
            chosen = negative[scores.topk(min(wanted, negative.numel())).indices]
            offsets = head_outputs["bbox_regression"][i, chosen].detach()
            boxes = self.box_regression.decode(offsets, anchors[i][chosen])
            images.append(torch.full_like(chosen, i))
            rows.append(chosen)
            values.append(best_iou_target(boxes, target["boxes"]))
        return (torch.cat(images), torch.cat(rows)), torch.cat(values)

    def postprocess_detections(  # type: ignore[override]
        self,
        head_outputs: dict[str, list[Tensor]],
        anchors: list[list[Tensor]],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Per image ``{"boxes", "labels", "scores"}`` (+ ``"predicted_iou"``), at most
        ``detections_per_img``, scored by the configured method."""
        detections = []
        has_iou = "iou_logits" in head_outputs
        for index, image_shape in enumerate(image_shapes):
            boxes_all, scores_all, labels_all, ious_all = [], [], [], []
            for level, anchors_level in enumerate(anchors[index]):
                logits = head_outputs["cls_logits"][level][index]
                num_classes = logits.shape[-1]
                scores = torch.sigmoid(logits.float())
                scores[:, 0] = 0.0  # background index: never a target
                scores = scores.flatten()
                keep = torch.where(scores > self.score_thresh)[0]
                num_topk = det_utils._topk_min(keep, self.topk_candidates, 0)
                scores, order = scores[keep].topk(num_topk)
                keep = keep[order]
                anchor_idx = torch.div(keep, num_classes, rounding_mode="floor")
                offsets = head_outputs["bbox_regression"][level][index][anchor_idx]
                boxes = self.box_regression.decode(offsets, anchors_level[anchor_idx])
                boxes_all.append(box_ops.clip_boxes_to_image(boxes, image_shape))
                scores_all.append(scores)
                labels_all.append(keep % num_classes)
                if has_iou:
                    logits_iou = head_outputs["iou_logits"][level][index][anchor_idx]
                    ious_all.append(torch.sigmoid(logits_iou.float()))
            boxes, scores = torch.cat(boxes_all), torch.cat(scores_all)
            labels = torch.cat(labels_all)
            ious = torch.cat(ious_all) if has_iou else None
            detections.append(
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
        return detections
