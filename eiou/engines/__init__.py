"""Adapters that plug the engine-agnostic :mod:`eiou` core into detection frameworks.

The core (metrics, losses, coders, heads, scoring) never imports from here. Every engine
exposes the same two functions, and the training loop, prediction and evaluation see only
these:

- ``build_detector(model_cfg, num_classes, *, load_weights=True) -> nn.Module`` whose
  ``forward(images, targets)`` takes a list of ``(3, H, W)`` float images in ``[0, 1]`` and,
  in training, a list of ``{"boxes": (N, 4) xyxy pixels, "labels": (N,) int64 in 1..K}``
  and returns a dict of scalar loss terms; in eval mode it returns one
  ``{"boxes", "labels", "scores"}`` dict per image, boxes in the input image's pixels,
  selected by :func:`eiou.scoring.select_detections` (once per image); inside
  :func:`eiou.scoring.record_candidates` the dict also holds ``"candidates"`` (what
  ``select_detections`` returned under that key) with ``"scale"`` added: the ``(4,)``
  factors ``(sx, sy, sx, sy)`` that map those boxes to the input image's pixels
  (:mod:`eiou.rescoring`; :data:`eiou.rescoring.CANDIDATE_ENGINES` lists the engines that
  do this);
- ``check_weights(backbone, weights)``: raise :class:`WeightsUnavailableError` before any
  data is read when the pretrained weights the config asks for are not on this machine, and
  :class:`EngineUnavailableError` when the engine's framework is not installed.

``model.engine`` in a run config picks the engine (:data:`ENGINES`): ``torchvision`` (always
installed) or ``detectron2`` (optional; see :mod:`eiou.engines.detectron2`). Both build a
stage's box loss and coder with :func:`eiou.engines.torchvision.box_regression.build_box_regression`
(it imports nothing from torchvision) and read anchors, norms, the IoU head and scoring from
the config with :mod:`eiou.engines.settings`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

__all__ = [
    "ENGINES",
    "EngineUnavailableError",
    "WeightsUnavailableError",
    "build_detector",
    "check_weights",
    "engine_module",
]

#: Engine name -> module holding its ``build_detector`` / ``check_weights``.
ENGINES: dict[str, str] = {
    "torchvision": "eiou.engines.torchvision",
    "detectron2": "eiou.engines.detectron2",
}


class WeightsUnavailableError(FileNotFoundError):
    """Requested backbone weights are not on this machine; the message says what to provide."""


class EngineUnavailableError(ImportError):
    """The framework of the engine asked for is not installed; the message says how to
    install it."""


def engine_module(name: str) -> ModuleType:
    """The module of engine ``name`` (imported on first use)."""
    if name not in ENGINES:
        raise ValueError(f"model.engine must be one of {sorted(ENGINES)}, got {name!r}")
    return importlib.import_module(ENGINES[name])


def build_detector(
    model_cfg: Mapping[str, Any], num_classes: int, *, load_weights: bool = True
) -> Any:
    """The detector of ``model_cfg`` (the ``model`` section of a run config), built by the
    engine ``model_cfg["engine"]`` (default ``torchvision``)."""
    module = engine_module(model_cfg.get("engine", "torchvision"))
    return module.build_detector(model_cfg, num_classes, load_weights=load_weights)


def check_weights(model_cfg: Mapping[str, Any]) -> None:
    """Raise :class:`EngineUnavailableError` when the engine's framework is missing and
    :class:`WeightsUnavailableError` when the weights asked for are absent."""
    module = engine_module(model_cfg.get("engine", "torchvision"))
    module.check_weights(model_cfg["backbone"], model_cfg["weights"])
