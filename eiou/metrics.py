"""IoU-family metrics over paired boxes: IoU, GIoU, DIoU, CIoU and the extended IoU (EIoU).

Every function takes ``pred`` and ``target`` of shape ``(..., 4)`` in ``(x1, y1, x2, y2)``
format (any units; the two must share them, shapes broadcast) and returns the metric of
each pair, shape ``(...)``. Empty inputs give empty outputs.

Conventions, shared by every function through :func:`_corners`:

- **dtype**: float16/bfloat16 (and integer) inputs are computed and returned in float32;
  float32 and float64 are kept.
- **inverted boxes**: a box with ``x2 < x1`` (or ``y2 < y1``) has zero area (widths and
  heights are clamped at 0 wherever an area or an aspect ratio is taken); its corners are
  otherwise used as given. Every metric stays continuous and finite, and for EIoU an
  inverted prediction counts as separated from its target along each inverted axis
  (``EIoU <= 0``), so its gradient unflips it (see below). (torchvision.ops would use a
  negative area.)
- **eps** (:data:`EPS` = 1e-7, in the squared units of the coordinates): added to every
  denominator that can vanish (union, enclosing area, enclosing diagonal). It only matters
  for boxes whose areas are comparable to ``eps``: two identical zero-area boxes have
  IoU 0, not 1. The same placement as ``torchvision.ops`` so GIoU/DIoU/CIoU agree with it.

The extended IoU (paper, Sec. III-B, Eq. 10-22, with the typo of Eq. 16 corrected to
``I_e = S1 + S2 - S3 - S4``) equals the standard IoU for overlapping boxes (0 when they
touch) and is negative for separated boxes, tending to -1 as they move apart.

Inverted boxes, which the paper does not consider, extend Eq. 10-21 in two ways:

1. ``x0`` (``y0``) is the leftmost (topmost) of all four corners, ``x0 = min(x1_t, x1_p,
   x2_t, x2_p)``: for proper boxes the same number as Eq. 10's ``min(x1_t, x1_p)``. A
   prediction inverted along x then has ``x1 = max(x1_p, x1_t) >= x1_p > x2_p >= x2``: it
   is apart from its target along x, and with every corner at or beyond ``(x0, y0)``
   Eq. 16 gives at most 0.
2. Each inversion is charged as a strip of the other box:
   ``I_e = (Eq. 16) - (x1_p - x2_p)^+ h_t - (y1_p - y2_p)^+ w_t`` (and the same with the
   two boxes swapped, so that EIoU stays symmetric), ``^+`` the positive part, ``w, h``
   the clamped sizes. Without it, a prediction inverted along y and collapsed to zero
   width on the target's left edge has ``I_e = 0`` however far it is inverted: a plateau
   (``EIoU = 0``, the largest value an inverted prediction can reach) where the y corners
   get no gradient, and gradient descent collapses onto it.

For proper boxes both change nothing: the values bit for bit, and the gradients too except
on ties between corners (kinks of ``min``/``max``), where autograd may add the two halves of
a subgradient in another order. For every target of positive area ``S_t``:

- ``U_e >= S_t > 0`` (the standard union for overlapping boxes, ``S_t + S_p + |I_e|``
  otherwise) and ``EIoU`` is in ``(-1, 1]``, ``<= 0`` for an inverted prediction;
- ``I_e`` is continuous (``min``, ``max``, positive parts and products of the corners): a
  zero-width prediction has the limit of both sides of the flip;
- gradients are bounded: ``|dEIoU/dz| <= 11 D_y / U_e <= 11 D_y / S_t`` for ``z`` any
  x-corner of the prediction, ``D_y`` the span of the four y-corners (x and y swapped for a
  y-corner), because ``dEIoU = (dI_e (1 + EIoU) - EIoU dS_p) / (U_e + eps)`` with
  ``|dI_e/dz| <= 4 D_y + h_t <= 5 D_y`` and ``|dS_p/dz| <= D_y``;
- along an inverted axis ``S_p`` has no gradient and
  ``dEIoU/dx2_p - dEIoU/dx1_p >= 2 h_t (1 + EIoU) / (U_e + eps) > 0``: a gradient step on
  any loss that decreases with EIoU shrinks ``x1_p - x2_p``, so the prediction unflips.

With Eq. 10's ``x0 = min(x1_t, x1_p)`` as it stands, a prediction inverted along both axes
could get ``I_e > S_t``, ``U_e <= 0`` and an EIoU of any sign and size (-896 to 3427 on the
pairs of ``benchmarks/cuda_numerics.py``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "EPS",
    "ExtendedIoU",
    "ciou",
    "diou",
    "eiou",
    "extended_iou_parts",
    "giou",
    "iou",
]

EPS = 1e-7


class _Corners(NamedTuple):
    px1: Tensor
    py1: Tensor
    px2: Tensor
    py2: Tensor
    tx1: Tensor
    ty1: Tensor
    tx2: Tensor
    ty2: Tensor


def _upcast(t: Tensor) -> Tensor:
    """Half precision and integers to float32; float32/float64 unchanged."""
    if t.dtype in (torch.float32, torch.float64):
        return t
    return t.float()


def _corners(pred: Tensor, target: Tensor) -> _Corners:
    """Unpack two ``(..., 4)`` box tensors into corners (dtype conventions applied)."""
    if pred.shape[-1:] != (4,) or target.shape[-1:] != (4,):
        raise ValueError(
            "boxes must have shape (..., 4) in (x1, y1, x2, y2) format, got "
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    pred, target = _upcast(pred), _upcast(target)
    if pred.dtype != target.dtype:
        dtype = torch.promote_types(pred.dtype, target.dtype)
        pred, target = pred.to(dtype), target.to(dtype)
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    return _Corners(px1, py1, px2, py2, tx1, ty1, tx2, ty2)


def _sizes(c: _Corners) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Widths and heights of pred and target, clamped at 0 (inverted boxes)."""
    return (
        (c.px2 - c.px1).clamp(min=0),
        (c.py2 - c.py1).clamp(min=0),
        (c.tx2 - c.tx1).clamp(min=0),
        (c.ty2 - c.ty1).clamp(min=0),
    )


def _areas(c: _Corners) -> tuple[Tensor, Tensor]:
    wp, hp, wt, ht = _sizes(c)
    return wp * hp, wt * ht


def _intersection_union(c: _Corners) -> tuple[Tensor, Tensor]:
    """Standard intersection and union areas (Eq. 1-8)."""
    iw = (torch.minimum(c.px2, c.tx2) - torch.maximum(c.px1, c.tx1)).clamp(min=0)
    ih = (torch.minimum(c.py2, c.ty2) - torch.maximum(c.py1, c.ty1)).clamp(min=0)
    inter = iw * ih
    area_p, area_t = _areas(c)
    return inter, area_p + area_t - inter


def _iou(c: _Corners, eps: float) -> tuple[Tensor, Tensor]:
    inter, union = _intersection_union(c)
    return inter / (union + eps), union


def iou(pred: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """Standard IoU ``I / (U + eps)`` of paired boxes, in ``[0, 1]``.

    Args:
        pred, target: ``(..., 4)`` boxes ``(x1, y1, x2, y2)``.
    Returns:
        ``(...)`` IoU of each pair.
    """
    return _iou(_corners(pred, target), eps)[0]


def _enclosing(c: _Corners) -> tuple[Tensor, Tensor]:
    """Width and height of the smallest box enclosing both boxes.

    It spans every corner of the prediction, so an inverted prediction's centre stays
    inside it (DIoU's ``rho <= c``); for valid boxes this is the usual enclosing box.
    """
    cw = torch.maximum(torch.maximum(c.px1, c.px2), c.tx2) - torch.minimum(
        torch.minimum(c.px1, c.px2), c.tx1
    )
    ch = torch.maximum(torch.maximum(c.py1, c.py2), c.ty2) - torch.minimum(
        torch.minimum(c.py1, c.py2), c.ty1
    )
    return cw, ch


def giou(pred: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """Generalized IoU (Rezatofighi et al. 2019): ``IoU - (C - U) / (C + eps)``, in ``(-1, 1]``.

    ``C`` is the area of the smallest enclosing box. Matches
    ``1 - torchvision.ops.generalized_box_iou_loss``.
    """
    c = _corners(pred, target)
    value, union = _iou(c, eps)
    cw, ch = _enclosing(c)
    area_c = cw * ch
    return value - (area_c - union) / (area_c + eps)


def _diou(c: _Corners, eps: float) -> tuple[Tensor, Tensor]:
    value, _ = _iou(c, eps)
    cw, ch = _enclosing(c)
    diagonal_sq = cw**2 + ch**2 + eps
    center_dx = (c.px1 + c.px2 - c.tx1 - c.tx2) / 2
    center_dy = (c.py1 + c.py2 - c.ty1 - c.ty2) / 2
    return value - (center_dx**2 + center_dy**2) / diagonal_sq, value


def diou(pred: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """Distance IoU (Zheng et al. 2020): ``IoU - rho^2 / (c^2 + eps)``.

    ``rho`` is the distance between the box centres, ``c`` the enclosing box's diagonal.
    Matches ``1 - torchvision.ops.distance_box_iou_loss``.
    """
    return _diou(_corners(pred, target), eps)[0]


def ciou(pred: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """Complete IoU (Zheng et al. 2020): ``DIoU - alpha * v``.

    ``v = 4 / pi^2 * (atan(w_t / h_t) - atan(w_p / h_p))^2`` measures aspect-ratio
    mismatch and ``alpha = v / (1 - IoU + v + eps)`` is treated as a constant (no gradient),
    as in the CIoU paper and ``torchvision.ops.complete_box_iou_loss``, which this matches.
    Heights are clamped at ``eps`` inside the ratios so zero-height boxes stay finite.
    """
    c = _corners(pred, target)
    value, plain_iou = _diou(c, eps)
    wp, hp, wt, ht = _sizes(c)
    hp, ht = hp.clamp(min=eps), ht.clamp(min=eps)
    v = (4 / math.pi**2) * (torch.atan(wt / ht) - torch.atan(wp / hp)) ** 2
    with torch.no_grad():
        alpha = v / (1 - plain_iou + v + eps)
    return value - alpha * v


class ExtendedIoU(NamedTuple):
    """The extended IoU and its parts, each ``(...)``.

    Attributes:
        value: ``EIoU = I_e / (U_e + eps)``, in ``(-1, 1]``; ``<= 0`` for separated boxes and
            for an inverted prediction.
        intersection: the extended intersection ``I_e`` (Eq. 16, less the strips of
            inverted boxes, see the module docstring); the standard intersection for
            overlapping boxes, negative for separated ones, ``<= 0`` for an inverted
            prediction.
        union: the extended union ``U_e = S_t + S_p - I_e`` (Eq. 21), always ``>= S_t``;
            the standard union for overlapping boxes, ``S_t + S_p + |I_e|`` otherwise. SOT
            scales gradients by it.
    """

    value: Tensor
    intersection: Tensor
    union: Tensor


class _ExtendedGeometry(NamedTuple):
    """Eq. 1-4 and 10-16, every corner measured from ``(x0, y0)``; each ``(...)``."""

    dx1: Tensor  # x1 - x0 with x1 = max(x1_p, x1_t)
    dy1: Tensor
    dx2: Tensor  # x2 - x0 with x2 = min(x2_p, x2_t)
    dy2: Tensor
    dx_min: Tensor  # min(x1, x2) - x0
    dx_max: Tensor
    dy_min: Tensor
    dy_max: Tensor
    sizes: tuple[Tensor, Tensor, Tensor, Tensor]  # w_p, h_p, w_t, h_t, clamped at 0
    inversions: tuple[Tensor, Tensor, Tensor, Tensor]  # (x1_p - x2_p)^+, (y1_p - y2_p)^+, target
    intersection: Tensor  # I_e, with the strips of inverted boxes
    union: Tensor  # U_e


def _extended_geometry(c: _Corners) -> _ExtendedGeometry:
    x1, y1 = torch.maximum(c.px1, c.tx1), torch.maximum(c.py1, c.ty1)  # Eq. 1-2
    x2, y2 = torch.minimum(c.px2, c.tx2), torch.minimum(c.py2, c.ty2)  # Eq. 3-4
    # Eq. 10-11, x0 = min(x1_t, x1_p), taken over all four corners (x2 = min(x2_t, x2_p)):
    # the same for proper boxes, and for an inverted box (x2 < x1) it keeps every corner at
    # or right of x0, so that Eq. 16 stays <= 0. (With min(x1_t, x1_p) alone, a prediction
    # inverted along both axes could get I_e > 0 and U_e <= 0: EIoU outside (-1, 1].)
    x0 = torch.minimum(torch.minimum(c.px1, c.tx1), x2)
    y0 = torch.minimum(torch.minimum(c.py1, c.ty1), y2)
    # Eq. 1-4 and 12-15 measured from (x0, y0): every product below is translation invariant.
    dx1, dy1, dx2, dy2 = x1 - x0, y1 - y0, x2 - x0, y2 - y0
    dx_min, dx_max = torch.minimum(dx1, dx2), torch.maximum(dx1, dx2)
    dy_min, dy_max = torch.minimum(dy1, dy2), torch.maximum(dy1, dy2)
    # Eq. 16 with the corrected signs: I_e = S1 + S2 - S3 - S4.
    inter = dx2 * dy2 + dx_min * dy_min - dx1 * dy_max - dx_max * dy1
    wp, hp, wt, ht = sizes = _sizes(c)
    # Inverted boxes: less each inversion times the other box's extent (+0 for proper boxes,
    # which leaves I_e bit for bit; a clamp, so that no gradient flows there either).
    inv_px, inv_py = (c.px1 - c.px2).clamp(min=0), (c.py1 - c.py2).clamp(min=0)
    inv_tx, inv_ty = (c.tx1 - c.tx2).clamp(min=0), (c.ty1 - c.ty2).clamp(min=0)
    strips = inv_px * ht
    strips = torch.addcmul(strips, inv_py, wt)
    strips = torch.addcmul(strips, inv_tx, hp)
    strips = torch.addcmul(strips, inv_ty, wp)
    inter = inter - strips
    union = wt * ht + wp * hp - inter  # Eq. 21
    inversions = (inv_px, inv_py, inv_tx, inv_ty)
    return _ExtendedGeometry(
        dx1, dy1, dx2, dy2, dx_min, dx_max, dy_min, dy_max, sizes, inversions, inter, union
    )


def extended_iou_parts(pred: Tensor, target: Tensor, eps: float = EPS) -> ExtendedIoU:
    """The extended IoU with its extended intersection ``I_e`` and union ``U_e``.

    Args:
        pred, target: ``(..., 4)`` boxes ``(x1, y1, x2, y2)``.
    Returns:
        :class:`ExtendedIoU` of ``(...)`` tensors.
    """
    g = _extended_geometry(_corners(pred, target))
    return ExtendedIoU(g.intersection / (g.union + eps), g.intersection, g.union)  # Eq. 22


def eiou(pred: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """Extended IoU (paper Eq. 22): ``I_e / (U_e + eps)``, in ``(-1, 1]``.

    Equal to :func:`iou` for overlapping boxes, negative for separated boxes and decreasing
    with their distance, so it has a gradient everywhere except on the kinks of ``min``/``max``.

    Args:
        pred, target: ``(..., 4)`` boxes ``(x1, y1, x2, y2)``.
    Returns:
        ``(...)`` EIoU of each pair.
    """
    return extended_iou_parts(pred, target, eps).value
