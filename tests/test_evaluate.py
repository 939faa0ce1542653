"""COCO-protocol evaluation: hand-worked cases with known IoUs, and every derived number
recomputed from pycocotools' raw arrays."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from coco_cases import coco_case, detections_per_image, run_pycocotools

from eiou import evaluate, provenance
from eiou.cli import main
from eiou.config import load_run_config

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


_raw = run_pycocotools


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


def _few_per_image() -> tuple[dict, list[dict]]:
    """1-5 objects an image, most detected once, some false positives; class 4 unused."""
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
    return gt, preds


def _crowded() -> tuple[dict, list[dict]]:
    """Up to 30 objects an image with up to 12 detections each plus false positives: most
    images hold far more than 10 detections and some more than 100, so every number read at
    the wrong ``maxDets`` (1, 10 instead of 100) changes."""
    gt, preds = coco_case(1, num_images=8, num_classes=4, max_objects=30, copies=12,
                               false_positives=300)  # fmt: skip
    per_image = detections_per_image(gt, preds)
    assert per_image.max() > 100 and np.median(per_image[1:-1]) > 20
    return gt, preds


@pytest.mark.parametrize("case", [_few_per_image, _crowded], ids=["few-per-image", "crowded"])
def test_everything_matches_pycocotools_raw_arrays(case) -> None:
    gt, preds = case()
    m = evaluate.evaluate_predictions(gt, preds)
    e = _raw(gt, preds)
    # pycocotools' own layout, named here rather than looked up in its params
    area_all, max_dets_100 = 0, 2
    assert list(e.params.areaRngLbl)[area_all] == "all" and e.params.maxDets[max_dets_100] == 100
    precision = e.eval["precision"][:, :, :, area_all, max_dets_100]  # (T, R, K)
    recall = e.eval["recall"][:, :, area_all, max_dets_100]  # (T, K)
    for t in range(10):
        r = recall[t]
        assert m["recall_per_iou"][t] == pytest.approx(r[r > -1].mean(), rel=1e-12)
        p = precision[t]
        assert m["ap_per_iou"][t] == pytest.approx(p[p > -1].mean(), rel=1e-12)
    p90 = precision[8]
    assert 0 < m["AP90"] < m["AP75"] < m["AP50"]
    assert m["AP90"] == pytest.approx(p90[p90 > -1].mean(), rel=1e-12)
    for key, value in zip(evaluate.SUMMARY_KEYS, e.stats, strict=True):
        assert m[key] == (None if value < 0 else pytest.approx(value, rel=1e-12))
    # AP is the mean over the ten thresholds; AP50 / AP75 are two of them
    assert m["AP"] == pytest.approx(np.mean(m["ap_per_iou"]))
    assert m["AP50"] == pytest.approx(m["ap_per_iou"][0])
    assert m["AP75"] == pytest.approx(m["ap_per_iou"][5])
    assert m["AR100"] == pytest.approx(np.mean(m["recall_per_iou"]))
    num_classes = len(gt["categories"])
    for k in range(num_classes - 1):
        pk = precision[:, :, k]
        assert m["per_class_AP"][f"class{k + 1}"] == pytest.approx(pk[pk > -1].mean(), rel=1e-12)
    assert m["per_class_AP"][f"class{num_classes}"] is None


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


def test_error_messages_name_what_is_wrong() -> None:
    gt = _gt([[(1, [10, 10, 50, 50])]])
    bad_images = [{"image_id": i, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}
                  for i in range(10, 16)]  # fmt: skip
    with pytest.raises(ValueError) as err:
        evaluate.evaluate_predictions(gt, bad_images)
    assert str(err.value) == (
        "predictions do not match the ground truth: 6 image ids not in the ground truth, "
        "e.g. [10, 11, 12, 13, 14]"
    )
    bad_cats = [{"image_id": 1, "category_id": c, "bbox": [0, 0, 1, 1], "score": 1}
                for c in range(3, 15)]  # fmt: skip
    with pytest.raises(ValueError) as err:
        evaluate.evaluate_predictions(gt, bad_cats + bad_images[:1])
    assert str(err.value) == (
        "predictions do not match the ground truth: 1 image ids not in the ground truth, "
        "e.g. [10]; category ids not in the ground truth: [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]"
    )
    no_score = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}
    short_box = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}
    for bad in (no_score, short_box):
        with pytest.raises(ValueError) as err:
            evaluate.evaluate_predictions(gt, [bad, bad])
        assert str(err.value) == (  # one example is enough
            "predictions do not match the ground truth: detection without a 4-number bbox "
            f"and a score: {bad}"
        )
    with pytest.raises(ValueError) as err:
        evaluate.evaluate_predictions({**gt, "annotations": []}, [])
    assert str(err.value) == (
        "the ground truth has no annotations (a test-dev split?): nothing to evaluate; write a "
        "server results file with write_coco_results instead"
    )


def test_ground_truth_dict_is_not_modified_and_engine_output_is_logged(caplog) -> None:
    """pycocotools marks ground truth as ignored in place: the caller's dict is copied.
    Its prints go to the debug log, labelled."""
    gt = _gt([[(1, [10, 10, 50, 50]), (2, [100, 100, 30, 30])], [(1, [5, 5, 20, 20])]])
    before = json.loads(json.dumps(gt))
    preds = [{"image_id": 1, "category_id": 1, "bbox": [12, 10, 50, 50], "score": 0.8}]
    with caplog.at_level("DEBUG", logger="eiou.evaluate"):
        m = evaluate.evaluate_predictions(gt, preds)
    assert gt == before
    assert m["num_images"] == 2 and m["num_predictions"] == 1 and m["units"] == "fraction"
    messages = [r.getMessage() for r in caplog.records]
    assert any(msg.startswith("pycocotools index:") for msg in messages)
    assert any(msg.startswith("pycocotools evaluate:") for msg in messages)


def test_version_falls_back_to_the_imported_module(monkeypatch) -> None:
    import types

    module = types.ModuleType("eiou_test_unpackaged")
    module.__version__ = "1.2.3"
    monkeypatch.setitem(sys.modules, "eiou_test_unpackaged", module)
    assert provenance.package_version("eiou_test_unpackaged") == "1.2.3"
    assert provenance.package_version("eiou_test_not_there") is None
    monkeypatch.setitem(sys.modules, "eiou_test_no_version", types.ModuleType("x"))
    assert provenance.package_version("eiou_test_no_version") is None
    assert provenance.package_version("numpy") == np.__version__


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


def test_provenance_of_a_run_spec() -> None:
    """Every field, from a run config."""
    import datetime as dt
    import platform

    model = {"box_loss": {"name": "giou"}, "iou_head": {"enabled": True}}
    data = {"name": "shapes", "kind": "coco"}
    spec = load_run_config({"name": "r2", "seed": 11, "data": data, "model": model})
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    record = evaluate.provenance(spec)
    stamp = dt.datetime.fromisoformat(record["timestamp"])
    assert stamp.utcoffset() == dt.timedelta(0)
    assert before <= stamp <= dt.datetime.now(dt.UTC)
    assert record["platform"] == {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }
    assert {k: record[k] for k in ("run_id", "seed", "box_loss", "gradient_mode", "iou_head",
                                   "scoring", "dataset")} == {
        "run_id": "r2", "seed": 11, "box_loss": "giou", "gradient_mode": "autograd",
        "iou_head": {"enabled": True, "weight": 1.0, "negatives": False}, "scoring": "cls",
        "dataset": "shapes",
    }  # fmt: skip
    assert set(record) >= {"git_commit", "git_dirty", "versions"}
    empty = evaluate.provenance()
    assert empty["run_id"] is None and empty["seed"] is None and empty["dataset"] is None


def _git(*args: str) -> subprocess.CompletedProcess:
    here = Path(provenance.__file__).resolve().parent
    return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, check=False)


def test_git_commit_of_the_package_checkout(tmp_path: Path, monkeypatch) -> None:
    """The commit and dirtiness of the checkout that holds the package, wherever the
    process runs; ``(None, None)`` where git cannot tell."""
    monkeypatch.chdir(tmp_path)  # not a checkout: the package's folder is what counts
    head = _git("rev-parse", "HEAD")
    commit, dirty = provenance.git_commit()
    if head.returncode != 0:  # an installed copy outside git
        assert (commit, dirty) == (None, None)
        return
    assert commit == head.stdout.strip() and isinstance(commit, str) and len(commit) == 40
    status = _git("status", "--porcelain", "--untracked-files=no").stdout
    assert dirty is bool(status.strip())

    def fake_run(returncodes):
        calls = iter(returncodes)

        def run(args, **kwargs):
            return subprocess.CompletedProcess(args, next(calls), stdout="abc\n", stderr="")

        return run

    monkeypatch.setattr(subprocess, "run", fake_run([1]))
    assert provenance.git_commit() == (None, None)  # not a repository
    monkeypatch.setattr(subprocess, "run", fake_run([0, 1]))
    assert provenance.git_commit() == ("abc", None)  # status failed: unknown dirtiness
    monkeypatch.setattr(subprocess, "run", fake_run([0, 0]))
    assert provenance.git_commit() == ("abc", True)

    def missing_git(args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", missing_git)
    assert provenance.git_commit() == (None, None)


def test_git_dirty_means_modified_tracked_files(tmp_path: Path, monkeypatch) -> None:
    """In a throw-away repository holding the package: an untracked file leaves the tree
    clean, a modified tracked file makes it dirty."""
    repo = tmp_path / "repo"
    (repo / "eiou").mkdir(parents=True)
    (repo / "eiou" / "provenance.py").write_text("x = 1\n")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "c")
    monkeypatch.setattr(provenance, "__file__", str(repo / "eiou" / "provenance.py"))
    assert provenance.git_commit() == (git("rev-parse", "HEAD"), False)
    (repo / "untracked.txt").write_text("u")
    assert provenance.git_commit()[1] is False
    (repo / "eiou" / "provenance.py").write_text("x = 2\n")
    assert provenance.git_commit()[1] is True


def test_load_predictions_needs_a_list(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(ValueError, match="expected a JSON list of detections"):
        evaluate.load_predictions(path)


def test_coco_results_format(tmp_path: Path) -> None:
    name = evaluate.results_file_name("eiou_ct sot")
    assert name == "detections_test-dev2017_eiou-ct-sot_results.json"
    path = tmp_path / name
    evaluate.write_coco_results(path, [{"image_id": 3, "category_id": 18, "bbox": [1.23456, 2,
                                       3.339, 4.0], "score": 0.876543, "label": 2}])  # fmt: skip
    assert json.loads(path.read_text()) == [
        {"image_id": 3, "category_id": 18, "bbox": [1.23, 2.0, 3.34, 4.0], "score": 0.877}
    ]
    assert len(path.read_text().splitlines()) == 1  # compact: uploads are large


def test_server_zip_holds_only_the_named_results(tmp_path: Path) -> None:
    import zipfile

    preds = [{"image_id": 1, "category_id": 2, "bbox": [0.123, 1, 2, 3], "score": 0.5}]
    path = evaluate.write_server_zip(tmp_path / "upload.zip", preds, "run_a")
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["detections_test-dev2017_run-a_results.json"]
        rows = json.loads(archive.read(archive.namelist()[0]))
    assert rows == [{"image_id": 1, "category_id": 2, "bbox": [0.12, 1.0, 2.0, 3.0], "score": 0.5}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload.zip"]
    # another split names the file after it; the entry is compressed
    other = evaluate.write_server_zip(tmp_path / "val.zip", preds, "run_a", split="val2017")
    with zipfile.ZipFile(other) as archive:
        (info,) = archive.infolist()
    assert info.filename == "detections_val2017_run-a_results.json"
    assert info.compress_type == zipfile.ZIP_DEFLATED


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
