"""The engine interface around a detectron2 model, and ``build_detector``.

:class:`Detectron2Detector` takes the engine interface's images and targets (see
:mod:`eiou.engines`) and calls detectron2's model with its own ``list[dict]`` inputs:

- each image (float RGB in ``[0, 1]``, ``(3, H, W)``) becomes detectron2's input format,
  BGR in ``[0, 255]``, resized by detectron2's rule (``ResizeShortestEdge``: short side
  ``min_size``, long side at most ``max_size``) with bilinear, antialiased interpolation
  (what detectron2's ``ResizeTransform`` does to ``uint8`` images, through PIL); the pixel
  normalisation (caffe-style means, std 1) is the model's own ``preprocess_image``;
- targets become ``Instances`` (``gt_boxes`` scaled like the image, ``gt_classes = label - 1``);
- ``height``/``width`` are the original size, so detectron2's ``detector_postprocess``
  returns boxes in the input image's pixels.

In training the loss dict uses the engine interface's names (``loss_classifier``,
``loss_box_reg``, ``loss_iou``, ``loss_objectness``, ``loss_rpn_box_reg``), so the logs of
both engines have the same columns. Each call runs inside a fresh detectron2
``EventStorage`` (its models log statistics there; nothing reads them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import Tensor, nn

from eiou.engines.detectron2.config import DETECTORS, detectron2_config, stage_box_loss
from eiou.engines.detectron2.faster_rcnn import build_faster_rcnn
from eiou.engines.detectron2.retinanet import IoURetinaNet
from eiou.engines.detectron2.weights import resolve_weights
from eiou.engines.settings import iou_head_negatives, iou_head_settings, scoring_settings
from eiou.engines.torchvision.box_regression import build_box_regression

__all__ = ["LOSS_NAMES", "Detectron2Detector", "build_detector"]

#: detectron2's loss names -> the engine interface's.
LOSS_NAMES: dict[str, str] = {
    "loss_cls": "loss_classifier",
    "loss_box_reg": "loss_box_reg",
    "loss_rpn_cls": "loss_objectness",
    "loss_rpn_loc": "loss_rpn_box_reg",
}


class Detectron2Detector(nn.Module):
    """A detectron2 meta-architecture behind the engine interface (module docstring).

    Args:
        model: detectron2's ``GeneralizedRCNN`` / ``RetinaNet`` (or a subclass).
        min_size, max_size: the resize rule (pixels).
    """

    def __init__(self, model: nn.Module, min_size: int, max_size: int) -> None:
        super().__init__()
        self.model = model
        self.min_size, self.max_size = int(min_size), int(max_size)

    def detectron2_inputs(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> list[dict[str, Any]]:
        """detectron2's ``list[dict]`` inputs (``image``, ``height``, ``width`` and, with
        targets, ``instances``) of our images and targets."""
        inputs = []
        for index, image in enumerate(images):
            height, width = image.shape[-2:]
            new_h, new_w = ResizeShortestEdge.get_output_shape(
                height, width, self.min_size, self.max_size
            )
            pixels = image.flip(0) * 255.0  # RGB [0, 1] -> BGR [0, 255]
            if (new_h, new_w) != (height, width):
                pixels = F.interpolate(
                    pixels[None],
                    (new_h, new_w),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )[0]
            item: dict[str, Any] = {"image": pixels, "height": height, "width": width}
            if targets is not None:
                target = targets[index]
                scale = torch.tensor(
                    [new_w / width, new_h / height] * 2, device=target["boxes"].device
                )
                instances = Instances((new_h, new_w))
                instances.gt_boxes = Boxes(target["boxes"].float() * scale)
                instances.gt_classes = target["labels"].long() - 1
                item["instances"] = instances
            inputs.append(item)
        return inputs

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: a dict of scalar losses. Eval: per image ``{"boxes" (D, 4) xyxy pixels
        of the input image, "labels" (D,) in 1..K, "scores" (D,)}`` (+ ``"predicted_iou"``
        with the IoU head)."""
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        inputs = self.detectron2_inputs(images, targets if self.training else None)
        with EventStorage(0):
            outputs = self.model(inputs)
        if self.training:
            return {LOSS_NAMES.get(k, k): v for k, v in outputs.items()}
        detections = []
        for output in outputs:
            instances = output["instances"]
            detection = {
                "boxes": instances.pred_boxes.tensor,
                "labels": instances.pred_classes + 1,
                "scores": instances.scores,
            }
            if instances.has("pred_iou"):
                detection["predicted_iou"] = instances.pred_iou
            detections.append(detection)
        return detections


def build_detector(
    model_cfg: Mapping[str, Any], num_classes: int, *, load_weights: bool = True
) -> Detectron2Detector:
    """A detectron2 detector whose box loss, coder, IoU head and scoring come from the core.

    Args:
        model_cfg: the ``model`` section of a run config (see :mod:`eiou.config`);
            ``options`` holds detectron2 config keys (:mod:`eiou.engines.detectron2.config`).
        num_classes: object classes ``K`` (labels ``1..K``).
        load_weights: ``False`` skips reading the pretrained weights (the architecture they
            imply is kept), for loading a trained detector's checkpoint.

    Raises:
        WeightsUnavailableError: the weights asked for are not on this machine.
        ValueError: an unknown detector, backbone, norm, loss option or detectron2 key.
    """
    detector = model_cfg["detector"]
    if detector not in DETECTORS:
        raise ValueError(f"model.detector must be one of {DETECTORS}, got {detector!r}")
    weights = str(model_cfg.get("weights", "none"))
    weights_file = resolve_weights(model_cfg["backbone"], weights) if load_weights else None
    cfg = detectron2_config(model_cfg, num_classes)
    iou_head, iou_head_weight = iou_head_settings(model_cfg)
    if iou_head_negatives(model_cfg):
        raise ValueError(
            "model.iou_head.negatives: the detectron2 engine trains the IoU head on positives "
            "only (the paper's head); the torchvision engine implements negatives"
        )
    method = scoring_settings(model_cfg)["method"]
    box_regression = build_box_regression(
        stage_box_loss(model_cfg["box_loss"], cfg, detector), detector
    )
    model: nn.Module
    if detector == "faster_rcnn":
        rpn_box_loss = model_cfg.get("rpn_box_loss")
        model = build_faster_rcnn(
            cfg,
            box_regression,
            rpn_box_regression=(
                build_box_regression(stage_box_loss(rpn_box_loss, cfg, "rpn"), "rpn")
                if rpn_box_loss
                else None
            ),
            iou_head=iou_head,
            iou_head_weight=iou_head_weight,
            scoring_method=method,
        )
    else:
        model = IoURetinaNet(
            cfg,
            box_regression=box_regression,
            iou_head=iou_head,
            iou_head_weight=iou_head_weight,
            scoring_method=method,
        )
    if weights_file is not None:  # Caffe2 / Detectron names converted; misfits skipped, logged
        DetectionCheckpointer(model).load(str(weights_file))
    return Detectron2Detector(model, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
