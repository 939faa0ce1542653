"""The start-of-training gradient measurement (and the calibration rule built on it)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou, generalized_box_iou_loss

from eiou import calibration
from eiou.engines.torchvision.box_regression import build_box_regression

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pairs() -> calibration.ReferencePairs:
    return calibration.reference_pairs(300, seed=5)


# --------------------------------------------------------------------------- reference set
def test_reference_pairs_fill_every_bin_with_realistic_boxes(pairs) -> None:
    n = 300
    assert pairs.anchors.shape == pairs.gt_boxes.shape == (n * len(calibration.IOU_BINS), 4)
    iou = box_iou(pairs.anchors, pairs.gt_boxes).diagonal()  # torchvision as the reference
    torch.testing.assert_close(iou, pairs.iou)
    for b, (low, high) in enumerate(calibration.IOU_BINS):
        inside = pairs.iou[pairs.bin_index == b]
        assert len(inside) == n and inside.min() >= low and inside.max() < high
    w = pairs.gt_boxes[:, 2] - pairs.gt_boxes[:, 0]
    h = pairs.gt_boxes[:, 3] - pairs.gt_boxes[:, 1]
    assert (w * h).sqrt().min() >= 16 - 1e-9 and (w * h).sqrt().max() <= 512 + 1e-9
    assert (h / w).min() >= 1 / 3 - 1e-9 and (h / w).max() <= 3 + 1e-9
    # the aspect ratios are spread, not all square
    assert ((h / w) > 2).any() and ((h / w) < 0.5).any()


def test_reference_pairs_are_seeded() -> None:
    a = calibration.reference_pairs.__wrapped__(50, seed=3)
    b = calibration.reference_pairs.__wrapped__(50, seed=3)
    c = calibration.reference_pairs.__wrapped__(50, seed=4)
    assert torch.equal(a.anchors, b.anchors) and torch.equal(a.gt_boxes, b.gt_boxes)
    assert not torch.equal(a.anchors, c.anchors)


# --------------------------------------------------------------------------- gradients
def test_smooth_l1_gradient_by_hand() -> None:
    """A pure x shift of 0.2 anchor widths: offset dx = 10 * 0.2 = 2 > beta, so the gradient
    is (1, 0, 0, 0) times the weight; a 1/90-width shift stays quadratic: dx / beta."""
    reg = build_box_regression({"name": "smooth_l1", "weight": 3.0}, "faster_rcnn")
    anchors = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 90.0, 45.0]])
    gt = torch.tensor([[20.0, 0.0, 120.0, 100.0], [1.0, 0.0, 91.0, 45.0]])
    norms = calibration.gradient_norms(reg, anchors, gt)
    dx = 10 * 1 / 90
    torch.testing.assert_close(norms, torch.tensor([3.0, 3.0 * dx * 9]).double())


def test_giou_gradient_matches_finite_differences_of_torchvision(pairs) -> None:
    """Faster R-CNN's GIoU stage: autograd through the real module vs float64 central
    differences of torchvision's GIoU loss on torchvision's box coder."""
    reg = build_box_regression({"name": "giou", "weight": 2.5}, "faster_rcnn")
    idx = torch.arange(0, pairs.anchors.shape[0], 97)
    anchors, gt = pairs.anchors[idx], pairs.gt_boxes[idx]
    ours = calibration.gradient_norms(reg, anchors, gt)
    coder = det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))

    def loss(raw: torch.Tensor) -> torch.Tensor:
        boxes = coder.decode_single(raw, anchors)
        return 2.5 * generalized_box_iou_loss(boxes, gt, reduction="none")

    h = 1e-6
    grad = torch.zeros(len(idx), 4, dtype=torch.float64)
    for k in range(4):
        step = torch.zeros(len(idx), 4, dtype=torch.float64)
        step[:, k] = h
        grad[:, k] = (loss(step) - loss(-step)) / (2 * h)
    torch.testing.assert_close(ours, grad.norm(dim=1), rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize(
    "box_loss",
    [
        {"name": "smooth_l1"},
        {"name": "giou"},
        {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"},
    ],
)
def test_gradient_norms_do_not_depend_on_pixel_size(pairs, box_loss) -> None:
    """Coders and losses live in the anchor-normalised frame (SOT's U_e too)."""
    reg = build_box_regression(box_loss, "retinanet")
    small = calibration.gradient_norms(reg, pairs.anchors, pairs.gt_boxes)
    large = calibration.gradient_norms(reg, pairs.anchors * 7 + 3, pairs.gt_boxes * 7 + 3)
    torch.testing.assert_close(small, large, rtol=1e-3, atol=1e-3)  # float32 pixels


def test_gradient_profile_averages_each_bin(pairs) -> None:
    reg = build_box_regression({"name": "diou", "weight": 1.0}, "faster_rcnn")
    norms = calibration.gradient_norms(reg, pairs.anchors, pairs.gt_boxes)
    profile = calibration.gradient_profile(reg, pairs)
    for b, value in enumerate(profile.per_bin):
        assert math.isclose(value, float(norms[pairs.bin_index == b].mean()), rel_tol=1e-12)
    assert math.isclose(profile.mean, sum(profile.per_bin) / len(profile.per_bin), rel_tol=1e-9)
    # the weight multiplies the gradient
    heavier = calibration.gradient_profile(
        build_box_regression({"name": "diou", "weight": 4.0}, "faster_rcnn"), pairs
    )
    assert math.isclose(heavier.mean, 4 * profile.mean, rel_tol=1e-6)
