"""torchvision detectors (Faster R-CNN + FPN, RetinaNet) driven by the :mod:`eiou` core.

``build_detector(model_cfg, num_classes)`` builds one from the ``model`` section of a run
config; the box loss, box coder and IoU head come from :mod:`eiou.losses`,
:mod:`eiou.coders` and :mod:`eiou.heads` by name, and inference scores detections with
:func:`eiou.scoring.nms_with_scoring`.
"""

from eiou.engines.torchvision.backbones import (
    BACKBONES,
    WeightsUnavailableError,
    build_backbone,
    check_weights,
)
from eiou.engines.torchvision.box_regression import BoxRegression, build_box_regression
from eiou.engines.torchvision.build import DETECTORS, build_detector
from eiou.engines.torchvision.faster_rcnn import IoURoIHeads, LossRPN
from eiou.engines.torchvision.retinanet import IoURetinaNet

__all__ = [
    "BACKBONES",
    "DETECTORS",
    "BoxRegression",
    "IoURetinaNet",
    "IoURoIHeads",
    "LossRPN",
    "WeightsUnavailableError",
    "build_backbone",
    "build_box_regression",
    "build_detector",
    "check_weights",
]
