"""COCO-protocol evaluation (pycocotools), metrics files with provenance, server results.

The evaluation engine is pycocotools (the paper's reference) unless ``backend`` says
``"faster_coco_eval"`` (its C++ re-implementation, extra ``eiou[fast]``; the same numbers
to 1e-12, faster) or ``"auto"`` (that one where installed). Either way every metric below
is read from the engine's ``eval["precision"]`` / ``eval["recall"]`` and ``stats`` by the
same code.

Metrics are fractions in ``[0, 1]`` (pycocotools' convention; ``"units": "fraction"``).
A value is ``None`` where pycocotools has nothing to average (``-1``: no ground truth of
that class or area range).

- ``AP``: mean over IoU 0.50:0.05:0.95; ``AP50``, ``AP75``; ``APs/m/l`` by area;
  ``AR1/10/100`` by detections per image; ``ARs/m/l`` (100 detections): pycocotools' own
  twelve summaries.
- ``AP90``: AP at the single IoU threshold 0.90 (area all, 100 detections), read from
  ``COCOeval.eval["precision"]`` the way pycocotools computes AP50 and AP75.
- ``ap_per_iou``, ``recall_per_iou``: AP and recall (averaged over classes, area all, 100
  detections) at each threshold in ``iou_thresholds`` (the paper's Fig 7 is recall).
- ``per_class_AP``: class name -> AP (area all, 100 detections).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io as _io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from eiou.io import atomic_open, write_json
from eiou.provenance import package_version, provenance

__all__ = [
    "BACKENDS",
    "IOU_THRESHOLDS",
    "RECORDS_FILE",
    "RECORD_MAX_DETECTIONS",
    "SUMMARY_KEYS",
    "ImageRecords",
    "evaluate_predictions",
    "evaluate_with_records",
    "image_records",
    "load_ground_truth",
    "load_image_records",
    "load_predictions",
    "provenance",
    "records_path_for",
    "results_file_name",
    "write_coco_results",
    "write_image_records",
    "write_metrics",
    "write_server_zip",
]

log = logging.getLogger(__name__)

#: pycocotools' IoU thresholds 0.50, 0.55, ..., 0.95.
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: The order of ``COCOeval.stats``.
SUMMARY_KEYS: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip
#: Values of ``evaluate_predictions(backend=...)``.
BACKENDS: tuple[str, ...] = ("pycocotools", "faster_coco_eval", "auto")


@contextlib.contextmanager
def _quiet(what: str):
    """Route pycocotools' prints to the logger (DEBUG)."""
    buffer = _io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    text = buffer.getvalue().strip()
    if text:
        log.debug("pycocotools %s:\n%s", what, text)


def load_ground_truth(source: str | os.PathLike[str] | Mapping[str, Any] | COCO) -> COCO:
    """A ``COCO`` object from a JSON path, a parsed dict or a ``COCO`` (returned as is)."""
    if isinstance(source, COCO):
        return source
    if isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    else:
        with open(source, encoding="utf-8") as handle:
            data = json.load(handle)
    coco = COCO()
    coco.dataset = data
    with _quiet("index"):
        coco.createIndex()
    return coco


def load_predictions(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """A COCO results file: a list of ``{image_id, category_id, bbox [x, y, w, h], score}``."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of detections")
    return data


def _check_predictions(coco_gt: COCO, predictions: Sequence[Mapping[str, Any]]) -> None:
    images, categories = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    bad_images = {p["image_id"] for p in predictions} - images
    bad_cats = {p["category_id"] for p in predictions} - categories
    problems = []
    if bad_images:
        problems.append(
            f"{len(bad_images)} image ids not in the ground truth, e.g. {sorted(bad_images)[:5]}"
        )
    if bad_cats:
        problems.append(f"category ids not in the ground truth: {sorted(bad_cats)[:10]}")
    for p in predictions:
        if len(p.get("bbox", ())) != 4 or "score" not in p:
            problems.append(f"detection without a 4-number bbox and a score: {dict(p)}")
            break
    if problems:
        raise ValueError("predictions do not match the ground truth: " + "; ".join(problems))


def _mean_valid(values: np.ndarray) -> float | None:
    """pycocotools' average: the mean over entries > -1, None if there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def _engine(backend: str) -> tuple[Any, Any, dict[str, str | None]]:
    """(COCO class, COCOeval factory, ``{"name", "version"}``) of an evaluation backend."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}; choose from {BACKENDS}")
    if backend != "pycocotools":
        try:
            import faster_coco_eval
        except ImportError as err:
            if backend == "faster_coco_eval":
                raise ImportError(
                    'backend="faster_coco_eval" needs the faster-coco-eval package: '
                    'pip install "eiou[fast]"'
                ) from err
        else:
            return (
                faster_coco_eval.COCO,
                functools.partial(faster_coco_eval.COCOeval_faster, print_function=log.debug),
                {"name": "faster_coco_eval", "version": faster_coco_eval.__version__},
            )
    return COCO, COCOeval, {"name": "pycocotools", "version": package_version("pycocotools")}


def _evaluated(
    coco_gt: COCO | str | os.PathLike[str] | Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    backend: str,
    separate: bool,
) -> tuple[Any, COCO, int, dict[str, str | None]]:
    """(evaluated, accumulated and summarised COCOeval, ground truth, number of predictions,
    engine). ``separate``: faster_coco_eval keeps its per-image results (for records)."""
    coco_cls, cocoeval, engine = _engine(backend)
    gt = load_ground_truth(coco_gt)
    if not gt.dataset.get("annotations"):
        raise ValueError(
            "the ground truth has no annotations (a test-dev split?): nothing to evaluate; "
            "write a server results file with write_coco_results instead"
        )
    preds = (
        predictions
        if not isinstance(predictions, (str, os.PathLike))
        else (load_predictions(predictions))
    )
    preds = [dict(p) for p in preds]
    _check_predictions(gt, preds)
    with _quiet("evaluate"):
        engine_gt = gt
        if coco_cls is not COCO:  # the same ground truth, indexed by the backend's class
            engine_gt = coco_cls()
            engine_gt.dataset = gt.dataset
            engine_gt.createIndex()
        if preds:
            dt = engine_gt.loadRes(preds)
        else:  # loadRes cannot take an empty list; an empty result set evaluates to zeros
            dt = coco_cls()
            dt.dataset = {
                "images": gt.dataset["images"],
                "categories": gt.dataset["categories"],
                "annotations": [],
            }
            dt.createIndex()
        options = {"separate_eval": True} if separate and coco_cls is not COCO else {}
        evaluator = cocoeval(engine_gt, dt, iouType="bbox", **options)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator, gt, len(preds), engine


def evaluate_predictions(
    coco_gt: COCO | str | os.PathLike[str] | Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    backend: str = "pycocotools",
) -> dict[str, Any]:
    """COCO bbox evaluation of ``predictions`` (COCO results format, ``bbox`` xywh pixels).

    Returns the metrics described in the module docstring plus ``num_images``,
    ``num_predictions``, ``iou_thresholds`` and ``evaluator`` (the backend's name and
    version). Empty predictions give zeros (no crash). ``backend``: ``"pycocotools"`` (the
    reference), ``"faster_coco_eval"`` (same numbers, faster; ``pip install "eiou[fast]"``,
    ImportError without it) or ``"auto"`` (faster_coco_eval where importable).
    """
    evaluator, gt, num_predictions, engine = _evaluated(coco_gt, predictions, backend, False)
    return {**_collect(evaluator, gt, num_predictions), "evaluator": engine}


def evaluate_with_records(
    coco_gt: COCO | str | os.PathLike[str] | Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    backend: str = "pycocotools",
) -> tuple[dict[str, Any], ImageRecords]:
    """:func:`evaluate_predictions` and the per-image records of the same evaluation
    (:class:`ImageRecords`), from which ``eiou.statistics`` recomputes AP on resampled
    test sets. Both backends give the same records."""
    evaluator, gt, num_predictions, engine = _evaluated(coco_gt, predictions, backend, True)
    metrics = {**_collect(evaluator, gt, num_predictions), "evaluator": engine}
    return metrics, image_records(evaluator, engine["name"] or backend)


# --------------------------------------------------------------------------- records
#: Detections per image and class the records keep (pycocotools' last ``maxDets``).
RECORD_MAX_DETECTIONS = 100
#: The file name of a run's records, beside its ``metrics.json``.
RECORDS_FILE = "eval_images.npz"
_RECORDS_FORMAT = 1


def records_path_for(metrics_path: str | os.PathLike[str]) -> Path:
    """Where a metrics file's per-image records go: ``eval_images_<x>.npz`` beside
    ``metrics_<x>.json`` (e.g. the validation split's, which must not replace the test
    split's), else :data:`RECORDS_FILE` beside it."""
    path = Path(metrics_path)
    suffix = path.stem.removeprefix("metrics") if path.stem.startswith("metrics_") else ""
    return path.with_name(Path(RECORDS_FILE).stem + suffix + ".npz")


@dataclass(frozen=True)
class ImageRecords:
    """Per-image results of one COCO bbox evaluation, area "all", 100 detections per image
    and class: what pycocotools' ``accumulate`` reads from ``COCOeval.evalImgs``.

    ``I`` images, ``K`` categories, ``T`` IoU thresholds, ``N`` detections kept (at most 100
    per image and category). Detections are grouped by category, then by image (in the
    order of ``category_ids`` and ``image_ids``); within one (category, image) they are in
    the evaluator's order (score descending, stable), so concatenating one category's
    detections gives pycocotools' concatenation before its merge sort on ``-score``.

    Attributes:
        image_ids: ``(I,)`` int64, sorted (pycocotools' ``params.imgIds``).
        category_ids: ``(K,)`` int64, sorted.
        iou_thresholds: ``(T,)`` float64 (0.50 ... 0.95).
        num_gt: ``(K, I)`` int32, ground truths that are not ignored (not crowd); the
            denominator of recall.
        det_category: ``(N,)`` int32, index into ``category_ids``.
        det_image: ``(N,)`` int32, index into ``image_ids``.
        det_score: ``(N,)`` float64.
        det_matched: ``(N, T)`` bool, matched to a ground truth (crowd included) at each
            threshold (pycocotools' ``dtMatches != 0``).
        det_ignored: ``(N, T)`` bool, ignored at each threshold (matched to a crowd region).
        evaluator: the backend that produced them.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    iou_thresholds: np.ndarray
    num_gt: np.ndarray
    det_category: np.ndarray
    det_image: np.ndarray
    det_score: np.ndarray
    det_matched: np.ndarray
    det_ignored: np.ndarray
    evaluator: str = ""

    @property
    def num_images(self) -> int:
        return int(self.image_ids.size)

    @property
    def num_detections(self) -> int:
        return int(self.det_score.size)


def image_records(evaluator: Any, name: str = "") -> ImageRecords:
    """The :class:`ImageRecords` of an evaluated ``COCOeval`` (bbox, default parameters):
    pycocotools' ``evalImgs`` or, for faster_coco_eval's ``COCOeval_faster`` created with
    ``separate_eval=True``, its C++ per-image results. ``name``: the backend, recorded."""
    params = evaluator.params
    if list(params.maxDets)[-1] != RECORD_MAX_DETECTIONS or not params.useCats:
        raise ValueError("records need the default COCO parameters (maxDets up to 100, by class)")
    image_ids = np.asarray(params.imgIds, dtype=np.int64)
    category_ids = np.asarray(params.catIds, dtype=np.int64)
    thresholds = np.asarray(params.iouThrs, dtype=np.float64)
    n_img, n_cat, n_thr = image_ids.size, category_ids.size, thresholds.size
    n_area = len(params.areaRng)
    area = list(params.areaRngLbl).index("all")
    cpp = getattr(evaluator, "_evalImgs_cpp", None)
    if cpp is None and not isinstance(evaluator.evalImgs, list):
        raise ValueError("the evaluator kept no per-image results (faster_coco_eval needs "
                         "separate_eval=True)")  # fmt: skip
    num_gt = np.zeros((n_cat, n_img), dtype=np.int32)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("cat", "img", "score", "hit", "ign")}
    for k in range(n_cat):
        for i in range(n_img):
            index = k * n_area * n_img + area * n_img + i
            if cpp is None:
                e = evaluator.evalImgs[index]
                if e is None:
                    continue
                scores = np.asarray(e["dtScores"], dtype=np.float64)
                matches = np.asarray(e["dtMatches"]).reshape(n_thr, -1)
                ignored = np.asarray(e["dtIgnore"], dtype=bool).reshape(n_thr, -1)
                gt_ignored = np.asarray(e["gtIgnore"], dtype=bool)
            else:
                state = cpp[index].__getstate__()
                # (detection_matches T*D, gt matches, scores D, gt ignores, dt ignores T*D, ...)
                scores = np.asarray(state[2], dtype=np.float64)
                if not scores.size and not state[3]:
                    continue
                matches = np.asarray(state[0]).reshape(n_thr, scores.size)
                ignored = np.asarray(state[4], dtype=bool).reshape(n_thr, scores.size)
                gt_ignored = np.asarray(state[3], dtype=bool)
            num_gt[k, i] = np.count_nonzero(~gt_ignored)
            d = scores.size
            if not d:
                continue
            parts["cat"].append(np.full(d, k, dtype=np.int32))
            parts["img"].append(np.full(d, i, dtype=np.int32))
            parts["score"].append(scores)
            parts["hit"].append((matches != 0).T)
            parts["ign"].append(ignored.T)

    def cat(key: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.concatenate(parts[key]).astype(dtype) if parts[key] else np.zeros(shape, dtype)

    return ImageRecords(
        image_ids=image_ids,
        category_ids=category_ids,
        iou_thresholds=thresholds,
        num_gt=num_gt,
        det_category=cat("cat", np.int32, (0,)),
        det_image=cat("img", np.int32, (0,)),
        det_score=cat("score", np.float64, (0,)),
        det_matched=cat("hit", bool, (0, n_thr)),
        det_ignored=cat("ign", bool, (0, n_thr)),
        evaluator=name,
    )


def write_image_records(path: str | os.PathLike[str], records: ImageRecords) -> None:
    """Write ``records`` as a compressed ``.npz``, atomically (the flags bit-packed)."""
    with atomic_open(path, "wb") as handle:
        np.savez_compressed(
            handle,
            format=np.int64(_RECORDS_FORMAT),
            max_detections=np.int64(RECORD_MAX_DETECTIONS),
            evaluator=np.str_(records.evaluator),
            image_ids=records.image_ids,
            category_ids=records.category_ids,
            iou_thresholds=records.iou_thresholds,
            num_gt=records.num_gt,
            det_category=records.det_category,
            det_image=records.det_image,
            det_score=records.det_score,
            det_matched=np.packbits(records.det_matched, axis=1),
            det_ignored=np.packbits(records.det_ignored, axis=1),
        )


def load_image_records(path: str | os.PathLike[str]) -> ImageRecords:
    """Read what :func:`write_image_records` wrote."""
    with np.load(path, allow_pickle=False) as data:
        if int(data["format"]) != _RECORDS_FORMAT:
            raise ValueError(f"{path}: records format {int(data['format'])}, expected "
                             f"{_RECORDS_FORMAT}")  # fmt: skip
        n_thr = int(data["iou_thresholds"].size)
        return ImageRecords(
            image_ids=data["image_ids"],
            category_ids=data["category_ids"],
            iou_thresholds=data["iou_thresholds"],
            num_gt=data["num_gt"],
            det_category=data["det_category"],
            det_image=data["det_image"],
            det_score=data["det_score"],
            det_matched=np.unpackbits(data["det_matched"], axis=1, count=n_thr).astype(bool),
            det_ignored=np.unpackbits(data["det_ignored"], axis=1, count=n_thr).astype(bool),
            evaluator=str(data["evaluator"]),
        )


def _collect(evaluator: COCOeval, gt: COCO, num_predictions: int) -> dict[str, Any]:
    params = evaluator.params
    precision = evaluator.eval["precision"]  # (T, R, K, A, M)
    recall = evaluator.eval["recall"]  # (T, K, A, M)
    area_all = list(params.areaRngLbl).index("all")
    max_dets = list(params.maxDets).index(100)
    thresholds = [round(float(t), 2) for t in params.iouThrs]
    metrics: dict[str, Any] = {
        key: (None if value < 0 else float(value))
        for key, value in zip(SUMMARY_KEYS, evaluator.stats, strict=True)
    }
    t90 = thresholds.index(0.9)
    metrics["AP90"] = _mean_valid(precision[t90, :, :, area_all, max_dets])
    metrics["iou_thresholds"] = thresholds
    metrics["ap_per_iou"] = [
        _mean_valid(precision[t, :, :, area_all, max_dets]) for t in range(len(thresholds))
    ]
    metrics["recall_per_iou"] = [
        _mean_valid(recall[t, :, area_all, max_dets]) for t in range(len(thresholds))
    ]
    names = {c["id"]: c["name"] for c in gt.dataset["categories"]}
    metrics["per_class_AP"] = {
        names[cat]: _mean_valid(precision[:, :, k, area_all, max_dets])
        for k, cat in enumerate(params.catIds)
    }
    metrics["num_images"] = len(params.imgIds)
    metrics["num_predictions"] = int(num_predictions)
    metrics["units"] = "fraction"
    ordered = {k: metrics[k] for k in ("AP", "AP50", "AP75", "AP90")}
    ordered.update({k: v for k, v in metrics.items() if k not in ordered})
    return ordered


def write_metrics(
    path: str | os.PathLike[str], metrics: Mapping[str, Any], provenance: Mapping[str, Any]
) -> None:
    """Write ``{**metrics, "provenance": provenance}`` as JSON, atomically."""
    write_json(path, {**dict(metrics), "provenance": dict(provenance)})


def results_file_name(algorithm: str, split: str = "test-dev2017") -> str:
    """The COCO server's file name: ``detections_<split>_<algorithm>_results.json``.

    Characters of ``algorithm`` other than letters, digits and ``-`` become ``-`` (the server
    splits the name at ``_``)."""
    clean = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in algorithm)
    return f"detections_{split}_{clean}_results.json"


def write_coco_results(
    path: str | os.PathLike[str], predictions: Sequence[Mapping[str, Any]], decimals: int = 2
) -> None:
    """Write detections in the COCO evaluation server's format, atomically.

    The server expects ``detections_test-dev2017_<alg>_results.json`` (see
    :func:`results_file_name`) zipped on its own: a list of ``{"image_id", "category_id",
    "bbox": [x, y, w, h], "score"}`` with the box rounded to ``decimals`` and the score to 3
    decimals.
    """
    rows = [
        {
            "image_id": int(p["image_id"]),
            "category_id": int(p["category_id"]),
            "bbox": [round(float(v), decimals) for v in p["bbox"]],
            "score": round(float(p["score"]), 3),
        }
        for p in predictions
    ]
    write_json(path, rows, indent=None)


def write_server_zip(
    path: str | os.PathLike[str],
    predictions: Sequence[Mapping[str, Any]],
    algorithm: str,
    split: str = "test-dev2017",
) -> Path:
    """The upload for the COCO evaluation server: a zip holding only
    :func:`results_file_name` ``(algorithm, split)`` as :func:`write_coco_results` writes it.
    Written atomically; returns ``path``."""
    import tempfile
    import zipfile

    name = results_file_name(algorithm, split)
    with tempfile.TemporaryDirectory() as tmp:
        write_coco_results(Path(tmp) / name, predictions)
        with atomic_open(path, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
            archive.write(Path(tmp) / name, arcname=name, compress_type=zipfile.ZIP_DEFLATED)
    return Path(path)
