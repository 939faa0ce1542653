"""Readings of the ``model`` section of a run config that every engine shares.

Each engine turns these into its framework's settings; keeping them here means a config
means the same detector on every engine (anchors, norm, frozen stages, IoU head, scoring).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "NORMS",
    "PAPER_ANCHOR_SIZES",
    "TINY_RETINANET_ANCHOR_SIZES",
    "backbone_norm",
    "default_anchor_sizes",
    "iou_head_negatives",
    "iou_head_settings",
    "scoring_settings",
    "trainable_stages",
]

NORMS = ("frozen_bn", "bn", "gn")

#: Paper anchor sizes (P2..P6 for Faster R-CNN, P3..P7 for RetinaNet).
PAPER_ANCHOR_SIZES = (32, 64, 128, 256, 512)
#: The tiny RetinaNet's sizes on P2..P6: 4x the stride, as the paper's 32..512 on P3..P7.
TINY_RETINANET_ANCHOR_SIZES = (16, 32, 64, 128, 256)


def default_anchor_sizes(backbone: str, detector: str = "faster_rcnn") -> tuple[int, ...]:
    """Base anchor size in pixels per pyramid level (5 levels, finest first)."""
    if backbone == "tiny" and detector == "retinanet":
        return TINY_RETINANET_ANCHOR_SIZES
    return PAPER_ANCHOR_SIZES


def backbone_norm(weights: str, norm: str | None) -> str:
    """``model.norm`` or its default: ``frozen_bn`` with pretrained weights (Detectron's
    choice), ``gn`` from scratch. ``frozen_bn`` without weights is refused: a frozen batch
    norm without pretrained statistics is an identity, and the network diverges."""
    pretrained = weights != "none"
    norm = norm or ("frozen_bn" if pretrained else "gn")
    if norm not in NORMS:
        raise ValueError(f"model.norm must be one of {NORMS}, got {norm!r}")
    if norm == "frozen_bn" and not pretrained:
        raise ValueError(
            "model.norm: frozen_bn without pretrained weights is an identity and diverges; "
            "use gn or bn when training from scratch"
        )
    return norm


def trainable_stages(weights: str, trainable_layers: int | None) -> int:
    """ResNet stages left trainable, counted from the top (0..5; 5 = stem included):
    ``model.trainable_layers`` or 3 with pretrained weights (Detectron: stem and res2
    frozen), 5 from scratch."""
    if trainable_layers is None:
        return 3 if weights != "none" else 5
    if not 0 <= int(trainable_layers) <= 5:
        raise ValueError(f"model.trainable_layers must be in 0..5, got {trainable_layers!r}")
    return int(trainable_layers)


def iou_head_settings(model_cfg: Mapping[str, Any]) -> tuple[bool, float]:
    """``(enabled, loss weight)`` of ``model.iou_head``."""
    head = model_cfg.get("iou_head") or {}
    return bool(head.get("enabled", False)), float(head.get("weight", 1.0))


def iou_head_negatives(model_cfg: Mapping[str, Any]) -> bool:
    """``model.iou_head.negatives``: train the head on negatives too (a departure from the
    paper; the torchvision engine implements it)."""
    head = model_cfg.get("iou_head") or {}
    return bool(head.get("enabled", False)) and bool(head.get("negatives", False))


def scoring_settings(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``model.scoring`` with its defaults: ``method`` (``cls``), ``nms_threshold`` (0.5),
    ``score_threshold`` (0.05), ``detections_per_image`` (100)."""
    scoring = {"method": "cls", "nms_threshold": 0.5, "score_threshold": 0.05}
    scoring.update(model_cfg.get("scoring") or {})
    scoring.setdefault("detections_per_image", 100)
    return scoring
