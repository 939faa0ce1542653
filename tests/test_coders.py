"""Box coders: torchvision agreement, round trips, the anchor-normalised frame of Algorithm 1."""

from __future__ import annotations

import pytest
import torch
from conftest import random_boxes
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

import eiou
from eiou import coders


def test_standard_coder_matches_torchvision(generator):
    anchors, boxes = random_boxes(50, generator) * 20, random_boxes(50, generator) * 20
    weights = (10.0, 10.0, 5.0, 5.0)
    ours = coders.get("standard", weights=weights)
    theirs = TorchvisionBoxCoder(weights)
    offsets = ours.encode(boxes, anchors)
    assert torch.allclose(offsets, theirs.encode_single(boxes, anchors), atol=1e-10)
    assert torch.allclose(
        ours.decode(offsets, anchors), theirs.decode_single(offsets, anchors), atol=1e-9
    )


@pytest.mark.parametrize("name", ["standard", "sqrt_area"])
def test_round_trip_and_normalised_frame(name, generator):
    anchors, boxes = random_boxes(50, generator) * 20, random_boxes(50, generator) * 20
    coder = coders.get(name)
    offsets = coder.encode(boxes, anchors)
    assert torch.allclose(coder.decode(offsets, anchors), boxes, atol=1e-9)
    scale = ((anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])).sqrt()
    normalised = coder.decode_normalized(offsets, anchors)
    assert torch.allclose(normalised, boxes / scale[:, None], atol=1e-9)
    # In that frame U_e is measured in units of anchor area.
    target = coder.normalize(boxes.flip(0), anchors)
    union_pixels = eiou.extended_iou_parts(boxes, boxes.flip(0)).union
    union_frame = eiou.extended_iou_parts(normalised, target).union
    assert torch.allclose(union_frame, union_pixels / scale**2, rtol=1e-9)


def test_sqrt_area_offsets_share_one_normaliser():
    """Algorithm 1: every corner offset is divided by the same S = sqrt(anchor area)."""
    anchor = torch.tensor([[0.0, 0.0, 16.0, 4.0]])  # S = 8
    box = torch.tensor([[8.0, 8.0, 32.0, 12.0]])  # moved by (8, 8), 8 px wider
    offsets = coders.get("sqrt_area").encode(box, anchor)
    assert torch.allclose(offsets, torch.tensor([[1.0, 1.0, 2.0, 1.0]]))
    # The standard coder normalises x by w_a = 16 and y by h_a = 4 instead:
    # centres (20, 10) vs (8, 2) -> dx = 12/16, dy = 8/4; dw = log(24/16), dh = log(4/4).
    standard = coders.get("standard").encode(box, anchor)
    assert torch.allclose(standard, torch.tensor([[0.75, 2.0, torch.log(torch.tensor(1.5)), 0.0]]))


def test_algorithm1_by_hand_with_an_anchor_away_from_the_origin():
    """S = sqrt((x2a - x1a)(y2a - y1a)) from the anchor's own corners: an anchor away from the
    origin and wider than tall, so that mixing up x and y (or corners 0/1 and 2/3) in S, or
    normalising by w_a or h_a alone, gives other numbers."""
    anchor = torch.tensor([[30.0, 10.0, 62.0, 18.0]], dtype=torch.float64)  # 32 x 8: S = 16
    assert coders.anchor_scale(anchor).item() == 16.0
    box = torch.tensor([[38.0, 2.0, 94.0, 34.0]], dtype=torch.float64)
    coder = coders.get("sqrt_area")
    # (box - anchor) / S = (8, -8, 32, 16) / 16
    expected_offsets = torch.tensor([[0.5, -0.5, 2.0, 1.0]], dtype=torch.float64)
    assert torch.equal(coder.encode(box, anchor), expected_offsets)
    assert torch.equal(coder.decode(expected_offsets, anchor), box)
    # Algorithm 1, line 5: the predicted box in the normalised frame is d + anchor / S
    expected_frame = torch.tensor([[38 / 16, 2 / 16, 94 / 16, 34 / 16]], dtype=torch.float64)
    assert torch.equal(coder.decode_normalized(expected_offsets, anchor), expected_frame)
    assert torch.equal(coder.normalize(box, anchor), expected_frame)
    # every anchor's own S, broadcast over a batch of anchors of different shapes
    anchors = torch.tensor([[30.0, 10.0, 62.0, 18.0], [-5.0, 7.0, -1.0, 16.0]])
    assert torch.equal(coders.anchor_scale(anchors), torch.tensor([16.0, 6.0]))
    assert torch.allclose(
        coder.normalize(torch.ones(2, 4), anchors), torch.tensor([1 / 16, 1 / 6])[:, None]
    )


def test_unknown_coder():
    with pytest.raises(ValueError, match="unknown box coder"):
        coders.get("polar")


@pytest.mark.parametrize("name", ["standard", "sqrt_area"])
def test_batched_anchors_give_the_per_pair_results(name, generator):
    """Boxes and anchors ``(..., 4)``: a ``(2, 3, 4)`` batch is coded pair by pair."""
    anchors, boxes = random_boxes(6, generator) * 20, random_boxes(6, generator) * 20
    coder = coders.get(name)
    flat_offsets = coder.encode(boxes, anchors)
    batched = coder.encode(boxes.view(2, 3, 4), anchors.view(2, 3, 4))
    assert batched.shape == (2, 3, 4)
    assert torch.equal(batched.view(6, 4), flat_offsets)
    assert torch.equal(
        coder.decode(batched, anchors.view(2, 3, 4)).view(6, 4), coder.decode(flat_offsets, anchors)
    )
    assert torch.equal(
        coder.decode_normalized(batched, anchors.view(2, 3, 4)).view(6, 4),
        coder.decode_normalized(flat_offsets, anchors),
    )
    assert torch.equal(
        coder.normalize(boxes.view(2, 3, 4), anchors.view(2, 3, 4)).view(6, 4),
        coder.normalize(boxes, anchors),
    )


@pytest.mark.parametrize("name", ["standard", "sqrt_area"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(name, dtype, generator):
    """Half-precision offsets or boxes with anchors up to the paper's 512 px: an anchor's
    area (262144) overflows float16, so the coder computes in float32 like the metrics."""
    anchors = torch.tensor([[0.0, 0.0, 512.0, 512.0], [100.0, 40.0, 132.0, 104.0]])
    offsets = (torch.randn(2, 4, generator=generator) * 0.1).to(dtype)
    boxes = (anchors + 8).to(dtype)
    coder = coders.get(name)
    exact = offsets.double(), anchors.double()
    for got, expected in [
        (coder.decode(offsets, anchors), coder.decode(*exact)),
        (coder.decode(offsets, anchors.to(dtype)), coder.decode(*exact)),
        (coder.decode_normalized(offsets, anchors), coder.decode_normalized(*exact)),
        (coder.encode(boxes, anchors.to(dtype)), coder.encode(boxes.double(), exact[1])),
        (coder.normalize(boxes, anchors.to(dtype)), coder.normalize(boxes.double(), exact[1])),
    ]:
        assert got.dtype == torch.float32
        assert torch.allclose(got.double(), expected, rtol=1e-6, atol=1e-6)
    # float64 offsets keep float64 with float32 anchors
    assert coder.decode(exact[0], anchors).dtype == torch.float64


def test_standard_coder_needs_four_weights():
    with pytest.raises(ValueError, match="weights must have 4 entries"):
        coders.get("standard", weights=(1.0, 1.0))


@pytest.mark.parametrize("name", ["standard", "sqrt_area"])
def test_mixed_float32_float64_is_computed_in_float64(name, generator):
    """float64 offsets or boxes with float32 anchors: computed as if both were float64."""
    anchors = random_boxes(16, generator, dtype=torch.float32) * 30 + 0.1
    boxes = random_boxes(16, generator) * 30
    offsets = torch.randn(16, 4, generator=generator, dtype=torch.float64) * 0.1
    coder, exact = coders.get(name), anchors.double()
    assert torch.equal(coder.decode(offsets, anchors), coder.decode(offsets, exact))
    low = offsets.float()  # float32 offsets with float64 anchors: exp() etc. in float64
    assert torch.equal(coder.decode(low, exact), coder.decode(low.double(), exact))
    assert torch.equal(
        coder.decode_normalized(offsets, anchors), coder.decode_normalized(offsets, exact)
    )
    assert torch.equal(coder.encode(boxes, anchors), coder.encode(boxes, exact))
    assert torch.equal(coder.normalize(boxes, anchors), coder.normalize(boxes, exact))
