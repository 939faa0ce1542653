"""Scoring methods and IoU-guided NMS against torchvision and a literal reference."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvo

from eiou.scoring import (
    SCORING_METHODS,
    nms_with_scoring,
    record_candidates,
    rescore,
    select_detections,
)


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
    expected = (cls_scores * ious).sqrt()
    keep, scores = nms_with_scoring(boxes, cls_scores, labels, ious, "sqrt_cls_x_iou", 0.5)
    assert torch.equal(keep, tvo.batched_nms(boxes, expected, labels, 0.5))
    assert torch.allclose(scores, expected[keep])
    assert torch.allclose(rescore(cls_scores, ious, "sqrt_cls_x_iou"), expected)


def test_empty_and_errors():
    empty = torch.zeros(0, 4)
    for method in SCORING_METHODS:
        keep, scores = nms_with_scoring(
            empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), torch.zeros(0), method
        )
        assert keep.numel() == 0 and scores.numel() == 0
    with pytest.raises(ValueError, match="needs predicted IoUs"):
        rescore(torch.ones(2), None, "sqrt_cls_x_iou")
    with pytest.raises(ValueError, match="ranks every detection as 'sqrt_cls_x_iou'"):
        rescore(torch.ones(2), torch.ones(2), "cls_x_iou")
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


def test_select_detections_records_its_inputs_only_when_asked() -> None:
    boxes, scores, labels, ious = _detections(40, seed=3)
    plain = select_detections(boxes, scores, labels, ious, "iou_guided_nms", 0.5, 10)
    assert "candidates" not in plain
    with record_candidates():
        recorded = select_detections(boxes, scores, labels, ious, "iou_guided_nms", 0.5, 10)
        without_iou = select_detections(boxes, scores, labels, None, "cls", 0.5, 10)
    assert "candidates" not in select_detections(boxes, scores, labels, ious, "cls", 0.5, 10)
    for key, value in (("boxes", boxes), ("labels", labels), ("scores", scores)):
        assert torch.equal(recorded["candidates"][key], value)
    assert torch.equal(recorded["candidates"]["predicted_iou"], ious)
    assert without_iou["candidates"]["predicted_iou"] is None
    # selecting again from the recorded candidates gives the same detections
    c = recorded["candidates"]
    again = select_detections(
        c["boxes"], c["scores"], c["labels"], c["predicted_iou"], "iou_guided_nms", 0.5, 10
    )
    for key in ("boxes", "labels", "scores", "predicted_iou"):
        assert torch.equal(again[key], recorded[key])


# --------------------------------------------------------------------------- cls * iou
def _coco_case(seed: int):
    """Ground truth on 6 images and detections with class scores above 0.05 (the detectors'
    threshold on ``cls``) and predicted IoUs: jittered copies of the objects and strays."""
    g = torch.Generator().manual_seed(seed)
    images, annotations, detections = [], [], []
    for image_id in range(1, 7):
        images.append({"id": image_id, "width": 100, "height": 100})
        gt = torch.rand(4, 2, generator=g, dtype=torch.float64) * 60
        gt = torch.cat([gt, gt + 10 + torch.rand(4, 2, generator=g, dtype=torch.float64) * 30], 1)
        for box in gt.tolist():
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "area": (box[2] - box[0]) * (box[3] - box[1]),
                    "iscrowd": 0,
                }
            )
        near = gt.repeat(5, 1) + (torch.rand(20, 4, generator=g, dtype=torch.float64) - 0.5) * 16
        stray = torch.rand(10, 2, generator=g, dtype=torch.float64) * 80
        boxes = torch.cat([near, torch.cat([stray, stray + 15], 1)])
        cls = 0.05 + 0.95 * torch.rand(len(boxes), generator=g, dtype=torch.float64)
        iou = torch.rand(len(boxes), generator=g, dtype=torch.float64)
        for box, c, q in zip(boxes.tolist(), cls.tolist(), iou.tolist(), strict=True):
            xywh = [box[0], box[1], max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)]
            detections.append({"image_id": image_id, "bbox": xywh, "cls": c, "iou": q})
    gt_json = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    return gt_json, detections


def _scored(detections, score, threshold=None):
    return [
        {"image_id": d["image_id"], "category_id": 1, "bbox": d["bbox"], "score": score(d)}
        for d in detections
        if threshold is None or score(d) > threshold
    ]


@pytest.mark.parametrize("seed", range(3))
def test_cls_times_iou_and_its_square_root_give_the_same_ap(seed: int) -> None:
    """Thresholded on ``cls`` (as the detectors do), ``cls * iou`` and ``sqrt(cls * iou)``
    rank alike: every COCO metric is identical. Thresholded on the final score, the product
    drops detections the square root keeps, and the AP differs."""
    from eiou.evaluate import evaluate_predictions

    gt, detections = _coco_case(seed)
    product = evaluate_predictions(gt, _scored(detections, lambda d: d["cls"] * d["iou"]))
    root = evaluate_predictions(gt, _scored(detections, lambda d: (d["cls"] * d["iou"]) ** 0.5))
    for key in ("AP", "AP50", "AP75", "AP90", "AR100", "ap_per_iou", "recall_per_iou"):
        assert product[key] == root[key], key
    cut = 0.05
    product_after = _scored(detections, lambda d: d["cls"] * d["iou"], cut)
    root_after = _scored(detections, lambda d: (d["cls"] * d["iou"]) ** 0.5, cut)
    assert len(product_after) < len(root_after)
    assert (
        evaluate_predictions(gt, product_after)["AP"] != evaluate_predictions(gt, root_after)["AP"]
    )


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_select_detections_uses_the_given_nms_threshold(threshold: float) -> None:
    boxes, scores, labels, ious = _detections(80, seed=3)
    out = select_detections(boxes, scores, labels, ious, "sqrt_cls_x_iou", threshold, 1000)
    keep, final = nms_with_scoring(boxes, scores, labels, ious, "sqrt_cls_x_iou", threshold)
    assert torch.equal(out["boxes"], boxes[keep]) and torch.equal(out["scores"], final)
    default = nms_with_scoring(boxes, scores, labels, ious, "sqrt_cls_x_iou")[0]
    assert len(keep) != len(default)  # the threshold changes what survives here


def test_rescore_clamps_the_predicted_iou_to_the_unit_interval() -> None:
    cls_scores = torch.tensor([0.5, 0.5, 0.5])
    ious = torch.tensor([-0.25, 0.5, 1.5])  # an un-squashed head output, say
    assert torch.equal(
        rescore(cls_scores, ious, "sqrt_cls_x_iou"), torch.tensor([0.0, 0.25, 0.5]).sqrt()
    )
    assert torch.equal(rescore(cls_scores, ious, "iou_guided_nms"), torch.tensor([0.0, 0.5, 1.0]))


def test_defaults_and_empty_input_types() -> None:
    boxes, cls_scores, labels, _ = _detections(40, 11)
    keep, _ = nms_with_scoring(boxes, cls_scores, labels)  # method "cls", threshold 0.5
    assert torch.equal(keep, tvo.batched_nms(boxes, cls_scores, labels, 0.5))
    for method in SCORING_METHODS:
        keep, scores = nms_with_scoring(
            torch.zeros(0, 4), torch.zeros(0, dtype=torch.float64),
            torch.zeros(0, dtype=torch.int64), torch.zeros(0), method,
        )  # fmt: skip
        assert keep.dtype == torch.int64 and scores.dtype == torch.float64


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_iou_guided_nms_never_mixes_labels(threshold: float) -> None:
    """Labels are separated before one NMS: two boxes of different labels that touch at a
    corner (and coordinates around 0) never suppress each other, even at threshold 0."""
    boxes = torch.tensor([[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 10.0, 10.0], [-20, -20, 20, 20]])
    for labels in ([1, 2, 3], [3, 2, 1], [1, 1, 2]):
        labels_t = torch.tensor(labels)
        cls_scores, ious = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.9, 0.8, 0.7])
        keep, _ = nms_with_scoring(boxes, cls_scores, labels_t, ious, "iou_guided_nms", threshold)
        expected = _iou_guided_reference(boxes, cls_scores, labels_t, ious, threshold)
        assert sorted(keep.tolist()) == sorted(expected)
    # boxes around 0 (min = -max): the label offset must exceed the coordinate range
    boxes, cls_scores, labels, ious = _detections(60, 5)
    boxes = boxes - boxes.max() / 2
    keep, _ = nms_with_scoring(boxes, cls_scores, labels, ious, "iou_guided_nms", 0.5)
    assert sorted(keep.tolist()) == sorted(_iou_guided_reference(boxes, cls_scores, labels,
                                                                  ious, 0.5))  # fmt: skip


def test_iou_guided_nms_threshold_is_strict_and_scores_keep_their_dtype() -> None:
    """IoU exactly at the threshold does not suppress (as torchvision's NMS): each box
    keeps its own class score; scores stay float64."""
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])  # IoU 1/2
    cls_scores = torch.tensor([0.2, 0.9], dtype=torch.float64)
    ious = torch.tensor([0.9, 0.3])
    keep, scores = nms_with_scoring(
        boxes, cls_scores, torch.tensor([1, 1]), ious, "iou_guided_nms", 0.5
    )
    assert keep.tolist() == [1, 0] and scores.tolist() == [0.9, 0.2]
    assert scores.dtype == torch.float64


def test_iou_guided_nms_ties_keep_the_ranking_order() -> None:
    """Equal final scores are listed in the order of the predicted IoU (a stable sort)."""
    g = torch.Generator().manual_seed(2)
    n = 300
    corners = torch.arange(n, dtype=torch.float32)[:, None] * 50  # disjoint: all kept
    boxes = torch.cat([corners, corners, corners + 10, corners + 10], 1)
    cls_scores = torch.randint(0, 3, (n,), generator=g).float() / 2  # many ties
    ious = torch.rand(n, generator=g)
    keep, _ = nms_with_scoring(
        boxes, cls_scores, torch.zeros(n, dtype=torch.int64), ious, "iou_guided_nms", 0.5
    )
    expected = sorted(range(n), key=lambda i: (-cls_scores[i].item(), -ious[i].item()))
    assert keep.tolist() == expected
