"""Box coders: boxes <-> regression offsets relative to anchors (or proposals).

All boxes are ``(..., 4)`` ``(x1, y1, x2, y2)`` in pixels; ``anchors`` broadcast against
them. Half-precision inputs are computed (and returned) in float32, as in
:mod:`eiou.metrics`: an anchor's area in pixels overflows float16 from 256 x 256 on.
Every coder also gives the **anchor-normalised frame** of the paper's Algorithm 1:
coordinates divided by ``S = sqrt(anchor area)``. IoU-family losses evaluated there see
``U_e`` in units of anchor area, so SOT's gradient scale is comparable across pyramid levels.

- :class:`StandardBoxCoder`: R-CNN's ``(dx, dy, dw, dh)`` with weights, identical to
  torchvision's ``BoxCoder`` (no +1 pixel convention).
- :class:`SqrtAreaBoxCoder`: Algorithm 1. Every corner is an offset in units of ``S``:
  ``offsets = (boxes - anchors) / S``, ``boxes = anchors + offsets * S``. Width and height
  share one normaliser, so the aspect ratio of the offsets is the box's own.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from eiou.metrics import _upcast

__all__ = ["BoxCoder", "SqrtAreaBoxCoder", "StandardBoxCoder", "anchor_scale", "available", "get"]

DEFAULT_DW_CLIP = math.log(1000.0 / 16)


def _common_float(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``a`` and ``b`` in one floating dtype, at least float32 (half precision upcast)."""
    a, b = _upcast(a), _upcast(b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def anchor_scale(anchors: Tensor) -> Tensor:
    """``S = sqrt((x2 - x1) * (y2 - y1))`` of each anchor, ``(...)``, in pixels."""
    return ((anchors[..., 2] - anchors[..., 0]) * (anchors[..., 3] - anchors[..., 1])).sqrt()


class BoxCoder:
    """Interface: :meth:`encode`, :meth:`decode`, plus the anchor-normalised frame."""

    name = "base"

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Regression targets ``(..., 4)`` that :meth:`decode` maps back to ``boxes``."""
        raise NotImplementedError

    def decode(self, offsets: Tensor, anchors: Tensor) -> Tensor:
        """Boxes ``(..., 4)`` in pixels from offsets ``(..., 4)`` relative to ``anchors``."""
        raise NotImplementedError

    def normalize(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """``boxes`` in the anchor-normalised frame: divided by ``S`` of their anchor."""
        boxes, anchors = _common_float(boxes, anchors)
        return boxes / anchor_scale(anchors).unsqueeze(-1)

    def decode_normalized(self, offsets: Tensor, anchors: Tensor) -> Tensor:
        """Decoded boxes in the anchor-normalised frame (differentiable in ``offsets``)."""
        return self.normalize(self.decode(offsets, anchors), anchors)


class StandardBoxCoder(BoxCoder):
    """``(dx, dy, dw, dh)`` offsets scaled by ``weights`` (torchvision/Detectron convention).

    ``dx = wx (cx - cx_a) / w_a``, ``dw = ww log(w / w_a)``; decoding clamps ``dw, dh`` at
    ``dw_clip`` (log(1000/16) as in torchvision) so ``exp`` cannot overflow.
    """

    name = "standard"

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        dw_clip: float = DEFAULT_DW_CLIP,
    ) -> None:
        if len(weights) != 4:
            raise ValueError(f"weights must have 4 entries, got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.dw_clip = float(dw_clip)

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        boxes, anchors = _common_float(boxes, anchors)
        wx, wy, ww, wh = self.weights
        aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
        acx, acy = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
        bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        bcx, bcy = boxes[..., 0] + 0.5 * bw, boxes[..., 1] + 0.5 * bh
        return torch.stack(
            (
                wx * (bcx - acx) / aw,
                wy * (bcy - acy) / ah,
                ww * torch.log(bw / aw),
                wh * torch.log(bh / ah),
            ),
            dim=-1,
        )

    def decode(self, offsets: Tensor, anchors: Tensor) -> Tensor:
        offsets, anchors = _common_float(offsets, anchors)
        wx, wy, ww, wh = self.weights
        aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
        acx, acy = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
        dx, dy = offsets[..., 0] / wx, offsets[..., 1] / wy
        dw = (offsets[..., 2] / ww).clamp(max=self.dw_clip)
        dh = (offsets[..., 3] / wh).clamp(max=self.dw_clip)
        cx, cy = dx * aw + acx, dy * ah + acy
        half_w, half_h = 0.5 * torch.exp(dw) * aw, 0.5 * torch.exp(dh) * ah
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


class SqrtAreaBoxCoder(BoxCoder):
    """Algorithm 1 of the paper: corner offsets in units of ``S = sqrt(anchor area)``.

    The network predicts ``d`` and the predicted box in the normalised frame is
    ``d + anchor / S``; in pixels it is ``anchor + d * S``. A prediction may come out
    inverted (``x2 < x1``); the IoU-family metrics treat it as a zero-width box.
    """

    name = "sqrt_area"

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        boxes, anchors = _common_float(boxes, anchors)
        return (boxes - anchors) / anchor_scale(anchors).unsqueeze(-1)

    def decode(self, offsets: Tensor, anchors: Tensor) -> Tensor:
        offsets, anchors = _common_float(offsets, anchors)
        return anchors + offsets * anchor_scale(anchors).unsqueeze(-1)

    def decode_normalized(self, offsets: Tensor, anchors: Tensor) -> Tensor:
        """``offsets + anchors / S`` (Algorithm 1, line 5): no round trip through pixels."""
        offsets, anchors = _common_float(offsets, anchors)
        return offsets + anchors / anchor_scale(anchors).unsqueeze(-1)


_CODERS: dict[str, type[BoxCoder]] = {
    StandardBoxCoder.name: StandardBoxCoder,
    SqrtAreaBoxCoder.name: SqrtAreaBoxCoder,
}


def available() -> list[str]:
    """Names of the registered coders."""
    return sorted(_CODERS)


def get(name: str, **options: Any) -> BoxCoder:
    """A coder by name: ``"standard"`` (options ``weights``, ``dw_clip``) or ``"sqrt_area"``."""
    try:
        cls = _CODERS[name]
    except KeyError:
        raise ValueError(f"unknown box coder {name!r}; choose from {sorted(_CODERS)}") from None
    return cls(**options)
