"""IoU head and the KL loss of Eq. 32."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvo
from conftest import boxes_strategy, random_boxes
from hypothesis import given
from hypothesis import strategies as st

from eiou.heads import IoUHead, best_iou_target, iou_head_loss, iou_target

unit = st.floats(0.0, 1.0, allow_nan=False)
logit = st.floats(-30.0, 30.0, allow_nan=False)


@given(st.lists(st.tuples(logit, unit), min_size=1, max_size=20))
def test_kl_matches_definition_and_is_nonnegative(pairs):
    logits = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
    q_g = torch.tensor([q for _, q in pairs], dtype=torch.float64)
    # q log(q / q_p) + (1 - q) log((1 - q) / (1 - q_p)) with log q_p = -softplus(-x) and
    # log(1 - q_p) = -softplus(x), stable for large |x|.
    softplus = torch.nn.functional.softplus
    expected = (
        torch.xlogy(q_g, q_g)
        + q_g * softplus(-logits)
        + torch.xlogy(1 - q_g, 1 - q_g)
        + (1 - q_g) * softplus(logits)
    )
    got = iou_head_loss(logits, q_g, reduction="none")
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert (got > -1e-9).all()


def test_kl_zero_at_target_and_gradient_is_sigmoid_minus_target():
    q_g = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0 - 1e-9], dtype=torch.float64)
    logits = torch.logit(q_g.clamp(1e-12, 1 - 1e-12))
    assert iou_head_loss(logits, q_g, reduction="none").abs().max() < 1e-9
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    iou_head_loss(x, q_g, reduction="sum").backward()
    assert torch.allclose(x.grad, torch.sigmoid(x) - q_g)


def test_iou_target_is_detached_standard_iou(generator):
    pred = random_boxes(30, generator).requires_grad_()
    target = random_boxes(30, generator)
    q_g = iou_target(pred, target)
    assert not q_g.requires_grad
    assert torch.allclose(q_g, tvo.box_iou(pred.detach(), target).diagonal(), atol=1e-6)
    far = target + 100
    assert torch.equal(iou_target(far, target), torch.zeros(30, dtype=torch.float64))


@pytest.mark.parametrize("num_outputs", [1, 5])
def test_iou_head_shapes_and_trains(num_outputs):
    torch.manual_seed(0)
    head = IoUHead(16, num_outputs)
    features = torch.randn(64, 4, 2, 2)
    target = torch.rand(64, num_outputs)
    assert head(features).shape == (64, num_outputs)
    opt = torch.optim.SGD(head.parameters(), lr=1.0)
    first = None
    for _ in range(50):
        loss = iou_head_loss(head(features), target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


@given(
    st.lists(boxes_strategy(0, 100, 0.5, 60), min_size=1, max_size=12),
    st.lists(boxes_strategy(0, 100, 0.5, 60), min_size=0, max_size=6),
)
def test_best_iou_target_is_the_best_overlap_with_any_ground_truth(pred, gt):
    pred = torch.tensor(pred, dtype=torch.float64)
    gt = torch.tensor(gt, dtype=torch.float64).reshape(-1, 4)
    target = best_iou_target(pred.requires_grad_(), gt)
    assert not target.requires_grad and target.shape == (len(pred),)
    if len(gt):
        expected = tvo.box_iou(pred.detach(), gt).max(dim=1).values
        torch.testing.assert_close(target, expected, atol=1e-6, rtol=1e-6)
    else:
        assert torch.equal(target, torch.zeros(len(pred), dtype=torch.float64))


def test_iou_head_defaults_and_initialisation():
    """Class-agnostic by default; weights N(0, 0.01), bias 0, as the box predictors."""
    torch.manual_seed(0)
    head = IoUHead(4096)
    assert head(torch.randn(3, 4096)).shape == (3, 1)
    weight = head.predictor.weight
    assert weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert abs(weight.mean().item()) < 1e-3 and torch.equal(head.predictor.bias, torch.zeros(1))


def test_kl_target_takes_the_logits_dtype():
    """A float64 q_g (from float64 boxes) with float32 logits: the loss is float32."""
    logits = torch.zeros(4, requires_grad=True)
    q_g = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    loss = iou_head_loss(logits, q_g, reduction="none")
    assert loss.dtype == torch.float32
    loss.sum().backward()
    assert torch.allclose(logits.grad, 0.5 - q_g.float())


def test_kl_weights_and_avg_factor():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=torch.float64)
    q_g = torch.tensor([0.1, 0.5, 0.9, 0.0], dtype=torch.float64)
    weight = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    per_element = iou_head_loss(logits, q_g, reduction="none")
    got = iou_head_loss(logits, q_g, weight=weight, avg_factor=3.0)  # not the 4 elements
    assert got.item() == pytest.approx((per_element * weight).sum().item() / 3.0)
    assert iou_head_loss(logits, q_g, weight=weight, reduction="sum").item() == pytest.approx(
        (per_element * weight).sum().item()
    )
