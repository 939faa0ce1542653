"""Pretrained weights of the detectron2 engine: where they come from and where they are read.

``model.weights``:

- ``"imagenet"``: the caffe-style ImageNet weights of the paper's backbones, the files
  detectron2's and Detectron's configs name (:data:`IMAGENET_WEIGHTS`). They are never
  downloaded here: the file is read from the folder detectron2 itself caches downloads in
  (iopath's cache: ``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``), at the URL's path
  below it, e.g. ``<cache>/detectron2/ImageNetPretrained/MSRA/R-50.pkl``. A missing file
  stops the run at start, naming the file and the URL to download it from.
- ``"none"``: from scratch.
- a path: a local ``.pkl`` (Caffe2 / Detectron names, converted by detectron2's
  ``DetectionCheckpointer``) or ``.pth`` (detectron2 parameter names), e.g. a detectron2
  model-zoo file.

No detectron2 import here: the check runs before the model (and the data) is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from eiou.engines import WeightsUnavailableError

__all__ = ["IMAGENET_WEIGHTS", "check_weights", "imagenet_weights_file", "weights_url"]

#: backbone -> ImageNet weights as the configs name them (``None``: no ImageNet weights).
#: R-50 / R-101: MSRA's caffe models (detectron2's and Detectron's ``MODEL.WEIGHTS``).
#: X-101-64x4d: detectron2's zoo has only FAIR's X-101-32x8d; Detectron's zoo has
#: ``FBResNeXt/X-101-64x4d.pkl`` (Torch-trained, caffe-style BGR input without std), the
#: file the paper's Table IV backbone was initialised from.
IMAGENET_WEIGHTS: dict[str, str | None] = {
    "resnet50": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
    "resnet101": "detectron2://ImageNetPretrained/MSRA/R-101.pkl",
    "resnext101_64x4d": (
        "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl"
    ),
    "tiny": None,
}
_DETECTRON2_PREFIX = "detectron2://"
_DETECTRON2_URL = "https://dl.fbaipublicfiles.com/detectron2/"


def weights_url(backbone: str) -> str:
    """The https URL of ``backbone``'s ImageNet weights."""
    if backbone not in IMAGENET_WEIGHTS:
        raise ValueError(
            f"model.backbone must be one of {sorted(IMAGENET_WEIGHTS)}, got {backbone!r}"
        )
    name = IMAGENET_WEIGHTS[backbone]
    if name is None:
        raise WeightsUnavailableError(
            f"backbone {backbone!r} has no ImageNet weights: use model.weights: none, or the "
            "path of a local .pkl / .pth file"
        )
    if name.startswith(_DETECTRON2_PREFIX):
        return _DETECTRON2_URL + name[len(_DETECTRON2_PREFIX) :]
    return name


def cache_dir() -> Path:
    """iopath's download cache, where detectron2 keeps the files it fetched:
    ``$FVCORE_CACHE`` or ``~/.torch/iopath_cache``."""
    return Path(os.path.expanduser(os.getenv("FVCORE_CACHE", "~/.torch/iopath_cache")))


def imagenet_weights_file(backbone: str) -> Path:
    """Where ``model.weights: imagenet`` is read for ``backbone``: the cache path detectron2
    would download the URL to (``<cache>/<URL path>``)."""
    return cache_dir() / urlparse(weights_url(backbone)).path.lstrip("/")


def resolve_weights(backbone: str, weights: str) -> Path | None:
    """The local file of ``model.weights`` (``None`` for ``"none"``); raises like
    :func:`check_weights`."""
    if backbone not in IMAGENET_WEIGHTS:
        raise ValueError(
            f"model.backbone must be one of {sorted(IMAGENET_WEIGHTS)}, got {backbone!r}"
        )
    if weights == "none":
        return None
    if weights == "imagenet":
        path = imagenet_weights_file(backbone)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"ImageNet weights for {backbone!r} (detectron2 engine) not found at {path}. "
                f"Download {weights_url(backbone)} to that file (set FVCORE_CACHE to use "
                "another cache folder), or set model.weights to a local .pkl / .pth file or "
                "to none"
            )
        return path
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"model.weights: weights file {weights!r} does not exist (give a local .pkl with "
            "Caffe2 / Detectron names or a .pth with detectron2 names, 'imagenet' or 'none')"
        )
    if path.suffix not in (".pkl", ".pth"):
        raise ValueError(f"model.weights: {weights!r} must be a .pkl or .pth file")
    return path


def check_weights(backbone: str, weights: str) -> None:
    """Raise :class:`~eiou.engines.WeightsUnavailableError` unless ``weights`` is on this
    machine (see the module docstring)."""
    resolve_weights(backbone, weights)
