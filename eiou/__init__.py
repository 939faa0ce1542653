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

from eiou.metrics import ExtendedIoU, ciou, diou, eiou, extended_iou_parts, giou, iou

__version__ = "0.1.0"

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
