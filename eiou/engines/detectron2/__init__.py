"""detectron2 detectors (Faster R-CNN + FPN, RetinaNet) driven by the :mod:`eiou` core.

The paper's detectors ran in Detectron; detectron2 is its successor. This engine builds them
with detectron2's own modelling code from its config system (``get_cfg()``, the settings in
:mod:`eiou.engines.detectron2.config`) and replaces only what the method changes: the box
predictor of Faster R-CNN (:class:`~eiou.engines.detectron2.faster_rcnn.IoUFastRCNNOutputLayers`),
optionally its RPN's box loss, and RetinaNet's losses and inference
(:class:`~eiou.engines.detectron2.retinanet.IoURetinaNet`). Box losses, coders, the IoU
head and scoring come from the core by the same names and options as in the torchvision
engine (:mod:`eiou.engines.torchvision.box_regression`, :mod:`eiou.heads`, :mod:`eiou.scoring`).

detectron2 is optional (it is not on PyPI): importing this package never needs it;
:func:`check_weights` and :func:`build_detector` raise
:class:`~eiou.engines.EngineUnavailableError`, saying how to install it, when it is missing.
The modules that subclass detectron2 are imported on first use.

Backbones: ``resnet50``, ``resnet101``, ``resnext101_64x4d`` (the paper's, with Detectron's
caffe-style ImageNet weights, see :mod:`eiou.engines.detectron2.weights`) and ``tiny``
(detectron2's ResNet-18 layout at half width + a 32-channel FPN, for CPU runs and tests;
:mod:`eiou.engines.detectron2.backbone`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eiou.engines import EngineUnavailableError
from eiou.engines.detectron2.weights import IMAGENET_WEIGHTS, imagenet_weights_file

if TYPE_CHECKING:
    from eiou.engines.detectron2.detector import Detectron2Detector

__all__ = [
    "IMAGENET_WEIGHTS",
    "INSTALL_HINT",
    "available",
    "build_detector",
    "check_weights",
    "imagenet_weights_file",
    "require_detectron2",
]

#: How to install detectron2 (its INSTALL.md: build from source against the installed torch).
INSTALL_HINT = (
    "model.engine: detectron2 needs detectron2, which is not installed. It is not on PyPI: "
    "build it from source against the installed torch (its INSTALL.md), in this environment: "
    "python -m pip install 'setuptools<81' && "
    "git clone https://github.com/facebookresearch/detectron2.git && "
    "python -m pip install --no-build-isolation -e detectron2 "
    "(its Python dependencies: python -m pip install -e '.[detectron2]' from this project). "
    "Or use model.engine: torchvision"
)


def available() -> bool:
    """Whether detectron2 can be imported here."""
    return importlib.util.find_spec("detectron2") is not None


def require_detectron2() -> None:
    """Raise :class:`~eiou.engines.EngineUnavailableError` (with :data:`INSTALL_HINT`)
    unless detectron2 imports."""
    try:
        import detectron2.modeling  # noqa: F401
    except ImportError as err:
        raise EngineUnavailableError(f"{INSTALL_HINT}. ({err})") from err


def check_weights(backbone: str, weights: str) -> None:
    """Raise before any data is read: :class:`~eiou.engines.EngineUnavailableError` without
    detectron2, :class:`~eiou.engines.WeightsUnavailableError` when ``weights`` is not on
    this machine (see :mod:`eiou.engines.detectron2.weights`)."""
    from eiou.engines.detectron2.weights import check_weights as check_file

    require_detectron2()
    check_file(backbone, weights)


def build_detector(
    model_cfg: Mapping[str, Any], num_classes: int, *, load_weights: bool = True
) -> Detectron2Detector:
    """The detector of ``model_cfg`` (see
    :func:`eiou.engines.detectron2.detector.build_detector`)."""
    require_detectron2()
    from eiou.engines.detectron2.detector import build_detector as build

    return build(model_cfg, num_classes, load_weights=load_weights)
