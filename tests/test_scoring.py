"""Scoring methods and IoU-guided NMS against torchvision and a literal reference."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvo

from eiou.scoring import SCORING_METHODS, nms_with_scoring, rescore, select_detections


def _detections(n: int, seed: int, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(n, 2, generator=g) * 60
    sizes = torch.rand(n, 2, generator=g) * 20 + 5
    boxes = torch.cat([centers, centers + sizes], -1)
    return (
        boxes,
        torch.rand(n, generator=g),
        torch.randint(0, classes, (n,), generator=g),
        torch.rand(n, generator=g),
    )


def _iou_guided_reference(boxes, cls_scores, labels, ious, threshold):
    """IoU-Net, Algorithm 1, literally: per class, pick the highest predicted IoU, absorb."""
    kept = {}
    for label in labels.unique().tolist():
        remaining = [i for i in range(len(boxes)) if labels[i] == label]
        while remaining:
            m = max(remaining, key=lambda i: (ious[i].item(), -i))
            score = cls_scores[m].item()
            overlaps = tvo.box_iou(boxes[m : m + 1], boxes[remaining])[0]
            survivors = []
            for j, overlap in zip(remaining, overlaps.tolist(), strict=True):
                if j == m:
                    continue
                if overlap > threshold:
                    score = max(score, cls_scores[j].item())
                else:
                    survivors.append(j)
            kept[m] = score
            remaining = survivors
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_iou_guided_nms_matches_literal_algorithm(seed):
    boxes, cls_scores, labels, ious = _detections(80, seed)
    keep, scores = nms_with_scoring(boxes, cls_scores, labels, ious, "iou_guided_nms", 0.5)
    expected = _iou_guided_reference(boxes, cls_scores, labels, ious, 0.5)
    assert sorted(keep.tolist()) == sorted(expected)
    for k, s in zip(keep.tolist(), scores.tolist(), strict=True):
        assert s == pytest.approx(expected[k])
    assert (scores.diff() <= 0).all()


def test_pointwise_methods_match_batched_nms():
    boxes, cls_scores, labels, ious = _detections(80, 7)
    keep, scores = nms_with_scoring(boxes, cls_scores, labels, None, "cls", 0.5)
    assert torch.equal(keep, tvo.batched_nms(boxes, cls_scores, labels, 0.5))
    assert torch.equal(scores, cls_scores[keep])
    for method, expected in [
        ("cls_x_iou", cls_scores * ious),
        ("sqrt_cls_x_iou", (cls_scores * ious).sqrt()),
    ]:
        keep, scores = nms_with_scoring(boxes, cls_scores, labels, ious, method, 0.5)
        assert torch.equal(keep, tvo.batched_nms(boxes, expected, labels, 0.5))
        assert torch.allclose(scores, expected[keep])
        assert torch.allclose(rescore(cls_scores, ious, method), expected)


def test_empty_and_errors():
    empty = torch.zeros(0, 4)
    for method in SCORING_METHODS:
        keep, scores = nms_with_scoring(
            empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), torch.zeros(0), method
        )
        assert keep.numel() == 0 and scores.numel() == 0
    with pytest.raises(ValueError, match="needs predicted IoUs"):
        rescore(torch.ones(2), None, "cls_x_iou")
    with pytest.raises(ValueError, match="unknown scoring method"):
        rescore(torch.ones(2), torch.ones(2), "max")


@pytest.mark.parametrize("method", ["cls", "sqrt_cls_x_iou"])
def test_select_detections_keeps_the_best_with_their_own_iou(method: str) -> None:
    boxes, scores, labels, ious = _detections(80, seed=7)
    out = select_detections(boxes, scores, labels, ious, method, 0.5, max_detections=10)
    assert len(out["boxes"]) == len(out["scores"]) == len(out["predicted_iou"]) == 10
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])
    # every output row is one input detection, with that detection's label and IoU
    for box, label, iou in zip(out["boxes"], out["labels"], out["predicted_iou"], strict=True):
        (row,) = torch.nonzero((boxes == box).all(1)).flatten().tolist()
        assert labels[row] == label and ious[row] == iou
    # the best final score over all inputs survives NMS (nothing outranks it)
    assert out["scores"][0] == rescore(scores, ious, method).max()
    without_iou = select_detections(boxes, scores, labels, None, "cls", 0.5, 10)
    assert "predicted_iou" not in without_iou
    assert torch.equal(without_iou["boxes"], out["boxes"]) == (method == "cls")


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_select_detections_uses_the_given_nms_threshold(threshold: float) -> None:
    boxes, scores, labels, ious = _detections(80, seed=3)
    out = select_detections(boxes, scores, labels, ious, "cls_x_iou", threshold, 1000)
    keep, final = nms_with_scoring(boxes, scores, labels, ious, "cls_x_iou", threshold)
    assert torch.equal(out["boxes"], boxes[keep]) and torch.equal(out["scores"], final)
    default = nms_with_scoring(boxes, scores, labels, ious, "cls_x_iou")[0]
    assert len(keep) != len(default)  # the threshold changes what survives here
