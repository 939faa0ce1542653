"""The extended IoU against an independent float64 reference of the paper's Eqs. 10-22.

The reference below is written from the paper, case by case as Sec. III-B derives it
(Eq. 17-20, Fig. 2 (a)-(d)), in plain Python floats; it shares no code with
:mod:`eiou.metrics`, whose Eq. 16 is one branch-free formula. The boxes are drawn by
hypothesis per configuration of Fig. 2 (overlapping, one box inside the other, apart along
x, along y, along both, touching, inverted and zero-size predictions), and each drawn pair
is checked to be in the configuration it was drawn for.

Inverted boxes, which the paper does not consider, follow the extension documented in
:mod:`eiou.metrics`, written here again from its statement: ``x0`` (``y0``) the leftmost
(topmost) of all four corners, and each inversion charged as a strip of the other box.

Gradients: autograd against central finite differences of the reference, away from the
kinks of ``min``/``max`` (ties between corners, touching boxes, zero sizes), with and
without CT and SOT. The ``paper`` gradient (Appendix A) is the derivative with Eq. 10-11's
``min(x1_t, x1_p)`` and ``min(y1_t, y1_p)`` held fixed (an inverted prediction's own part
of ``x0`` still moves): checked as such on every configuration, and equal to autograd
wherever NOTES.md says they must agree.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import assume, event, given
from hypothesis import strategies as st

from eiou import losses, metrics

Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------- the reference
def reference_parts(pred: Box, target: Box, x0: float | None = None, y0: float | None = None):
    """``(I_e, U_e)`` of one pair by Eq. 1-4, 10-15, the case analysis of Eq. 17-20, and 21.

    ``x0``/``y0`` given: Eq. 10-11's ``min(x1_t, x1_p)`` (``min(y1_t, y1_p)``) is held at
    that value (the paper's Appendix A differentiates as if it were a constant). Inverted
    boxes (``x2 < x1``), which the paper does not consider, follow the library's documented
    extension: zero area, corners used as given, ``x0`` the leftmost of all four corners
    (for valid boxes that is Eq. 10's ``min(x1_t, x1_p)``), so that an inverted prediction
    is separated from its target, and ``I_e`` less a strip for each inversion: the
    inversion times the other box's (clamped) extent along the other axis.
    """
    px1, py1, px2, py2 = pred
    tx1, ty1, tx2, ty2 = target
    x1, y1 = max(tx1, px1), max(ty1, py1)  # Eq. 1-2
    x2, y2 = min(tx2, px2), min(ty2, py2)  # Eq. 3-4
    x0 = min(min(tx1, px1) if x0 is None else x0, tx2, px2)  # Eq. 10, over every corner
    y0 = min(min(ty1, py1) if y0 is None else y0, ty2, py2)  # Eq. 11
    x_min, x_max = min(x1, x2), max(x1, x2)  # Eq. 12, 14
    y_min, y_max = min(y1, y2), max(y1, y2)  # Eq. 13, 15
    if x1 <= x2 and y1 <= y2:  # Fig. 2(a), Eq. 17
        inter = (x_max - x_min) * (y_max - y_min)
    elif x1 > x2 and y1 <= y2:  # Fig. 2(b), Eq. 18
        inter = (x_min - x_max) * (y_max - y0) + (x_min - x_max) * (y_min - y0)
    elif x1 <= x2 and y1 > y2:  # Fig. 2(c), Eq. 19
        inter = (x_max - x0) * (y_min - y_max) + (x_min - x0) * (y_min - y_max)
    else:  # Fig. 2(d), Eq. 20
        inter = 2 * ((x_min - x0) * (y_min - y0) - (x_max - x0) * (y_max - y0))
    w_t, h_t = max(tx2 - tx1, 0.0), max(ty2 - ty1, 0.0)
    w_p, h_p = max(px2 - px1, 0.0), max(py2 - py1, 0.0)
    # the strips of inverted boxes, each box's inversion against the other box's extent
    for (first, second), extent in (
        ((px1, px2), h_t),
        ((py1, py2), w_t),
        ((tx1, tx2), h_p),
        ((ty1, ty2), w_p),
    ):
        if second < first:
            inter -= (first - second) * extent
    area_t = w_t * h_t  # Eq. 6
    area_p = w_p * h_p  # Eq. 7
    return inter, area_t + area_p - inter  # Eq. 21


def reference_eiou(pred: Box, target: Box, eps: float = metrics.EPS, **frozen: float) -> float:
    """Eq. 22 with the library's documented ``eps`` in the denominator."""
    inter, union = reference_parts(pred, target, **frozen)
    return inter / (union + eps)


def reference_loss(pred: Box, target: Box, power: float, **frozen: float) -> float:
    """``(1 - EIoU)^power`` (CT; ``power = 1`` is Table I's EIoU loss)."""
    return (1.0 - reference_eiou(pred, target, **frozen)) ** power


def finite_difference(fn, pred: Box, h: float = 1e-6) -> list[float]:
    """Central differences of ``fn(pred)`` in each predicted coordinate."""
    grad = []
    for i in range(4):
        up, down = list(pred), list(pred)
        up[i] += h
        down[i] -= h
        grad.append((fn(tuple(up)) - fn(tuple(down))) / (2 * h))
    return grad


def test_reference_reproduces_the_hand_worked_cases_of_fig_2():
    """The reference itself, on boxes worked by hand (so a wrong reference cannot pass)."""
    unit = (0.0, 0.0, 1.0, 1.0)
    assert reference_parts((0.5, 0.5, 1.5, 1.5), unit) == (0.25, 1.75)  # (a) I = 1/4
    assert reference_parts((2.0, 0.0, 3.0, 1.0), unit) == (-1.0, 3.0)  # (b) gap 1, rows 0..1
    assert reference_parts((0.0, 2.0, 1.0, 3.0), unit) == (-1.0, 3.0)  # (c) transposed
    assert reference_parts((2.0, 2.0, 3.0, 3.0), unit) == (-6.0, 8.0)  # (d) 2 (1*1 - 2*2)
    assert reference_parts((1.0, 0.0, 2.0, 1.0), unit) == (0.0, 2.0)  # touching
    # (d) with unequal gaps, worked from Eq. 20: x0 = y0 = 0, x_min = 1, y_min = 1,
    # x_max = 3, y_max = 2: I = 2 (1 - 6) = -10, U = 1 + 4 + 10
    assert reference_parts((3.0, 2.0, 5.0, 4.0), unit) == (-10.0, 15.0)
    # Inverted along x inside the unit box's rows: x0 = 0, x_min = 0.25, x_max = 0.75,
    # (b) gives (0.25 - 0.75)(1 + 0) = -0.5; the strip is 0.5 x 1: I = -1, U = 1 + 0 + 1.
    assert reference_parts((0.75, 0.0, 0.25, 1.0), unit) == (-1.0, 2.0)
    # Inverted along both, left of and above the unit box: x0 = -2, y0 = -1, (d) gives
    # 2 ((x_min - x0)(y_min - y0) - (x_max - x0)(y_max - y0)) = 2 (0 - 2 * 1) = -4;
    # strips 1 x 1 + 0.5 x 1: I = -5.5, U = 1 + 0 + 5.5.
    assert reference_parts((-1.0, -0.5, -2.0, -1.0), unit) == (-5.5, 6.5)
    # Zero width on the left edge, inverted along y by 2 below: Eq. 19 gives 0 whatever
    # the inversion; the strip is 2 x 1.
    assert reference_parts((0.0, 5.0, 0.0, 3.0), unit) == (-2.0, 3.0)


# --------------------------------------------------------------------------- boxes per Fig. 2
OVERLAP = ("partial", "pred_inside", "target_inside", "identical")
APART = ("apart",)
TOUCHING = ("touching",)
DEGENERATE = ("inverted", "zero_size")

#: Fig. 2's configurations as (relations along x, relations along y).
CONFIGURATIONS = {
    "a_overlapping": (OVERLAP, OVERLAP),
    "a_contained": (("pred_inside",), ("pred_inside",)),
    "a_containing": (("target_inside",), ("target_inside",)),
    "b_apart_along_x": (APART, OVERLAP),
    "c_apart_along_y": (OVERLAP, APART),
    "d_apart_along_both": (APART, APART),
    "touching_edge_or_corner": (TOUCHING, OVERLAP + TOUCHING),
    "touching_along_x_apart_along_y": (TOUCHING, APART),
    "inverted_prediction": (DEGENERATE, OVERLAP + APART + TOUCHING + DEGENERATE),
}

coordinate = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False)
length = st.floats(0.1, 50.0, allow_nan=False, allow_infinity=False)
fraction = st.floats(0.05, 0.95, allow_nan=False)
factor = st.floats(0.05, 3.0, allow_nan=False)


@st.composite
def intervals(draw, relation: str) -> tuple[float, float, float, float]:
    """``(c, d, a, b)``: the prediction's interval ``[c, d]`` and the target's ``[a, b]``
    along one axis, in the named relation (at the lower or the upper end of ``[a, b]``)."""
    a = draw(coordinate)
    b = a + draw(length)
    size = b - a
    before = draw(st.booleans())
    if relation == "partial":  # each holds one end of the other
        inner, outer = a + draw(fraction) * size, draw(factor) * size
        c, d = (a - outer, inner) if before else (inner, b + outer)
    elif relation == "pred_inside":
        lo, hi = sorted((draw(fraction), draw(fraction)))
        assume(hi - lo > 0.01)
        c, d = a + lo * size, a + hi * size
    elif relation == "target_inside":
        c, d = a - draw(factor) * size, b + draw(factor) * size
    elif relation == "identical":
        c, d = a, b
    elif relation == "apart":
        gap, other = draw(factor) * size, draw(length)
        c, d = (a - gap - other, a - gap) if before else (b + gap, b + gap + other)
    elif relation == "touching":
        other = draw(length)
        c, d = (a - other, a) if before else (b, b + other)
    elif relation == "inverted":  # x2 < x1 anywhere near the target
        c = a + draw(st.floats(-1.0, 2.0)) * size
        d = c - draw(factor) * size
    elif relation == "zero_size":
        c = d = a + draw(st.floats(-1.0, 2.0)) * size
    else:  # pragma: no cover - a typo in CONFIGURATIONS
        raise ValueError(relation)
    return c, d, a, b


def _relation(c: float, d: float, a: float, b: float) -> str:
    """The relation of ``[c, d]`` to ``[a, b]``, recomputed from the numbers."""
    if d < c:
        return "inverted"
    if d == c:
        return "zero_size"
    if (c, d) == (a, b):
        return "identical"
    if d < a or c > b:
        return "apart"
    if d == a or c == b:
        return "touching"
    if a < c and d < b:
        return "pred_inside"
    if c <= a and b <= d:
        return "target_inside"
    return "partial"


@st.composite
def fig2_pairs(draw, relations: tuple[tuple[str, ...], ...], n_max: int = 8):
    """Pairs ``(pred, target)`` whose relations along x and y are drawn from
    ``relations = (along x, along y)``, each verified from the numbers."""
    x_relations, y_relations = relations
    pairs: list[tuple[Box, Box]] = []
    for _ in range(draw(st.integers(1, n_max))):
        rx, ry = draw(st.sampled_from(x_relations)), draw(st.sampled_from(y_relations))
        cx, dx, ax, bx = draw(intervals(rx))
        cy, dy, ay, by = draw(intervals(ry))
        got = (_relation(cx, dx, ax, bx), _relation(cy, dy, ay, by))
        # rounding may turn a drawn relation into a neighbouring one: keep only exact draws
        assume(got == (rx, ry))
        event(f"{rx} x {ry}")
        pairs.append(((cx, cy, dx, dy), (ax, ay, bx, by)))
    return pairs


def _tensors(pairs: list[tuple[Box, Box]]) -> tuple[torch.Tensor, torch.Tensor]:
    pred = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
    target = torch.tensor([t for _, t in pairs], dtype=torch.float64)
    return pred, target


def _magnitude(pred: Box, target: Box) -> float:
    """Scale of the pair's coordinates: rounding errors of areas grow with its square."""
    return 1.0 + max(abs(v) for v in (*pred, *target))


# --------------------------------------------------------------------------- values
@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
@given(data=st.data())
def test_eiou_parts_match_the_reference(configuration: str, data) -> None:
    pairs = data.draw(fig2_pairs(CONFIGURATIONS[configuration], n_max=12))
    pred, target = _tensors(pairs)
    parts = metrics.extended_iou_parts(pred, target)
    exact = metrics.extended_iou_parts(pred, target, eps=0.0)
    value = metrics.eiou(pred, target)
    for i, (p, t) in enumerate(pairs):
        inter, union = reference_parts(p, t)
        area_tol = 1e-12 * _magnitude(p, t) ** 2
        assert parts.intersection[i].item() == pytest.approx(inter, rel=1e-9, abs=area_tol)
        assert parts.union[i].item() == pytest.approx(union, rel=1e-9, abs=area_tol)
        expected = inter / (union + metrics.EPS)
        value_tol = area_tol / (union + metrics.EPS) + 1e-15
        assert value[i].item() == pytest.approx(expected, rel=1e-9, abs=value_tol)
        assert parts.value[i].item() == value[i].item()
        if union > 0:
            assert exact.value[i].item() == pytest.approx(inter / union, rel=1e-9, abs=value_tol)
        # the paper's summary of Sec. III-B, per configuration
        assert union >= 0 and -1 < expected <= 1
        if configuration == "inverted_prediction":  # separated from its target
            area_t = (t[2] - t[0]) * (t[3] - t[1])
            assert inter <= 0 and union >= area_t and expected <= 0
        if configuration.startswith("a_"):  # the standard IoU, here from torchvision
            standard = tvo.box_iou(pred[i : i + 1], target[i : i + 1]).item()
            assert inter > 0 and exact.value[i].item() == pytest.approx(standard, rel=1e-9)
        elif configuration[0] in "bcd" or configuration.endswith("apart_along_y"):
            assert inter < 0 and expected < 0
        elif configuration.startswith("touching"):
            assert inter == 0.0 and abs(value[i].item()) <= value_tol


@pytest.mark.parametrize(
    "configuration", ["b_apart_along_x", "c_apart_along_y", "d_apart_along_both"]
)
@given(data=st.data(), shift=st.floats(0.5, 1e3))
def test_eiou_decreases_as_separated_boxes_move_apart(configuration: str, data, shift) -> None:
    """Moving the prediction further away along every axis it is apart on lowers EIoU."""
    pairs = data.draw(fig2_pairs(CONFIGURATIONS[configuration]))
    pred, target = _tensors(pairs)
    direction = torch.zeros_like(pred[:, :2])
    for axis in (0, 1):
        apart = (pred[:, axis] > target[:, axis + 2]) | (pred[:, axis + 2] < target[:, axis])
        sign = torch.where(pred[:, axis] > target[:, axis], 1.0, -1.0).to(pred)
        direction[:, axis] = torch.where(apart, sign, 0.0)
    moved = pred + shift * direction.repeat(1, 2)
    for i, (p, t) in enumerate(pairs):
        assert reference_eiou(tuple(moved[i].tolist()), t) < reference_eiou(p, t)
    assert (metrics.eiou(moved, target) < metrics.eiou(pred, target)).all()


# --------------------------------------------------------------------------- gradients
SMOOTH = ("partial", "pred_inside", "target_inside", "apart", "inverted")
#: Configurations with no kink of min/max near the drawn boxes (no ties, no touching).
SMOOTH_CONFIGURATIONS = {
    "a_overlapping": (SMOOTH[:3], SMOOTH[:3]),
    "b_apart_along_x": (APART, SMOOTH[:3]),
    "c_apart_along_y": (SMOOTH[:3], APART),
    "d_apart_along_both": (APART, APART),
    "inverted_prediction": (("inverted",), SMOOTH),
}


def _away_from_kinks(pred: Box, target: Box, margin: float = 1e-4) -> bool:
    """No tie among the corners that min/max compare, no touching, no zero size."""
    px1, py1, px2, py2 = pred
    tx1, ty1, tx2, ty2 = target
    x1, y1, x2, y2 = max(px1, tx1), max(py1, ty1), min(px2, tx2), min(py2, ty2)
    gaps = (px1 - tx1, py1 - ty1, px2 - tx2, py2 - ty2, x1 - x2, y1 - y2, px2 - px1, py2 - py1)
    gaps += (px2 - tx1, py2 - ty1)  # which corner is x0 (y0) for an inverted prediction
    return min(abs(g) for g in gaps) > margin  # 100 times the finite-difference step


def _assert_gradients_close(got: list[float], expected: list[float], what: str) -> None:
    """Central differences with h = 1e-6 carry a rounding error of about 1e-16 |f| / h (times
    U_e under SOT, up to ~1e4 here): 1e-5 of the gradient's largest component."""
    scale = max(1.0, *(abs(v) for v in expected))
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-5, abs=1e-5 * scale), (what, got, expected)


def _smooth_pairs(data, configuration: str) -> list[tuple[Box, Box]]:
    pairs = data.draw(fig2_pairs(SMOOTH_CONFIGURATIONS[configuration]))
    pairs = [pair for pair in pairs if _away_from_kinks(*pair)]
    assume(pairs)
    return pairs


@pytest.mark.parametrize("configuration", list(SMOOTH_CONFIGURATIONS))
@given(data=st.data(), power=st.sampled_from([1.0, 1.5, 2.0]), sot=st.booleans())
def test_autograd_gradient_matches_finite_differences(configuration, data, power, sot) -> None:
    """``gradient="autograd"``: the exact derivative of Eq. 16-22 (times ``U_e`` with SOT)."""
    pairs = _smooth_pairs(data, configuration)
    pred, target = _tensors(pairs)
    pred.requires_grad_()
    loss = losses.get("eiou", power=power, sot=sot, reduction="none")(pred, target)
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    for i, (p, t) in enumerate(pairs):
        assert loss[i].item() == pytest.approx(reference_loss(p, t, power), rel=1e-9, abs=1e-12)
        expected = finite_difference(lambda q, t=t: reference_loss(q, t, power), p)
        if sot:
            expected = [g * reference_parts(p, t)[1] for g in expected]
        _assert_gradients_close(grad[i].tolist(), expected, f"autograd {p} {t}")


def _appendix_exact(pred: Box, target: Box) -> list[bool]:
    """Per predicted coordinate, whether Appendix A's derivative is the exact one.

    The paper holds Eq. 10's ``min(x1_t, x1_p)`` (``y0`` likewise) fixed. That matters only
    when ``x1_p`` *is* ``x0`` (``x1_p < x1_t`` and the prediction not inverted along x) and
    only when the boxes are apart along the other axis (NOTES.md, "Gradients"). An inverted
    prediction's ``x2_p``, when it is ``x0``, moves ``x0`` in both modes."""
    px1, py1, px2, py2 = pred
    tx1, ty1, tx2, ty2 = target
    apart_x = max(px1, tx1) > min(px2, tx2)
    apart_y = max(py1, ty1) > min(py2, ty2)
    x0, y0 = min(px1, px2, tx1, tx2), min(py1, py2, ty1, ty2)
    return [not (px1 == x0 and apart_y), not (py1 == y0 and apart_x), True, True]


@pytest.mark.parametrize("configuration", list(SMOOTH_CONFIGURATIONS))
@given(data=st.data(), power=st.sampled_from([1.0, 1.5, 2.0]), sot=st.booleans())
def test_paper_gradient_is_the_derivative_with_x0_y0_held(configuration, data, power, sot) -> None:
    """``gradient="paper"`` (Appendix A): the derivative of Eq. 16-22 with Eq. 10-11's
    ``min(x1_t, x1_p)``, ``min(y1_t, y1_p)`` fixed; equal to autograd wherever that makes no
    difference, different where it does."""
    pairs = _smooth_pairs(data, configuration)
    pred, target = _tensors(pairs)
    paper_pred, auto_pred = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    options = {"power": power, "sot": sot, "reduction": "none"}
    paper = losses.get("eiou", gradient="paper", **options)(paper_pred, target)
    (paper_grad,) = torch.autograd.grad(paper.sum(), paper_pred)
    auto = losses.get("eiou", **options)(auto_pred, target)
    (auto_grad,) = torch.autograd.grad(auto.sum(), auto_pred)
    for i, (p, t) in enumerate(pairs):
        assert paper[i].item() == pytest.approx(reference_loss(p, t, power), rel=1e-9, abs=1e-12)
        held = {"x0": min(p[0], t[0]), "y0": min(p[1], t[1])}  # Eq. 10-11 as they stand
        expected = finite_difference(lambda q, t=t, h=held: reference_loss(q, t, power, **h), p)
        if sot:
            expected = [g * reference_parts(p, t)[1] for g in expected]
        _assert_gradients_close(paper_grad[i].tolist(), expected, f"paper {p} {t}")
        for k, exact in enumerate(_appendix_exact(p, t)):
            same = math.isclose(paper_grad[i, k], auto_grad[i, k], rel_tol=1e-9, abs_tol=1e-12)
            assert same == exact, (k, p, t, paper_grad[i].tolist(), auto_grad[i].tolist())


#: Pairs on a kink, against the target (0, 0, 4, 3): (pred, coordinate, side). Appendix A's
#: gradient takes, for that coordinate, the one-sided derivative on the side where the
#: boxes overlap, the prediction's edge is inside the target, and the prediction is not
#: inverted (+1: moving the coordinate up, -1: down).
KINKS = {
    "x1_p = x1_t": ((0.0, 1.0, 2.0, 5.0), 0, +1),
    "y1_p = y1_t": ((1.0, 0.0, 5.0, 2.0), 1, +1),
    "x2_p = x2_t": ((1.0, -1.0, 4.0, 2.0), 2, -1),
    "y2_p = y2_t": ((-1.0, 1.0, 2.0, 3.0), 3, -1),
    "touching, prediction left": ((-2.0, 1.0, 0.0, 2.0), 2, +1),
    "touching, prediction right": ((4.0, 1.0, 6.0, 2.0), 0, -1),
    "touching, prediction below": ((1.0, 3.0, 2.0, 5.0), 1, -1),
    "zero width": ((1.0, 1.0, 1.0, 2.0), 0, -1),
    "zero width, x2": ((1.0, 1.0, 1.0, 2.0), 2, +1),
    "zero height": ((1.0, 1.0, 2.0, 1.0), 1, -1),
    "zero height, y2": ((1.0, 1.0, 2.0, 1.0), 3, +1),
    # EIoU != 0 (apart), so the area term of Eq. 37-40 counts too
    "zero width, apart": ((6.0, 1.0, 6.0, 2.0), 2, +1),
    "zero height, apart": ((1.0, 5.0, 2.0, 5.0), 3, +1),
}


@pytest.mark.parametrize("power", [1.0, 2.0])
@pytest.mark.parametrize("kink", list(KINKS))
def test_paper_gradient_on_a_kink_is_the_one_sided_derivative_towards_overlap(kink, power):
    pred, coordinate, side = KINKS[kink]
    target = (0.0, 0.0, 4.0, 3.0)
    held = {"x0": min(pred[0], pred[2], 0.0), "y0": min(pred[1], pred[3], 0.0)}

    def loss(box: Box) -> float:
        return (1 - reference_eiou(box, target, eps=0.0, **held)) ** power

    h = 1e-7
    bumped = list(pred)
    bumped[coordinate] += side * h
    expected = side * (loss(tuple(bumped)) - loss(pred)) / h
    other_side = list(pred)
    other_side[coordinate] -= side * h
    assert abs(-side * (loss(tuple(other_side)) - loss(pred)) / h - expected) > 1e-3  # a kink
    box = torch.tensor([pred], dtype=torch.float64, requires_grad=True)
    value = losses.get("eiou", power=power, gradient="paper", reduction="sum", eps=0.0)(
        box, torch.tensor([target], dtype=torch.float64)
    )
    (grad,) = torch.autograd.grad(value, box)
    assert grad[0, coordinate].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
