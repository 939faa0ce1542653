"""detectron2's RetinaNet with the box loss, coder, IoU head and scoring of the core.

:class:`IoURetinaNet` subclasses detectron2's ``RetinaNet`` and keeps its backbone, FPN,
anchors, anchor matching (``label_anchors``), focal loss (fvcore's, in its eager form) and
loss normaliser (an EMA of the number of foreground anchors, momentum 0.9, starting at 100);
it replaces

- ``losses``: the box loss is a ``BoxRegression``
  (:mod:`eiou.engines.torchvision.box_regression`) over the foreground anchors (same
  normaliser), plus the IoU-head loss (KL of Eq. 32 towards the detached IoU of the decoded
  prediction, mean over foreground anchors);
- inference: per level the top-k candidates above the score threshold (detectron2's rule)
  are decoded with the training coder and :func:`eiou.scoring.nms_with_scoring` applies the
  configured scoring.

The IoU head (:class:`IoURetinaNetHead`) is one 3x3 conv with ``A`` outputs on the box
tower, next to the box offsets, initialised N(0, 0.01) like detectron2's head convs.

The loss normaliser is plain Python state in detectron2; here it is also saved in the
module's state dict (``get_extra_state``), so a resumed training run continues with it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes, ImageList, Instances
from fvcore.nn import sigmoid_focal_loss
from torch import Tensor, nn

from eiou.engines.detectron2.anchors import regress_foreground_anchors
from eiou.engines.torchvision.box_regression import BoxRegression
from eiou.heads import iou_head_loss, iou_target
from eiou.scoring import nms_with_scoring

__all__ = ["IoURetinaNet", "IoURetinaNetHead"]

#: detectron2's starting value of the loss normaliser (``RetinaNet._ema_update``).
INITIAL_NORMALIZER = 100.0


class IoURetinaNetHead(RetinaNetHead):
    """detectron2's RetinaNet head plus the IoU output on the box tower.

    ``forward(features)`` returns per level ``(N, A K, H, W)`` logits, ``(N, 4 A, H, W)``
    deltas and ``(N, A, H, W)`` IoU logits. Built with ``IoURetinaNetHead(cfg, shapes)``.
    """

    @configurable
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.iou_pred = nn.Conv2d(
            kwargs["conv_dims"][-1], kwargs["num_anchors"], kernel_size=3, stride=1, padding=1
        )
        nn.init.normal_(self.iou_pred.weight, std=0.01)
        nn.init.zeros_(self.iou_pred.bias)

    def forward(  # type: ignore[override]
        self, features: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        logits, deltas, ious = [], [], []
        for feature in features:
            logits.append(self.cls_score(self.cls_subnet(feature)))
            tower = self.bbox_subnet(feature)
            deltas.append(self.bbox_pred(tower))
            ious.append(self.iou_pred(tower))
        return logits, deltas, ious


class IoURetinaNet(RetinaNet):
    """RetinaNet with a core box loss and coder, an optional IoU head and IoU scoring.

    Built with ``IoURetinaNet(cfg, box_regression=..., iou_head=...)``; ``iou_head`` swaps in
    :class:`IoURetinaNetHead`.

    Args:
        box_regression: loss + coder.
        iou_head_weight: weight of the IoU-head loss.
        scoring_method: one of :data:`eiou.scoring.SCORING_METHODS`.
        **kwargs: as for detectron2's ``RetinaNet`` (``smooth_l1_beta``,
            ``box_reg_loss_type`` and ``box2box_transform`` are unused: the loss and the
            coder come with ``box_regression``).
    """

    @configurable
    def __init__(
        self,
        *,
        box_regression: BoxRegression,
        iou_head_weight: float = 1.0,
        scoring_method: str = "cls",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if scoring_method != "cls" and not isinstance(self.head, IoURetinaNetHead):
            raise ValueError(f"scoring method {scoring_method!r} needs the IoU head enabled")
        self.box_regression = box_regression
        self.iou_head_weight = float(iou_head_weight)
        self.scoring_method = scoring_method
        self.loss_normalizer = INITIAL_NORMALIZER

    @classmethod
    def from_config(cls, cfg: CfgNode, iou_head: bool = False) -> dict[str, Any]:  # type: ignore[override]
        ret = super().from_config(cfg)
        if iou_head:
            shapes: list[ShapeSpec] = [
                ret["backbone"].output_shape()[f] for f in cfg.MODEL.RETINANET.IN_FEATURES
            ]
            ret["head"] = IoURetinaNetHead(cfg, shapes)
        return ret

    # the loss normaliser travels with the weights (resume continues with it)
    def get_extra_state(self) -> Tensor:
        return torch.tensor(float(self.loss_normalizer), dtype=torch.float64)

    def set_extra_state(self, state: Tensor) -> None:
        self.loss_normalizer = float(state)

    def _split(self, predictions: tuple[list[Tensor], ...]) -> tuple[list[Tensor], ...]:
        """Per level ``(N, HWA, K)`` logits, ``(N, HWA, 4)`` deltas (, ``(N, HWA, 1)`` IoU
        logits)."""
        dims = [self.num_classes, 4, 1][: len(predictions)]
        return tuple(self._transpose_dense_predictions(list(predictions), dims))

    # ------------------------------------------------------------------ training
    def forward_training(  # type: ignore[override]
        self,
        images: ImageList,
        features: list[Tensor],
        predictions: tuple[list[Tensor], ...],
        gt_instances: list[Instances],
    ) -> dict[str, Tensor]:
        pred_logits, pred_deltas, *pred_iou = self._split(predictions)
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(
            anchors,
            pred_logits,
            gt_labels,
            pred_deltas,
            gt_boxes,
            pred_iou[0] if pred_iou else None,
        )

    def losses(  # type: ignore[override]
        self,
        anchors: list[Boxes],
        pred_logits: list[Tensor],
        gt_labels: list[Tensor],
        pred_anchor_deltas: list[Tensor],
        gt_boxes: list[Tensor],
        pred_iou_logits: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """``loss_cls`` (detectron2's focal loss), ``loss_box_reg`` (``weight * sum over
        foreground anchors / normaliser``) and, with the IoU head, ``loss_iou``."""
        labels = torch.stack(gt_labels)  # (N, R): class, num_classes = background, -1 ignored
        valid = labels >= 0
        positive = valid & (labels != self.num_classes)
        normalizer = self._ema_update("loss_normalizer", max(int(positive.sum()), 1), 100)
        target = F.one_hot(labels[valid], num_classes=self.num_classes + 1)[:, :-1]
        # the eager form of detectron2's sigmoid_focal_loss_jit: the TorchScript one changes
        # its arithmetic once the profiling executor optimises it (after the first calls of a
        # process), so a resumed run would not be bit-identical to an uninterrupted one
        loss_cls = sigmoid_focal_loss(
            cat(pred_logits, dim=1)[valid],
            target.to(pred_logits[0].dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        reg = regress_foreground_anchors(
            self.box_regression, anchors, pred_anchor_deltas, gt_boxes, positive, normalizer
        )
        losses = {"loss_cls": loss_cls / normalizer, "loss_box_reg": reg.loss}
        if pred_iou_logits is not None:
            target_iou = iou_target(reg.pred_boxes, reg.target_boxes)
            losses["loss_iou"] = self.iou_head_weight * iou_head_loss(
                cat(pred_iou_logits, dim=1)[positive][:, 0].float(), target_iou, reduction="mean"
            )
        return losses

    # ------------------------------------------------------------------ inference
    def forward_inference(  # type: ignore[override]
        self,
        images: ImageList,
        features: list[Tensor],
        predictions: tuple[list[Tensor], ...],
    ) -> list[Instances]:
        pred_logits, pred_deltas, *pred_iou = self._split(predictions)
        anchors = self.anchor_generator(features)
        results = []
        for index, image_size in enumerate(images.image_sizes):
            ious = [x[index, :, 0].sigmoid() for x in pred_iou[0]] if pred_iou else None
            results.append(
                self.inference_single_image(
                    anchors,
                    [x[index].sigmoid() for x in pred_logits],
                    [x[index] for x in pred_deltas],
                    image_size,
                    ious,
                )
            )
        return results

    def inference_single_image(  # type: ignore[override]
        self,
        anchors: list[Boxes],
        box_cls: list[Tensor],
        box_delta: list[Tensor],
        image_size: tuple[int, int],
        box_iou: list[Tensor] | None = None,
    ) -> Instances:
        """One image's detections from per-level scores ``(HWA, K)``, deltas ``(HWA, 4)``
        and predicted IoUs ``(HWA,)``: ``pred_boxes``, ``scores`` (the scoring method's),
        ``pred_classes`` and, with the IoU head, ``pred_iou``."""
        boxes_all, scores_all, classes_all, ious_all = [], [], [], []
        for level, (anchors_level, scores, deltas) in enumerate(
            zip(anchors, box_cls, box_delta, strict=True)
        ):
            # detectron2's filtering: score threshold, then the top-k candidates of the level
            keep = scores > self.test_score_thresh
            scores = scores[keep]
            candidates = torch.nonzero(keep)
            scores, order = scores.topk(min(candidates.shape[0], self.test_topk_candidates))
            anchor_idx, class_idx = candidates[order].unbind(dim=1)
            boxes_all.append(
                self.box_regression.decode(deltas[anchor_idx], anchors_level.tensor[anchor_idx])
            )
            scores_all.append(scores)
            classes_all.append(class_idx)
            if box_iou is not None:
                ious_all.append(box_iou[level][anchor_idx])
        boxes, scores, classes = cat(boxes_all), cat(scores_all), cat(classes_all)
        ious = cat(ious_all) if box_iou is not None else None
        keep, final = nms_with_scoring(
            boxes, scores, classes, ious, self.scoring_method, self.test_nms_thresh
        )
        keep, final = keep[: self.max_detections_per_image], final[: self.max_detections_per_image]
        result = Instances(image_size, pred_boxes=Boxes(boxes[keep]), scores=final)
        result.pred_classes = classes[keep]
        if ious is not None:
            result.pred_iou = ious[keep]
        return result
