"""IoU-family metrics against torchvision.ops, hand-worked cases from the paper, properties."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo
from conftest import box_pairs, random_boxes
from hypothesis import given
from hypothesis import strategies as st

import eiou
from eiou import metrics


def _t(*boxes: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(boxes, dtype=torch.float64)


@given(box_pairs(min_size=1e-2, max_size=1e3))
def test_giou_diou_ciou_match_torchvision(pair):
    pred, target = pair
    assert torch.allclose(
        1 - eiou.giou(pred, target), tvo.generalized_box_iou_loss(pred, target), rtol=0, atol=1e-6
    )
    assert torch.allclose(
        1 - eiou.diou(pred, target), tvo.distance_box_iou_loss(pred, target), rtol=0, atol=1e-6
    )
    assert torch.allclose(
        1 - eiou.ciou(pred, target), tvo.complete_box_iou_loss(pred, target), rtol=0, atol=1e-6
    )


@given(box_pairs(min_size=1e-2, max_size=1e3))
def test_iou_matches_torchvision_box_iou(pair):
    pred, target = pair
    expected = tvo.box_iou(pred, target).diagonal()
    assert torch.allclose(eiou.iou(pred, target, eps=0.0), expected, rtol=1e-12, atol=1e-12)


@given(box_pairs(min_size=1e-3, max_size=1e2))
def test_eiou_equals_iou_when_overlapping_and_is_negative_when_apart(pair):
    pred, target = pair
    parts = eiou.extended_iou_parts(pred, target)
    standard = eiou.iou(pred, target)
    inter, union = metrics._intersection_union(metrics._corners(pred, target))
    overlapping = inter > 0
    assert torch.allclose(parts.value[overlapping], standard[overlapping], rtol=1e-9, atol=1e-12)
    assert torch.allclose(parts.union[overlapping], union[overlapping], rtol=1e-9, atol=1e-9)
    assert (parts.value <= 1).all() and (parts.value > -1).all()
    assert (parts.union >= 0).all()
    gap_x = torch.maximum(pred[:, 0], target[:, 0]) - torch.minimum(pred[:, 2], target[:, 2])
    gap_y = torch.maximum(pred[:, 1], target[:, 1]) - torch.minimum(pred[:, 3], target[:, 3])
    apart = (gap_x > 1e-6) | (gap_y > 1e-6)  # strictly separated, not merely touching
    assert (parts.value[apart] < 0).all()


def test_hand_worked_separated_cases():
    target = _t((0, 0, 1, 1))
    # Fig 2(b): apart along x only. Eq. 18: I_e = (x_min - x_max)(y_max - y0 + y_min - y0) = -1.
    parts = eiou.extended_iou_parts(_t((2, 0, 3, 1)), target)
    assert parts.intersection.item() == pytest.approx(-1.0)
    assert parts.union.item() == pytest.approx(3.0)
    assert parts.value.item() == pytest.approx(-1 / 3)
    # Fig 2(c): apart along y only, same geometry transposed.
    assert eiou.eiou(_t((0, 2, 1, 3)), target).item() == pytest.approx(-1 / 3)
    # Fig 2(d): apart along both. Eq. 20: I_e = 2((1)(1) - (2)(2)) = -6, U_e = 2 + 6.
    parts = eiou.extended_iou_parts(_t((2, 2, 3, 3)), target)
    assert parts.intersection.item() == pytest.approx(-6.0)
    assert parts.value.item() == pytest.approx(-6 / 8)
    # Touching boxes: EIoU = IoU = 0.
    assert eiou.eiou(_t((1, 0, 2, 1)), target).item() == pytest.approx(0.0, abs=1e-12)


def test_fig3_giou_counter_example():
    """Fig. 3: GIoU ranks an overlapping pair below a merely touching pair; EIoU does not."""
    a, b_overlapping, b_touching = _t((0, 0, 1, 1)), _t((0.5, 0.5, 1.5, 1.5)), _t((1, 0, 2, 1))
    assert eiou.iou(a, b_overlapping).item() == pytest.approx(1 / 7)
    assert eiou.giou(a, b_overlapping).item() == pytest.approx(-5 / 63)
    assert eiou.giou(a, b_touching).item() == pytest.approx(0.0, abs=1e-12)
    assert eiou.giou(a, b_overlapping) < eiou.giou(a, b_touching)
    assert eiou.eiou(a, b_overlapping) > eiou.eiou(a, b_touching)


def test_eiou_decreases_with_distance_towards_minus_one():
    target = _t((0, 0, 1, 1))
    shifts = torch.tensor([0.0, 0.5, 1.0, 1.5, 3.0, 10.0, 1e3, 1e6], dtype=torch.float64)
    for direction in [(1, 0), (0, 1), (1, 1), (-1, 0), (-1, -1)]:
        d = torch.tensor(direction, dtype=torch.float64)
        pred = target + (shifts[:, None] * d).repeat(1, 2)
        values = eiou.eiou(pred, target.expand_as(pred))
        assert (values.diff() < 0).all(), (direction, values)
        assert values[-1].item() == pytest.approx(-1.0, abs=1e-5)


@given(box_pairs(min_size=1e-2, max_size=1e2), st.floats(-1e3, 1e3), st.floats(1e-2, 1e2))
def test_eiou_translation_and_scale_invariant(pair, shift, scale):
    pred, target = pair
    base = eiou.eiou(pred, target, eps=0.0)
    moved = eiou.eiou((pred + shift) * scale, (target + shift) * scale, eps=0.0)
    assert torch.allclose(base, moved, rtol=1e-6, atol=1e-6)


def test_broadcasting_empty_and_shape_errors(generator):
    target = random_boxes(5, generator)
    single = target[0]
    assert eiou.eiou(single, target).shape == (5,)
    batched = random_boxes(6, generator).view(2, 3, 4)
    assert eiou.giou(batched, batched).shape == (2, 3)
    empty = torch.empty(0, 4)
    for fn in (eiou.iou, eiou.giou, eiou.diou, eiou.ciou, eiou.eiou):
        assert fn(empty, empty).shape == (0,)
    for pred, target in [
        (torch.zeros(3, 5), torch.zeros(3, 4)),
        (torch.zeros(3, 4), torch.zeros(3)),
    ]:
        with pytest.raises(ValueError) as err:
            eiou.iou(pred, target)
        assert str(err.value) == (
            "boxes must have shape (..., 4) in (x1, y1, x2, y2) format, got "
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        )


def test_mixed_float32_float64_is_computed_in_float64(generator):
    pred, target = random_boxes(32, generator), random_boxes(32, generator)
    for fn in (eiou.iou, eiou.giou, eiou.diou, eiou.ciou, eiou.eiou):
        for a, b in [(pred.float(), target), (pred, target.float())]:
            value = fn(a, b)
            assert value.dtype == torch.float64
            assert torch.equal(value, fn(a.double(), b.double()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype, generator):
    pred, target = random_boxes(64, generator) * 30, random_boxes(64, generator) * 30
    for fn in (eiou.iou, eiou.giou, eiou.diou, eiou.ciou, eiou.eiou):
        reference = fn(pred.to(dtype).double(), target.to(dtype).double())
        value = fn(pred.to(dtype), target.to(dtype))
        assert value.dtype == torch.float32
        assert torch.allclose(value.double(), reference, rtol=1e-5, atol=1e-5)


def test_inverted_boxes_have_zero_area_and_negative_eiou():
    target = _t((0, 0, 2, 2))
    inverted = _t((1.5, 0, 0.5, 2))  # x2 < x1
    for fn in (eiou.iou, eiou.giou, eiou.diou, eiou.ciou, eiou.eiou):
        assert math.isfinite(fn(inverted, target).item())
    assert eiou.iou(inverted, target).item() == 0.0
    parts = eiou.extended_iou_parts(inverted, target)
    # Counted as separated along x by the gap x1 - x2 = 1: Eq. 18 gives -(1)(2 + 0) = -2,
    # less the strip of the inversion, 1 x h_t = 2: I_e = -4, U_e = S_t + 0 - I_e = 8.
    assert parts.intersection.item() == pytest.approx(-4.0)
    assert parts.union.item() == pytest.approx(8.0)
    # Continuous at the flip: the zero-width box has I_e = 0.
    flat = eiou.extended_iou_parts(_t((1.0, 0, 1.0, 2)), target)
    assert flat.intersection.item() == pytest.approx(0.0, abs=1e-12)


def test_prediction_inverted_along_both_axes_is_separated():
    """x0, y0 are the leftmost / topmost of all corners: with Eq. 10's min(x1_t, x1_p) alone,
    (0, 0, -0.5, -1) against the unit box had I_e = 1 > 0, U_e = 0 and EIoU = 1e7."""
    target = _t((0, 0, 1, 1))
    pred = _t((0, 0, -0.5, -1)).requires_grad_()
    parts = eiou.extended_iou_parts(pred, target)
    # x0 = -0.5, y0 = -1; x1 = y1 = 0, x2 = -0.5, y2 = -1 (Fig. 2(d), Eq. 20):
    # 2 ((x2 - x0)(y2 - y0) - (x1 - x0)(y1 - y0)) = 2 (0 - 0.5) = -1, less the strips
    # 0.5 x 1 + 1 x 1: I_e = -2.5, U_e = 1 + 0 + 2.5
    assert parts.intersection.item() == pytest.approx(-2.5)
    assert parts.union.item() == pytest.approx(3.5)
    assert parts.value.item() == pytest.approx(-2.5 / 3.5)
    parts.value.sum().backward()
    assert pred.grad[0, 2] > 0 and pred.grad[0, 3] > 0  # ascent on EIoU unflips x2 and y2
    # an inverted target is handled alike: the metric is symmetric in its two boxes
    swapped = eiou.extended_iou_parts(target, pred.detach())
    assert swapped.intersection.item() == pytest.approx(-2.5)
