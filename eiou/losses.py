"""Box-regression losses with one call signature, CT, SOT and a registry.

Every loss is a :class:`BoxLoss` (an ``nn.Module``) called as
``loss(pred, target, weight=None, reduction=None, avg_factor=None)``:

- ``pred``, ``target``: ``(..., 4)``. For IoU-family losses (``input_space == "boxes"``)
  they are boxes ``(x1, y1, x2, y2)``; detectors should pass them in the anchor-normalised
  frame of :meth:`eiou.coders.BoxCoder.decode_normalized` so that SOT's ``U_e`` is in
  units of anchor area (paper, Algorithm 1). For ``smooth_l1``
  (``input_space == "offsets"``) they are encoded offsets.
- ``weight``: ``(...)`` per pair, or ``(..., 4)`` (then averaged over the last axis).
- ``reduction``: ``"none"`` (the ``(...)`` per-pair losses), ``"sum"`` or ``"mean"``
  (the sum divided by ``avg_factor`` when given, else by the number of pairs; the mean of
  an empty input is 0). ``None`` uses the reduction given at construction.

Options common to the box losses:

- ``power`` (CT, paper Sec. III-C): the loss becomes ``(f - f_min)^power``; ``power=1``
  is no CT. The paper's Smooth-EIoU is ``eiou`` with ``power=2``; footnote 2 allows any
  ``power > 1``.
- ``sot`` (SOT, paper Eq. 28): the forward value is unchanged; the gradient flowing into
  ``pred`` is multiplied, per pair, by the extended union ``U_e`` of that pair (detached).
  ``U_e`` is the standard union whenever the boxes overlap, and stays positive when they
  do not (``U_e >= S_t``, inverted predictions included), so the same rule serves every
  IoU-family loss.
- ``gradient`` (EIoU only): ``"autograd"``, the exact derivative of Eq. 16 (which also
  differentiates ``x0 = min(x1_t, x1_p)``), or ``"paper"``, the hand-derived gradient of
  Appendix A (Eq. 33-44), computed in one fused custom autograd Function. They agree
  wherever the boxes overlap and differ on part of the separated pairs: where
  ``x1_p < x1_t`` (resp. ``y1_p < y1_t``), the prediction is not inverted along that axis
  and the boxes are apart along the other axis, the paper sets ``dI_e/dx1_p = 0`` while the
  exact derivative is ``2 (y1 - y2)``. In general the paper's gradient is the derivative
  with Eq. 10-11's ``min(x1_t, x1_p)`` and ``min(y1_t, y1_p)`` held fixed. Inverted
  predictions, which Appendix A does not consider, follow the extension of
  :mod:`eiou.metrics` (``x0 = min(x1_t, x1_p, x2_t, x2_p)`` and a strip per inversion)
  in both modes: where ``x0`` is an inverted ``x2_p``, its motion is differentiated, as
  are the strips (held, ``x0 = x2_p`` would take away part of the push that unflips
  ``x2_p``; without the strips, all of it for a prediction left of and above its target).
  So the two modes agree on every inverted axis, and on a prediction inverted along both
  axes they are equal.

With any of these options, the gradient of every EIoU loss is bounded: ``|dEIoU/dz| <=
11 D / U_e <= 11 D / S_t`` (:mod:`eiou.metrics`, ``D`` the span of the corners along the
other axis), times ``power 2^(power - 1)`` with CT, and times ``U_e`` with SOT, which makes
it at most ``11 power 2^(power - 1) D`` whatever the box areas. On an inverted prediction
every gradient-descent step shrinks the inversion.

Losses are looked up by name with :func:`get`; :func:`register` adds one. A dotted import
path (``"my_pkg.losses.my_loss"``) names a user's loss: a class is instantiated with the
options; a plain function ``f(pred, target, **options) -> (...)`` is wrapped in a
:class:`BoxLoss` so it gets weights, reductions, ``power`` and ``sot`` for free.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from eiou import metrics
from eiou.metrics import EPS

__all__ = [
    "BoxLoss",
    "CIoULoss",
    "DIoULoss",
    "EIoULoss",
    "FunctionLoss",
    "GIoULoss",
    "IoULoss",
    "SmoothL1Loss",
    "available",
    "convexify",
    "get",
    "reduce_loss",
    "register",
    "steady_gradient",
]

REDUCTIONS = ("none", "mean", "sum")
GRADIENT_MODES = ("autograd", "paper")


def reduce_loss(
    loss: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """Weight and reduce per-pair losses ``(...)``; see the module docstring."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if weight is not None:
        if weight.dim() == loss.dim() + 1 and weight.shape[-1] == 4:
            weight = weight.mean(-1)
        loss = loss * weight
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if avg_factor is not None:
        return total / avg_factor
    return total / loss.numel() if loss.numel() > 0 else total


def convexify(value: Tensor, minimum: float = 0.0, power: float = 2.0) -> Tensor:
    """The convexification technique (CT): ``(value - minimum)^power``.

    ``value`` is any loss that decreases with the IoU and has the known minimum ``minimum``;
    with ``power > 1`` the result is non-negative and has a zero gradient at the minimum.
    ``value - minimum`` is clamped at 0 so rounding below the minimum cannot give NaN for a
    fractional power.
    """
    if power < 1:
        raise ValueError(f"power must be >= 1 (1: no CT; CT needs power > 1), got {power}")
    shifted = (value - minimum).clamp(min=0)
    return shifted if power == 1 else shifted**power


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        return value.view_as(value)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale.to(grad.dtype), None


def steady_gradient(per_pair_loss: Tensor, union: Tensor) -> Tensor:
    """The steady optimization technique (SOT, paper Eq. 28) as a gradient transform.

    Returns ``per_pair_loss`` ``(...)`` unchanged; in the backward pass the gradient of
    each pair's loss is multiplied by that pair's extended union ``union`` ``(...)`` (``U_e``,
    detached). Each pair's loss depends only on its own predicted box, so this is exactly
    "the gradient into each predicted box times ``U_e``": a gradient-descent step becomes
    proportional to the box size. The constant 2 of Eq. 28 is left to the learning rate.
    Half-precision losses are upcast first, so the scaling (by areas that can exceed
    float16's range) happens in float32.
    """
    if not per_pair_loss.requires_grad:
        return per_pair_loss
    return _ScaleGradient.apply(metrics._upcast(per_pair_loss), union.detach())


class BoxLoss(nn.Module):
    """Base class: a per-pair loss ``f >= minimum`` with CT, SOT, weights and reductions.

    Subclasses implement :meth:`elementwise` (``(..., 4), (..., 4) -> (...)``) and set
    ``input_space`` and ``minimum``.
    """

    input_space: ClassVar[str] = "boxes"
    minimum: ClassVar[float] = 0.0

    def __init__(
        self,
        *,
        power: float = 1.0,
        sot: bool = False,
        reduction: str = "mean",
        eps: float = EPS,
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if power < 1:
            raise ValueError(f"power must be >= 1 (1: no CT; CT needs power > 1), got {power}")
        if sot and self.input_space != "boxes":
            raise ValueError(
                f"{type(self).__name__} works on {self.input_space}: SOT applies to losses on "
                "boxes (the IoU family)"
            )
        self.power = float(power)
        self.sot = bool(sot)
        self.reduction = reduction
        self.eps = float(eps)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of each pair before CT, shape ``(...)``."""
        raise NotImplementedError

    def value_and_union(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor | None]:
        """:meth:`elementwise` and, if the loss computes it anyway, the pairs' ``U_e``."""
        return self.elementwise(pred, target), None

    def per_pair(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of each pair with CT and SOT applied, shape ``(...)``."""
        value, union = self.value_and_union(pred, target)
        value = convexify(value, self.minimum, self.power)
        if self.sot:
            if union is None:
                union = metrics.extended_iou_parts(pred.detach(), target.detach(), self.eps).union
            value = steady_gradient(value, union)
        return value

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        reduction: str | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Weighted, reduced loss of paired ``(..., 4)`` inputs (see the module docstring)."""
        return reduce_loss(
            self.per_pair(pred, target), weight, reduction or self.reduction, avg_factor
        )

    def extra_repr(self) -> str:
        return f"power={self.power:g}, sot={self.sot}, reduction={self.reduction!r}"


_REGISTRY: dict[str, Callable[..., BoxLoss]] = {}


def register(name: str) -> Callable[[Any], Any]:
    """Class decorator registering a :class:`BoxLoss` under ``name`` for :func:`get`."""

    def decorator(obj: Any) -> Any:
        if name in _REGISTRY:
            raise ValueError(f"a loss named {name!r} is already registered")
        _REGISTRY[name] = obj
        return obj

    return decorator


def available() -> list[str]:
    """Registered loss names."""
    return sorted(_REGISTRY)


def _import_dotted(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for loss {path!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from exc


def get(name: str, **options: Any) -> BoxLoss:
    """Build a loss by registry name or dotted import path, with its options.

    Examples:
        ``get("eiou", power=2, sot=True)`` is Smooth-EIoU with SOT (Table I row 7);
        ``get("smooth_l1", beta=1 / 9)``; ``get("my_pkg.my_loss", scale=2.0)``.
    """
    if name in _REGISTRY:
        return _REGISTRY[name](**options)
    if "." in name:
        obj = _import_dotted(name)
        if isinstance(obj, type):
            loss = obj(**options)
        elif callable(obj):
            loss = FunctionLoss(obj, **options)
        else:
            raise ValueError(f"{name!r} is neither a class nor a function")
        if not callable(loss):
            raise ValueError(f"{name!r} did not build a callable loss")
        return loss
    raise ValueError(
        f"unknown loss {name!r}: use one of {available()} or a dotted import path "
        "such as 'my_package.my_module.my_loss'"
    )


@register("smooth_l1")
class SmoothL1Loss(BoxLoss):
    """Smooth-L1 on encoded offsets, summed over the 4 coordinates of each pair.

    ``beta`` is the quadratic-to-linear transition; 1/9 is torchvision's Faster R-CNN
    default (Detectron used 1 for the box head and 1/9 for RPN and RetinaNet).
    """

    input_space = "offsets"

    def __init__(self, *, beta: float = 1.0 / 9, **options: Any) -> None:
        super().__init__(**options)
        self.beta = float(beta)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        diff = metrics._upcast(pred) - metrics._upcast(target)
        if self.beta == 0:
            return diff.abs().sum(-1)
        return nn.functional.smooth_l1_loss(
            diff, torch.zeros_like(diff), reduction="none", beta=self.beta
        ).sum(-1)


@register("iou")
class IoULoss(BoxLoss):
    """Standard IoU loss (Table I row 2): ``-ln IoU`` (UnitBox, ``mode="log"``) or ``1 - IoU``.

    In ``"log"`` mode the IoU is clamped at ``eps`` so separated boxes give the finite
    value ``-ln eps`` with zero gradient: the plateau the paper criticises.
    """

    def __init__(self, *, mode: str = "log", **options: Any) -> None:
        super().__init__(**options)
        if mode not in ("log", "linear"):
            raise ValueError(f"mode must be 'log' or 'linear', got {mode!r}")
        self.mode = mode

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        value = metrics.iou(pred, target, self.eps)
        return -torch.log(value.clamp(min=self.eps)) if self.mode == "log" else 1 - value


@register("giou")
class GIoULoss(BoxLoss):
    """``1 - GIoU`` (Rezatofighi et al. 2019), in ``[0, 2)``."""

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return 1 - metrics.giou(pred, target, self.eps)


@register("diou")
class DIoULoss(BoxLoss):
    """``1 - DIoU`` (Zheng et al. 2020)."""

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return 1 - metrics.diou(pred, target, self.eps)


@register("ciou")
class CIoULoss(BoxLoss):
    """``1 - CIoU`` (Zheng et al. 2020), ``alpha`` without gradient."""

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return 1 - metrics.ciou(pred, target, self.eps)


@register("eiou")
class EIoULoss(BoxLoss):
    """``1 - EIoU`` (Table I row 5); with ``power=2`` the Smooth-EIoU loss of Eq. 23.

    ``1 - EIoU`` is ``-EIoU`` shifted by its minimum -1 (CT step (i)), in ``[0, 2)``.
    ``gradient`` selects the exact derivative (``"autograd"``) or Appendix A (``"paper"``).
    """

    def __init__(self, *, gradient: str = "autograd", **options: Any) -> None:
        super().__init__(**options)
        if gradient not in GRADIENT_MODES:
            raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
        self.gradient = gradient

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return 1 - metrics.eiou(pred, target, self.eps)

    def value_and_union(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor | None]:
        parts = metrics.extended_iou_parts(pred, target, self.eps)
        return 1 - parts.value, parts.union.detach()

    def per_pair(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.gradient == "paper":
            return _PaperEIoULoss.apply(pred, target, self.power, self.sot, self.eps)
        return super().per_pair(pred, target)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gradient={self.gradient!r}"


@register("smooth_eiou")
class SmoothEIoULoss(EIoULoss):
    """Smooth-EIoU (Eq. 23): :class:`EIoULoss` with ``power=2`` by default."""

    def __init__(self, *, power: float = 2.0, **options: Any) -> None:
        super().__init__(power=power, **options)


class FunctionLoss(BoxLoss):
    """A user's elementwise function ``f(pred, target, **kwargs) -> (...)`` as a BoxLoss.

    ``input_space`` (``"boxes"`` or ``"offsets"``) and ``minimum`` describe ``f``; the
    standard options (``power``, ``sot``, ``reduction``, ``eps``) are taken here and every
    other keyword is passed to ``f``.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        *,
        input_space: str = "boxes",
        minimum: float = 0.0,
        power: float = 1.0,
        sot: bool = False,
        reduction: str = "mean",
        eps: float = EPS,
        **kwargs: Any,
    ) -> None:
        if input_space not in ("boxes", "offsets"):
            raise ValueError(f"input_space must be 'boxes' or 'offsets', got {input_space!r}")
        self.input_space = input_space  # type: ignore[misc]
        self.minimum = float(minimum)  # type: ignore[misc]
        super().__init__(power=power, sot=sot, reduction=reduction, eps=eps)
        self.fn = fn
        self.kwargs = kwargs

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.fn(pred, target, **self.kwargs)

    def extra_repr(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"fn={name}, {super().extra_repr()}"


class _PaperEIoULoss(torch.autograd.Function):
    """``(1 - EIoU)^power`` with the Appendix-A gradient, optionally SOT-scaled, fused.

    Forward computes the loss and, from the same intermediates, its gradient with respect
    to the predicted corners (Eq. 33-44; Eq. 44's ``U_g`` read as ``U_e``); backward only
    multiplies that stored gradient by the incoming one. ``target`` gets no gradient.
    Inverted predictions follow :mod:`eiou.metrics` (zero area, corners as given, ``x0``
    the leftmost of all four corners, a strip per inversion); the motion of ``x0`` with an
    inverted ``x2_p`` and the strips are differentiated (see the module docstring). On a kink
    (a shared edge, touching boxes, a zero width) each coordinate gets the one-sided
    derivative towards overlap, inside the target and a non-inverted prediction.
    Written with in-place operations: on large inputs the cost is memory traffic.
    """

    @staticmethod
    def forward(
        ctx: Any, pred: Tensor, target: Tensor, power: float, sot: bool, eps: float
    ) -> Tensor:
        c = metrics._corners(pred, target)
        g = metrics._extended_geometry(c)
        inter, union = g.intersection, g.union
        union_eps = union + eps
        value = inter / union_eps
        one_minus = torch.rsub(value, 1).clamp_(min=0)
        loss = one_minus if power == 1 else one_minus**power
        if not ctx.needs_input_grad[0]:
            return loss
        # Eq. 33-36, dI_e/d(x1_p, y1_p, x2_p, y2_p), with corners measured from (x0, y0):
        #   x1_p: [x1_p >= x1_t] (y_min - y_max        if x1 <= x2 else 2 y0 - y_max - y1)
        #   x2_p: [x2_p <= x2_t] (y2 - y1              if x1 <= x2 else y2 + y_min - 2 y0)
        # i.e. -dy_max + (dy_min | -dy1) and dy2 + (-dy1 | dy_min); y likewise.
        overlap_x, overlap_y = g.dx1 <= g.dx2, g.dy1 <= g.dy2
        neg_dy1, neg_dx1 = g.dy1.neg(), g.dx1.neg()
        d_x1 = torch.where(overlap_x, g.dy_min, neg_dy1).sub_(g.dy_max).mul_(c.px1 >= c.tx1)
        d_y1 = torch.where(overlap_y, g.dx_min, neg_dx1).sub_(g.dx_max).mul_(c.py1 >= c.ty1)
        # Inverted predictions: x0 = min(x1_t, x1_p, x2_t, x2_p) (eiou.metrics). Appendix A
        # holds Eq. 10's min(x1_t, x1_p); where x2_p is the leftmost corner, x0 = x2_p moves
        # with it and that motion is differentiated: dI_e/dx0 = 2 max(y1 - y2, 0)
        # = 2 (y_max - y2). Such a pair is apart along x (x1 >= x1_p > x2_p >= x2), so it adds
        # to the second branch; elsewhere it adds +0, which leaves every other pair's
        # gradient bit for bit.
        lead_x = c.px2 < torch.minimum(torch.minimum(c.px1, c.tx1), c.tx2)
        lead_y = c.py2 < torch.minimum(torch.minimum(c.py1, c.ty1), c.ty2)
        moves_x0 = torch.add(g.dy_min, torch.where(lead_x, g.dy_max - g.dy2, 0.0), alpha=2)
        moves_y0 = torch.add(g.dx_min, torch.where(lead_y, g.dx_max - g.dx2, 0.0), alpha=2)
        d_x2 = torch.where(overlap_x, neg_dy1, moves_x0).add_(g.dy2).mul_(c.px2 <= c.tx2)
        d_y2 = torch.where(overlap_y, neg_dx1, moves_y0).add_(g.dx2).mul_(c.py2 <= c.ty2)
        # The inversion strips of eiou.metrics, I_e -= (x1_p - x2_p)^+ h_t + (y1_p - y2_p)^+ w_t
        # + (x1_t - x2_t)^+ h_p + (y1_t - y2_t)^+ w_p: dI_e/dx2_p = -dI_e/dx1_p
        # = h_t [x1_p > x2_p] - (y1_t - y2_t)^+ [x2_p > x1_p]. Both parts are +0 for proper
        # boxes; subtracting +0 keeps every bit (even -0.0), so they are subtracted.
        wp, hp, wt, ht = g.sizes
        _, _, inv_tx, inv_ty = g.inversions
        strip_px = torch.where(c.px1 > c.px2, ht, 0.0)
        strip_tx = torch.where(c.px2 > c.px1, inv_ty, 0.0)
        strip_py = torch.where(c.py1 > c.py2, wt, 0.0)
        strip_ty = torch.where(c.py2 > c.py1, inv_tx, 0.0)
        d_x1.sub_(strip_px - strip_tx)
        d_x2.sub_(strip_tx - strip_px)
        d_y1.sub_(strip_py - strip_ty)
        d_y2.sub_(strip_ty - strip_py)
        # Eq. 37-40: dU_e = dS_p - dI_e with S_p = max(w_p, 0) max(h_p, 0), so
        # dS_p = (-h, -w, h, w) where the box is not inverted along that axis.
        hp.mul_(c.px2 >= c.px1)
        wp.mul_(c.py2 >= c.py1)
        # Eq. 41-44 and the chain rule: dL/dz = f'(E) (dI - E dU) / U_e
        #   = f'(E) / U_e * (dI (1 + E) - E dS), with f'(E) = -power (1 - E)^(power - 1),
        # times U_e under SOT (Eq. 28).
        if power == 1:
            scale = union_eps.reciprocal().neg_()
        else:
            scale = one_minus.pow(power - 1).mul_(-power).div_(union_eps)
        if sot:
            scale.mul_(union)
        one_plus = value + 1
        hp.mul_(value)
        wp.mul_(value)
        grad = value.new_empty((*value.shape, 4))
        torch.mul(d_x1.mul_(one_plus).add_(hp), scale, out=grad[..., 0])
        torch.mul(d_y1.mul_(one_plus).add_(wp), scale, out=grad[..., 1])
        torch.mul(d_x2.mul_(one_plus).sub_(hp), scale, out=grad[..., 2])
        torch.mul(d_y2.mul_(one_plus).sub_(wp), scale, out=grad[..., 3])
        ctx.save_for_backward(grad)
        ctx.pred_dtype = pred.dtype
        ctx.pred_shape = pred.shape
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        (grad,) = ctx.saved_tensors
        grad_pred = (grad * grad_output.unsqueeze(-1)).sum_to_size(ctx.pred_shape)
        return grad_pred.to(ctx.pred_dtype), None, None, None, None
