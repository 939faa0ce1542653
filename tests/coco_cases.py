"""Generated COCO evaluation cases shared by the evaluation and statistics tests: realistic
enough to exercise every branch of pycocotools' matching and accumulation (many detections
per image, several classes, all three area ranges, crowd regions, tied scores, an image
without detections, a class without ground truth)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SIZE = 640


def coco_case(
    seed: int,
    num_images: int = 12,
    num_classes: int = 5,
    max_objects: int = 12,
    copies: int = 4,
    false_positives: int = 40,
    crowd_rate: float = 0.1,
    score_decimals: int | None = None,
) -> tuple[dict, list[dict]]:
    """(ground truth, predictions): log-uniform box sizes (small, medium and large),
    ``copies`` noisy detections per object, false positives; the last image has no
    detections and the last class no ground truth."""
    rng = np.random.default_rng(seed)
    images = [
        {"id": i, "file_name": f"{i}.png", "width": SIZE, "height": SIZE}
        for i in range(1, num_images + 1)
    ]
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    anns: list[dict] = []
    for image in images:
        for _ in range(int(rng.integers(0, max_objects + 1))):
            w, h = np.exp(rng.uniform(np.log(4), np.log(400), 2))
            x, y = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
            crowd = int(rng.uniform() < crowd_rate)
            anns.append({"id": len(anns) + 1, "image_id": image["id"],
                         "category_id": int(rng.integers(1, num_classes)),
                         "bbox": [float(x), float(y), float(w), float(h)],
                         "area": float(w * h), "iscrowd": crowd})  # fmt: skip
    preds: list[dict] = []

    def score() -> float:
        s = float(rng.uniform())
        return s if score_decimals is None else round(s, score_decimals)

    for ann in anns:
        if ann["image_id"] == num_images:
            continue
        x, y, w, h = ann["bbox"]
        for _ in range(int(rng.integers(0, copies + 1))):
            j = rng.normal(0, 0.06, 4) * [w, h, w, h]
            preds.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                          "bbox": [x + j[0], y + j[1], abs(w + j[2]), abs(h + j[3])],
                          "score": score()})  # fmt: skip
    for _ in range(false_positives):
        w, h = np.exp(rng.uniform(np.log(2), np.log(300), 2))
        preds.append({"image_id": int(rng.integers(1, num_images)),
                      "category_id": int(rng.integers(1, num_classes + 1)),
                      "bbox": [float(v) for v in (*rng.uniform(0, SIZE - 300, 2), w, h)],
                      "score": score()})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": categories}, preds


CASES = {
    "100-per-image": {"seed": 0, "num_images": 10, "max_objects": 24, "copies": 8,
                      "false_positives": 300},
    # over 100 detections per image (pycocotools' maxDets cut), many tied scores
    "crowded-ties": {"seed": 1, "num_images": 6, "max_objects": 30, "copies": 12,
                     "false_positives": 300, "score_decimals": 1},
    "crowd-regions": {"seed": 2, "num_images": 20, "num_classes": 3, "max_objects": 4,
                      "copies": 2, "crowd_rate": 0.3, "score_decimals": 2},
}  # fmt: skip


def detections_per_image(gt: dict, preds: list[dict]) -> np.ndarray:
    """Number of detections of each image id ``0..num_images`` (index 0 unused)."""
    return np.bincount([p["image_id"] for p in preds], minlength=len(gt["images"]) + 1)


def run_pycocotools(gt: dict, preds: list[dict]) -> COCOeval:
    """pycocotools itself on a case (evaluate, accumulate, summarize; prints swallowed): the
    independent reference the evaluation and statistics tests compare with."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(json.loads(json.dumps(preds))), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e
