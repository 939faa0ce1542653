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
