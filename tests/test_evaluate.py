"""COCO-protocol evaluation: hand-worked cases with known IoUs, and every derived number
recomputed from pycocotools' raw arrays."""

from __future__ import annotations

import contextlib
import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from eiou import evaluate
from eiou.cli import main

THRESHOLDS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def _gt(boxes_per_image: list[list[tuple[int, list[float]]]], num_classes: int = 2) -> dict:
    """COCO dict; ``boxes_per_image[i]`` is a list of (category_id, [x, y, w, h])."""
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": i, "file_name": f"{i}.png", "width": 400, "height": 400})
        for cat, bbox in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": bbox,
                         "area": bbox[2] * bbox[3], "iscrowd": 0})  # fmt: skip
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": anns, "categories": cats}


def _shift(bbox: list[float], dx: float) -> list[float]:
    return [bbox[0] + dx, bbox[1], bbox[2], bbox[3]]


def _raw(gt: dict, preds: list[dict]) -> COCOeval:
    """pycocotools run by the test itself."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(json.loads(json.dumps(preds))), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def test_perfect_predictions_score_one() -> None:
    gt = _gt([[(1, [10, 10, 50, 40]), (2, [100, 120, 30, 90])], [(1, [5, 200, 200, 150])]])
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
              "score": 0.9} for a in gt["annotations"]]  # fmt: skip
    m = evaluate.evaluate_predictions(gt, preds)
    for key in ("AP", "AP50", "AP75", "AP90", "AR1", "AR100"):
        assert m[key] == pytest.approx(1.0)
    assert m["ap_per_iou"] == pytest.approx([1.0] * 10)
    assert m["recall_per_iou"] == pytest.approx([1.0] * 10)
    assert m["per_class_AP"] == pytest.approx({"class1": 1.0, "class2": 1.0})
    assert m["iou_thresholds"] == THRESHOLDS


def test_shift_with_known_iou() -> None:
    # width 37 shifted by 3: IoU = 34 / 40 = 0.85; width 43 shifted by 7: 36 / 50 = 0.72
    gt = _gt([[(1, [20, 30, 37, 60])], [(1, [50, 50, 43, 20])]], num_classes=1)
    preds = [
        {"image_id": 1, "category_id": 1, "bbox": _shift([20, 30, 37, 60], 3), "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": _shift([50, 50, 43, 20], -7), "score": 0.8},
    ]
    m = evaluate.evaluate_predictions(gt, preds)
    # both matched up to 0.70; only the 0.85 one at 0.75 and 0.80; none at 0.90 and 0.95
    assert m["recall_per_iou"][:5] == pytest.approx([1.0] * 5)
    assert m["recall_per_iou"][5:7] == pytest.approx([0.5, 0.5])
    assert m["recall_per_iou"][8:] == pytest.approx([0.0, 0.0])
    assert m["ap_per_iou"][:5] == pytest.approx([1.0] * 5)
    # at 0.75 and 0.80 the higher-scored detection is the true positive: precision 1 up to
    # recall 0.5 and nothing beyond, i.e. 51 of the 101 recall points
    assert m["ap_per_iou"][5:7] == pytest.approx([51 / 101] * 2)
    assert m["AP90"] == 0.0
    assert m["AP75"] == pytest.approx(51 / 101)
    assert m["AP50"] == pytest.approx(1.0)


def test_single_box_at_iou_085() -> None:
    # IoU 34 / 40 = 0.85: a true positive up to the 0.80 threshold, a miss at 0.90
    gt = _gt([[(1, [20, 30, 37, 60])]], num_classes=1)
    pred = [{"image_id": 1, "category_id": 1, "bbox": _shift([20, 30, 37, 60], -3), "score": 1}]
    m = evaluate.evaluate_predictions(gt, pred)
    assert m["ap_per_iou"][:7] == pytest.approx([1.0] * 7)  # 0.50 ... 0.80
    assert m["AP90"] == 0.0 and m["ap_per_iou"][9] == 0.0
    assert m["recall_per_iou"][6] == 1.0 and m["recall_per_iou"][8] == 0.0


def test_everything_matches_pycocotools_raw_arrays() -> None:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(12):
        boxes = []
        for _ in range(int(rng.integers(1, 6))):
            w, h = rng.uniform(8, 150, 2)
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 400 - h)
            boxes.append((int(rng.integers(1, 4)), [float(x), float(y), float(w), float(h)]))
        images.append(boxes)
    gt = _gt(images, num_classes=4)  # class 4 has no ground truth
    preds = []
    for ann in gt["annotations"]:
        if rng.uniform() < 0.85:
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
            preds.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                          "bbox": [x + jitter[0], y + jitter[1], abs(w + jitter[2]),
                                   abs(h + jitter[3])],
                          "score": float(rng.uniform(0.3, 1))})  # fmt: skip
    for _ in range(15):  # false positives
        preds.append({"image_id": int(rng.integers(1, 13)), "category_id": int(rng.integers(1, 5)),
                      "bbox": [float(v) for v in rng.uniform(0, 200, 4)],
                      "score": float(rng.uniform(0, 0.6))})  # fmt: skip
    m = evaluate.evaluate_predictions(gt, preds)
    e = _raw(gt, preds)
    precision, recall = e.eval["precision"], e.eval["recall"]
    for t in range(10):
        r = recall[t, :, 0, 2]
        assert m["recall_per_iou"][t] == pytest.approx(r[r > -1].mean())
        p = precision[t, :, :, 0, 2]
        assert m["ap_per_iou"][t] == pytest.approx(p[p > -1].mean())
    p90 = precision[8, :, :, 0, 2]
    assert 0 < m["AP90"] < m["AP75"] < m["AP50"]
    assert m["AP90"] == pytest.approx(p90[p90 > -1].mean())
    for key, value in zip(evaluate.SUMMARY_KEYS, e.stats, strict=True):
        assert m[key] == (None if value < 0 else pytest.approx(value))
    # AP is the mean over the ten thresholds; AP50 / AP75 are two of them
    assert m["AP"] == pytest.approx(np.mean(m["ap_per_iou"]))
    assert m["AP50"] == pytest.approx(m["ap_per_iou"][0])
    assert m["AP75"] == pytest.approx(m["ap_per_iou"][5])
    assert m["AR100"] == pytest.approx(np.mean(m["recall_per_iou"]))
    for k in range(3):
        pk = precision[:, :, k, 0, 2]
        assert m["per_class_AP"][f"class{k + 1}"] == pytest.approx(pk[pk > -1].mean())
    assert m["per_class_AP"]["class4"] is None


def test_per_class_ap_by_name() -> None:
    gt = _gt([[(1, [10, 10, 50, 50]), (2, [200, 200, 60, 60])]])
    preds = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9},
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 30, 30], "score": 0.9},  # a miss
    ]
    m = evaluate.evaluate_predictions(gt, preds)
    assert m["per_class_AP"] == pytest.approx({"class1": 1.0, "class2": 0.0})
    assert m["AP"] == pytest.approx(0.5)


def test_empty_predictions_give_zeros_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    gt = _gt([[(1, [10, 10, 50, 50])], [(2, [20, 20, 150, 150])]])
    m = evaluate.evaluate_predictions(gt, [])
    assert m["AP"] == m["AP50"] == m["AP90"] == m["AR100"] == 0.0
    assert m["recall_per_iou"] == [0.0] * 10
    assert m["APs"] is None  # no small ground truth: undefined, as pycocotools' -1
    assert m["num_predictions"] == 0
    evaluate.evaluate_predictions(gt, [{"image_id": 1, "category_id": 1,
                                        "bbox": [10, 10, 50, 50], "score": 1.0}])  # fmt: skip
    assert capsys.readouterr().out == ""


def test_mismatched_predictions_and_missing_ground_truth_are_errors() -> None:
    gt = _gt([[(1, [10, 10, 50, 50])]])
    with pytest.raises(ValueError, match="image ids"):
        evaluate.evaluate_predictions(
            gt, [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]
        )
    with pytest.raises(ValueError, match="category ids"):
        evaluate.evaluate_predictions(
            gt, [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1], "score": 1}]
        )
    with pytest.raises(ValueError, match="no annotations"):
        evaluate.evaluate_predictions({**gt, "annotations": []}, [])


def test_write_metrics_and_provenance(tmp_path: Path) -> None:
    config = {"name": "r1", "seed": 7, "model": {"scoring": {"method": "iou_guided_nms"},
              "iou_head": {"enabled": True},
              "box_loss": {"name": "eiou", "gradient": "paper"}}}  # fmt: skip
    record = evaluate.provenance(config, extra_key="x")
    assert record["seed"] == 7 and record["run_id"] == "r1"
    assert record["scoring"] == "iou_guided_nms"
    assert record["gradient_mode"] == "paper" and record["extra_key"] == "x"
    assert set(record["versions"]) >= {"python", "torch", "torchvision", "pycocotools",
                                       "numpy", "eiou"}  # fmt: skip
    assert record["versions"]["numpy"] == np.__version__
    assert record["git_commit"] is None or len(record["git_commit"]) == 40
    path = tmp_path / "out" / "metrics.json"
    evaluate.write_metrics(path, {"AP": 0.5}, record)
    text = path.read_text()
    loaded = json.loads(text)
    assert loaded["AP"] == 0.5 and loaded["provenance"]["run_id"] == "r1"
    host = socket.gethostname()
    assert "hostname" not in text and (len(host) < 4 or host not in text)
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporaries


def _case_with_crowd() -> tuple[dict, list[dict]]:
    """Two classes (the third without ground truth), a crowd region, an empty image, a
    detection matched only at low thresholds, false positives and tied scores."""
    gt = _gt([[(1, [10, 10, 50, 40]), (2, [100, 120, 30, 90])],
              [(1, [5, 200, 200, 150]), (1, [300, 20, 60, 60])], [], [(2, [40, 40, 80, 80])]],
             num_classes=3)  # fmt: skip
    gt["annotations"][3]["iscrowd"] = 1  # the second box of image 2
    preds = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 40], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [12, 11, 50, 40], "score": 0.9},
        {"image_id": 1, "category_id": 2, "bbox": _shift([100, 120, 30, 90], 6), "score": 0.8},
        {"image_id": 2, "category_id": 1, "bbox": [5, 200, 190, 150], "score": 0.7},
        {"image_id": 2, "category_id": 1, "bbox": [305, 25, 50, 50], "score": 0.6},  # crowd
        {"image_id": 3, "category_id": 2, "bbox": [0, 0, 20, 20], "score": 0.95},
        {"image_id": 4, "category_id": 3, "bbox": [40, 40, 80, 80], "score": 0.5},
    ]
    return gt, preds


def test_image_records_are_the_evaluators_per_image_results(tmp_path: Path) -> None:
    gt, preds = _case_with_crowd()
    e = _raw(gt, preds)
    metrics, records = evaluate.evaluate_with_records(gt, preds)
    assert metrics == {
        **evaluate.evaluate_predictions(gt, preds),
        "evaluator": metrics["evaluator"],
    }
    assert records.image_ids.tolist() == [1, 2, 3, 4]
    assert records.category_ids.tolist() == [1, 2, 3]
    assert records.iou_thresholds.tolist() == pytest.approx(THRESHOLDS)
    n_img, n_area = 4, len(e.params.areaRng)
    expected_gt = np.zeros((3, 4), dtype=int)
    rows = []
    for k in range(3):
        for i in range(n_img):
            entry = e.evalImgs[k * n_area * n_img + i]  # area "all" is the first range
            if entry is None:
                continue
            assert entry["aRng"] == [0, 1e10] and entry["maxDet"] == 100
            expected_gt[k, i] = int(np.sum(np.asarray(entry["gtIgnore"]) == 0))
            for d, score in enumerate(entry["dtScores"]):
                rows.append((k, i, score, entry["dtMatches"][:, d] > 0, entry["dtIgnore"][:, d]))
    assert records.num_gt.tolist() == expected_gt.tolist()
    assert expected_gt.tolist() == [[1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]  # crowd not counted
    assert records.num_detections == len(rows) == len(preds)
    for n, (k, i, score, matched, ignored) in enumerate(rows):
        assert (records.det_category[n], records.det_image[n]) == (k, i)
        assert records.det_score[n] == score
        assert records.det_matched[n].tolist() == matched.tolist()
        assert records.det_ignored[n].tolist() == np.asarray(ignored, bool).tolist()
    # the crowd-matched detection is ignored, not a false positive; the shifted one is
    # matched up to IoU 24/36 = 0.67 only
    crowd = int(np.flatnonzero(records.det_score == 0.6)[0])
    assert records.det_ignored[crowd].all() and records.det_matched[crowd].all()
    shifted = int(np.flatnonzero(records.det_score == 0.8)[0])
    assert records.det_matched[shifted].tolist() == [True] * 4 + [False] * 6

    path = tmp_path / "r" / evaluate.RECORDS_FILE
    evaluate.write_image_records(path, records)
    loaded = evaluate.load_image_records(path)
    for name in ("image_ids", "category_ids", "iou_thresholds", "num_gt", "det_category",
                 "det_image", "det_score", "det_matched", "det_ignored"):  # fmt: skip
        a, b = getattr(records, name), getattr(loaded, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert loaded.evaluator == "pycocotools"
    assert sorted(p.name for p in path.parent.iterdir()) == [evaluate.RECORDS_FILE]


def test_image_records_are_compact(tmp_path: Path) -> None:
    """2000 detections on 200 images and 10 classes: flags bit-packed, compressed."""
    rng = np.random.default_rng(3)
    images = [[(int(rng.integers(1, 11)), [float(v) for v in (*rng.uniform(0, 300, 2), 40, 40)])
               for _ in range(3)] for _ in range(200)]  # fmt: skip
    gt = _gt(images, num_classes=10)
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"],
              "bbox": _shift(a["bbox"], float(rng.normal(0, 4))), "score": float(rng.uniform())}
             for a in gt["annotations"] for _ in range(3)]  # fmt: skip
    _, records = evaluate.evaluate_with_records(gt, preds + preds[:200])
    path = tmp_path / "eval_images.npz"
    evaluate.write_image_records(path, records)
    assert records.num_detections == 2000
    # scores (8 bytes) + two indices (4 + 4) + two packed flag rows (2 + 2) per detection
    assert path.stat().st_size < 2000 * 20 + 200 * 10 * 4 + 4096


def test_coco_results_format(tmp_path: Path) -> None:
    name = evaluate.results_file_name("eiou_ct sot")
    assert name == "detections_test-dev2017_eiou-ct-sot_results.json"
    path = tmp_path / name
    evaluate.write_coco_results(path, [{"image_id": 3, "category_id": 18, "bbox": [1.23456, 2,
                                       3.339, 4.0], "score": 0.876543, "label": 2}])  # fmt: skip
    assert json.loads(path.read_text()) == [
        {"image_id": 3, "category_id": 18, "bbox": [1.23, 2.0, 3.34, 4.0], "score": 0.877}
    ]


def test_server_zip_holds_only_the_named_results(tmp_path: Path) -> None:
    import zipfile

    preds = [{"image_id": 1, "category_id": 2, "bbox": [0.123, 1, 2, 3], "score": 0.5}]
    path = evaluate.write_server_zip(tmp_path / "upload.zip", preds, "run_a")
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["detections_test-dev2017_run-a_results.json"]
        rows = json.loads(archive.read(archive.namelist()[0]))
    assert rows == [{"image_id": 1, "category_id": 2, "bbox": [0.12, 1.0, 2.0, 3.0], "score": 0.5}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload.zip"]


def test_cli_evaluate(tmp_path: Path) -> None:
    gt = _gt([[(1, [10, 10, 50, 50])]])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(
        json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.5}])
    )
    (tmp_path / "run.yaml").write_text("name: abc\nseed: 3\nmodel: {scoring: {method: cls}}\n")
    rc = main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--predictions",
               str(tmp_path / "pred.json"), "--output", str(tmp_path / "m.json"),
               "--run-config", str(tmp_path / "run.yaml")])  # fmt: skip
    assert rc == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["provenance"]["seed"] == 3 and metrics["provenance"]["run_id"] == "abc"
    assert metrics["provenance"]["scoring"] == "cls"
    environment = metrics["provenance"]["environment"]
    assert environment["threads"]["torch_num_threads"] >= 1
    assert "deterministic_algorithms" in environment["determinism"]
    records = evaluate.load_image_records(tmp_path / evaluate.RECORDS_FILE)
    assert records.num_detections == 1 and records.det_matched.all()
    # an explicit records path; an invalid run config is an error, not a silent default
    out = tmp_path / "elsewhere" / "records.npz"
    rc = main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--predictions",
               str(tmp_path / "pred.json"), "--output", str(tmp_path / "m2.json"),
               "--image-records", str(out)])  # fmt: skip
    assert rc == 0 and out.exists()
    (tmp_path / "bad.yaml").write_text("model: {box_loss: {name: smooth_l1, power: -1}}\n")
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--predictions",
              str(tmp_path / "pred.json"), "--output", str(tmp_path / "m3.json"),
              "--run-config", str(tmp_path / "bad.yaml")])  # fmt: skip
    assert stop.value.code == 2 and not (tmp_path / "m3.json").exists()
