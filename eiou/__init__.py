"""eiou: the extended IoU (EIoU), the convexification technique (CT), the steady
optimization technique (SOT) and the IoU head of Peng & Yu, as an engine-agnostic
PyTorch library.

Boxes are ``(..., 4)`` tensors in ``(x1, y1, x2, y2)`` format. The metrics are exported
here; losses, coders, the IoU head and scoring live in their modules::

    import eiou
    from eiou import losses

    eiou.eiou(pred, target)                              # (...) extended IoU
    loss = losses.get("eiou", power=2, sot=True)         # Smooth-EIoU + SOT
    loss(pred, target, reduction="mean").backward()
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_METRICS = ("ExtendedIoU", "ciou", "diou", "eiou", "extended_iou_parts", "giou", "iou")


def __getattr__(name: str) -> Any:
    """The metrics, imported on first use: ``import eiou.experiments`` (the workflow's
    planning, ``eiou --help``) never imports torch."""
    if name in _METRICS:
        from eiou import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'eiou' has no attribute {name!r}")


__all__ = [
    "ExtendedIoU",
    "__version__",
    "ciou",
    "diou",
    "eiou",
    "extended_iou_parts",
    "giou",
    "iou",
]
