"""EIoU for predictions inverted along one axis, both axes or neither (eiou.metrics' extension).

Each property is the one the module docstring of :mod:`eiou.metrics` states, checked over
predictions drawn inverted along x, y, both or neither around targets of positive area, for
every loss of the EIoU family (``eiou``, ``smooth_eiou``; CT powers 1, 1.5, 2; with and
without SOT; both gradient modes). The bounds are computed here from the corners alone.
"""

from __future__ import annotations

import pytest
import torch
from conftest import box_pairs
from hypothesis import given, settings
from hypothesis import strategies as st

from eiou import losses, metrics

#: Which axes of the prediction are inverted: (along x, along y).
CONFIGURATIONS = {
    "neither": (False, False),
    "x": (True, False),
    "y": (False, True),
    "both": (True, True),
}

#: Every loss of the EIoU family: (name, options).
VARIANTS = [
    (name, {"power": power, "sot": sot, "gradient": gradient})
    for name, power in (("eiou", 1.0), ("eiou", 1.5), ("smooth_eiou", 2.0))
    for sot in (False, True)
    for gradient in ("autograd", "paper")
]
VARIANT_IDS = [
    f"{name}-p{o['power']:g}-{'sot' if o['sot'] else 'nosot'}-{o['gradient']}"
    for name, o in VARIANTS
]

coordinate = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False)
target_size = st.floats(0.5, 20.0, allow_nan=False, allow_infinity=False)


@st.composite
def axis(draw, inverted: bool) -> tuple[float, float, float, float]:
    """``(p1, p2, t1, t2)`` along one axis: a target ``[t1, t2]`` and a prediction that is
    inverted (``p2 < p1``) or proper, anywhere from two target sizes before to three after."""
    t1 = draw(coordinate)
    t2 = t1 + draw(target_size)
    size = t2 - t1
    low = t1 + draw(st.floats(-2.0, 3.0)) * size
    extent = draw(st.floats(0.01, 3.0)) * size
    return (low + extent, low, t1, t2) if inverted else (low, low + extent, t1, t2)


@st.composite
def pairs(draw, configuration: str, n_max: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred, target)`` float64 ``(n, 4)`` whose predictions are inverted as named."""
    inverted_x, inverted_y = CONFIGURATIONS[configuration]
    rows = []
    for _ in range(draw(st.integers(1, n_max))):
        px1, px2, tx1, tx2 = draw(axis(inverted_x))
        py1, py2, ty1, ty2 = draw(axis(inverted_y))
        rows.append(((px1, py1, px2, py2), (tx1, ty1, tx2, ty2)))
    pred = torch.tensor([p for p, _ in rows], dtype=torch.float64)
    target = torch.tensor([t for _, t in rows], dtype=torch.float64)
    return pred, target


def _target_area(target: torch.Tensor) -> torch.Tensor:
    return (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])


def _spans(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Span of the four x-corners and of the four y-corners of each pair."""
    xs = torch.stack([pred[:, 0], pred[:, 2], target[:, 0], target[:, 2]])
    ys = torch.stack([pred[:, 1], pred[:, 3], target[:, 1], target[:, 3]])
    return xs.amax(0) - xs.amin(0), ys.amax(0) - ys.amin(0)


def _magnitude(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scale of each pair's coordinates: rounding errors of areas grow with its square."""
    return 1.0 + torch.cat([pred, target], dim=1).abs().amax(1)


def _gradient(name: str, options: dict, pred: torch.Tensor, target: torch.Tensor):
    p = pred.clone().requires_grad_()
    loss = losses.get(name, reduction="none", **options)(p, target)
    (grad,) = torch.autograd.grad(loss.sum(), p)
    return loss.detach(), grad


# --------------------------------------------------------------------------- values
@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
@given(data=st.data())
def test_union_covers_the_target_and_eiou_stays_in_range(configuration, data):
    """``U_e >= S_t > 0``, EIoU in ``(-1, 1]``, and ``I_e <= 0``, ``EIoU <= 0`` when inverted."""
    pred, target = data.draw(pairs(configuration))
    parts = metrics.extended_iou_parts(pred, target)
    area_t = _target_area(target)
    tolerance = 1e-12 * _magnitude(pred, target) ** 2
    assert (parts.union >= area_t - tolerance).all() and (parts.union > 0).all()
    assert (parts.value > -1).all() and (parts.value <= 1).all()
    assert torch.isfinite(parts.value).all()
    if configuration != "neither":
        assert (parts.intersection <= 0).all() and (parts.value <= 0).all()
        # separated: the extended union is the two areas plus the intersection's magnitude
        assert torch.allclose(parts.union, area_t - parts.intersection, rtol=1e-12)


def test_collapsed_prediction_inverted_along_y_is_no_plateau():
    """Zero width on the target's left edge, inverted along y by 3 below it: Eq. 16 (with
    x0, y0 over all corners) gives I_e = 0 however far it is inverted, EIoU's largest value
    for an inverted prediction, with no gradient into y. The strip 3 x w_t charges it."""
    target = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    flat = torch.tensor([[0.0, 8.0, 0.0, 5.0]], dtype=torch.float64, requires_grad=True)
    parts = metrics.extended_iou_parts(flat, target)
    assert parts.intersection.item() == pytest.approx(-6.0)
    assert parts.value.item() == pytest.approx(-6.0 / 10.0)
    (grad,) = torch.autograd.grad(parts.value.sum(), flat)
    assert grad[0, 1] < 0 and grad[0, 3] > 0  # ascent on EIoU unflips y1 and y2


def _eq16_as_it_stood(pred: torch.Tensor, target: torch.Tensor, hold: bool = False):
    """Eq. 10-22 with Eq. 10's ``x0 = min(x1_t, x1_p)``, operation for operation as the
    library computed it before the extension; ``hold``: ``x0``, ``y0`` without gradient
    (Appendix A)."""
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    x0, y0 = torch.minimum(px1, tx1), torch.minimum(py1, ty1)
    if hold:
        x0, y0 = x0.detach(), y0.detach()
    dx1 = torch.maximum(px1, tx1) - x0
    dy1 = torch.maximum(py1, ty1) - y0
    dx2 = torch.minimum(px2, tx2) - x0
    dy2 = torch.minimum(py2, ty2) - y0
    dx_min, dx_max = torch.minimum(dx1, dx2), torch.maximum(dx1, dx2)
    dy_min, dy_max = torch.minimum(dy1, dy2), torch.maximum(dy1, dy2)
    inter = dx2 * dy2 + dx_min * dy_min - dx1 * dy_max - dx_max * dy1
    area_p = (px2 - px1).clamp(min=0) * (py2 - py1).clamp(min=0)
    area_t = (tx2 - tx1).clamp(min=0) * (ty2 - ty1).clamp(min=0)
    union = area_t + area_p - inter
    return inter / (union + metrics.EPS), inter, union


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int64)


@given(box_pairs(n_min=1, n_max=12, min_value=-1e3, max_value=1e3, min_size=1e-3))
def test_proper_boxes_are_unchanged_bit_for_bit(pair):
    """Values and losses bit for bit; autograd gradients too, except on ties between the
    corners that min/max compare, where autograd adds the halves of a subgradient in another
    order (seen: 1e-13 of the largest component). (That the paper gradient is still
    Appendix A on proper boxes: tests/test_eiou_reference.py.)"""
    pred, target = pair
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    ties = (px1 == tx1) | (py1 == ty1) | (px2 == tx2) | (py2 == ty2)
    ties |= (torch.maximum(px1, tx1) == torch.minimum(px2, tx2)) | (
        torch.maximum(py1, ty1) == torch.minimum(py2, ty2)
    )
    before = _eq16_as_it_stood(pred, target)
    for got, expected in zip(metrics.extended_iou_parts(pred, target), before, strict=True):
        assert torch.equal(_bits(got), _bits(expected))
    union = before[2]
    for power in (1.0, 2.0):
        for sot in (False, True):
            p = pred.clone().requires_grad_()
            old = (1 - _eq16_as_it_stood(p, target)[0]).clamp(min=0) ** power
            (expected_grad,) = torch.autograd.grad((old * (union if sot else 1.0)).sum(), p)
            for gradient in ("autograd", "paper"):
                options = {"power": power, "sot": sot, "gradient": gradient}
                loss, grad = _gradient("eiou", options, pred, target)
                assert torch.equal(_bits(loss), _bits(old.detach()))
                if gradient == "autograd":
                    assert torch.equal(grad[~ties], expected_grad[~ties])
                    scale = expected_grad.abs().max().item()
                    assert torch.allclose(grad, expected_grad, rtol=1e-9, atol=1e-9 * scale)


# --------------------------------------------------------------------------- gradients
def _gradient_bound(pred: torch.Tensor, target: torch.Tensor, power: float, sot: bool):
    """Per pair and coordinate, the bound of the module docstring of eiou.metrics:
    ``|dEIoU/dz| <= 11 D / S_t`` (``D`` the span of the corners along the other axis), times
    ``power 2^(power - 1)`` for CT's ``(1 - EIoU)^power``; with SOT ``11 D`` times that."""
    span_x, span_y = _spans(pred, target)
    other = torch.stack([span_y, span_x, span_y, span_x], -1)
    ct = power * 2 ** (power - 1)
    bound = 11 * ct * other
    return bound if sot else bound / _target_area(target)[:, None]


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=VARIANT_IDS)
@given(data=st.data())
def test_gradients_are_bounded(configuration, name, options, data):
    pred, target = data.draw(pairs(configuration))
    loss, grad = _gradient(name, options, pred, target)
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    assert (loss <= 2 ** options["power"]).all()  # (1 - EIoU)^power with EIoU in (-1, 1]
    bound = _gradient_bound(pred, target, options["power"], options["sot"])
    assert (grad.abs() <= bound * (1 + 1e-9) + 1e-12).all(), (grad, bound)


@pytest.mark.parametrize("configuration", ["x", "y", "both"])
@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=VARIANT_IDS)
@given(data=st.data())
def test_each_gradient_step_shrinks_the_inversion(configuration, name, options, data):
    """Along an inverted axis, ``dL/dx1_p - dL/dx2_p >= power 2 h_t (1 + E) / (U_e + eps)``
    (times ``U_e`` with SOT) for ``L = (1 - E)^power``: gradient descent unflips it."""
    pred, target = data.draw(pairs(configuration))
    _, grad = _gradient(name, options, pred, target)
    parts = metrics.extended_iou_parts(pred, target)
    rate = options["power"] * (1 + parts.value) / (parts.union + metrics.EPS)
    if options["sot"]:
        rate = rate * parts.union
    for axis_index, inverted in enumerate(CONFIGURATIONS[configuration]):
        if not inverted:
            continue
        # the target's extent along the other axis
        other = target[:, 3 - axis_index] - target[:, 1 - axis_index]
        shrink = grad[:, axis_index] - grad[:, axis_index + 2]
        assert (shrink >= 2 * other * rate * (1 - 1e-9)).all(), (shrink, other, rate)


@pytest.mark.parametrize("other_axis", ["proper", "inverted"])
@pytest.mark.parametrize("flip_axis", [0, 1])
@given(data=st.data(), step=st.floats(1e-9, 1e-2))
def test_continuous_at_the_flip(flip_axis, other_axis, data, step):
    """A zero-width (zero-height) prediction: moving either corner by ``step`` to either
    side changes EIoU by at most the gradient bound times ``step``."""
    configuration = {0: ("neither", "y"), 1: ("neither", "x")}[flip_axis][other_axis == "inverted"]
    pred, target = data.draw(pairs(configuration))
    pred[:, flip_axis + 2] = pred[:, flip_axis]  # zero size along the flip axis
    flat = metrics.eiou(pred, target)
    lipschitz = _gradient_bound(pred, target, 1.0, False)[:, flip_axis]
    for corner in (flip_axis, flip_axis + 2):
        for sign in (1.0, -1.0):  # one of the two makes it inverted, the other proper
            moved = pred.clone()
            moved[:, corner] += sign * step * (target[:, flip_axis + 2] - target[:, flip_axis])
            change = (metrics.eiou(moved, target) - flat).abs()
            distance = (moved[:, corner] - pred[:, corner]).abs()
            assert (change <= lipschitz * distance * (1 + 1e-9) + 1e-12).all()


# --------------------------------------------------------------------------- descent
@st.composite
def doubly_inverted(draw, n_max: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of size 0.5..2 (the anchor-normalised frame) and predictions inverted along
    both axes by 0.001..2 target sizes, their corners from one size before to two after."""
    rows = []
    for _ in range(draw(st.integers(1, n_max))):
        box, start = [], []
        for _axis in range(2):
            t1, size = draw(st.floats(-5.0, 5.0)), draw(st.floats(0.5, 2.0))
            low = t1 + draw(st.floats(-1.0, 2.0)) * size
            box.append((t1, t1 + size))
            start.append((low + draw(st.floats(0.001, 2.0)) * size, low))
        (tx1, tx2), (ty1, ty2) = box
        (px1, px2), (py1, py2) = start
        rows.append(((px1, py1, px2, py2), (tx1, ty1, tx2, ty2)))
    pred = torch.tensor([p for p, _ in rows], dtype=torch.float64)
    return pred, torch.tensor([t for _, t in rows], dtype=torch.float64)


#: Iterations allowed to unflip; on 40000 seeded starts of :func:`doubly_inverted` the
#: slowest variant (``eiou`` without CT or SOT) needed at most 254.
MAX_STEPS = 1000


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=VARIANT_IDS)
@settings(max_examples=20)
@given(start=doubly_inverted())
def test_gradient_descent_unflips_a_doubly_inverted_prediction(name, options, start):
    """Plain gradient descent, lr 0.1 with SOT (the toy experiments' rate) and 1 without
    (the gradient is then smaller by ``U_e``, about the target's area here)."""
    pred, target = start
    loss_fn = losses.get(name, reduction="sum", **options)
    lr = 0.1 if options["sot"] else 1.0
    unflipped = torch.zeros(len(pred), dtype=torch.bool)
    for _ in range(MAX_STEPS):
        p = pred.clone().requires_grad_()
        (grad,) = torch.autograd.grad(loss_fn(p, target), p)
        pred = pred - lr * grad
        assert torch.isfinite(pred).all()
        unflipped |= (pred[:, 2] >= pred[:, 0]) & (pred[:, 3] >= pred[:, 1])
        if unflipped.all():
            break
    assert unflipped.all(), (pred, target)
