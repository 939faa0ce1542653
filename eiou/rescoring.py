"""Scoring without retraining: one network pass, every scoring method.

``eiou predict --candidates candidates.pt`` records, for each image, the candidates that the
detector handed to :func:`eiou.scoring.select_detections` (after its score threshold on the
class score and its per-image top-k): boxes, labels, class scores and predicted IoUs, plus
the factors that map the boxes to the image's pixels. :func:`rescore_candidates` applies
:func:`~eiou.scoring.select_detections` to them with any scoring method; for the run's own
method the result equals ``eiou predict``'s predictions exactly (same tensors, same
operations, on the kind of device that predicted), and for another method it equals what
``eiou predict`` writes with that method configured. So the IoU head's effect under each
method is measured on one trained model, and none of it costs a training or a second pass
of the network.

The candidates file (:func:`save_candidates`, ``torch.load(..., weights_only=True)``
reads it) is a dict of flat tensors, the images one after another:

- ``image_ids`` ``(M,)`` int64, ``counts`` ``(M,)`` int64 (candidates per image),
  ``scale`` ``(M, 4)`` float32 (``(sx, sy, sx, sy)``: pixels of the image = boxes x scale);
- ``boxes`` ``(T, 4)`` xyxy in the frame the detector selected in, ``labels`` ``(T,)``
  int32 (the model's contiguous labels, 0 = background), ``scores`` ``(T,)`` class
  scores, ``predicted_iou`` ``(T,)`` or ``None`` (no IoU head);
- ``label_to_category_id`` (the dataset's mapping), ``scoring`` (the run config's
  ``model.scoring`` when predicted), ``run`` (its name), ``version``.

On disk: about 28 bytes a candidate (e.g. ~150 MB for 5000 images of 1000 candidates).

Workflow: every run with an IoU head and ground truth on an engine that records candidates
(:func:`rescored_runs`) gets
``results/runs/<run>/rescored/<method>/{predictions.json, run.yaml, metrics.json}``; the
``run.yaml`` is the run's config with ``model.scoring.method: <method>``, so that the
metrics' provenance names the method; ``eiou tables`` puts them side by side
(:func:`eiou.tables.scoring_table`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from eiou import schemas
from eiou.outputs import CANDIDATE_ENGINES, rescored_runs

__all__ = [
    "CANDIDATES_VERSION",
    "CANDIDATE_ENGINES",
    "RESCORED_DIR",
    "load_candidates",
    "pack_candidates",
    "rescore_candidates",
    "rescore_run",
    "rescored_metrics_files",
    "rescored_runs",
    "save_candidates",
    "scoring_methods",
    "split_candidates",
]

#: Version of the candidates file's layout.
CANDIDATES_VERSION = 1
#: Folder of a run's rescored results: ``<run>/rescored/<method>/``.
RESCORED_DIR = "rescored"


def scoring_methods() -> tuple[str, ...]:
    """The scoring methods a run config may name (the schema's enum, read without torch;
    ``tests/test_config_schema.py`` checks it against :data:`eiou.scoring.SCORING_METHODS`)."""
    definitions = schemas.load("definitions")["$defs"]
    return tuple(definitions["scoring"]["properties"]["method"]["enum"])


# --------------------------------------------------------------------------- the plan
def rescored_metrics_files(plan: Mapping[str, Any], runs_dir: str = "results/runs") -> list[str]:
    """``<runs_dir>/<run>/rescored/<method>/metrics.json`` of every rescored run and method."""
    return [
        f"{runs_dir}/{rid}/{RESCORED_DIR}/{method}/metrics.json"
        for rid in rescored_runs(plan)
        for method in scoring_methods()
    ]


# --------------------------------------------------------------------------- the file
def pack_candidates(
    images: Sequence[tuple[int, Mapping[str, Any]]],
    *,
    label_to_category_id: Mapping[int, int],
    scoring: Mapping[str, Any] | None = None,
    run: str | None = None,
) -> dict[str, Any]:
    """The candidates file's dict from ``(image_id, candidates)`` pairs in image order.

    ``candidates`` is what :func:`eiou.scoring.select_detections` returns under
    ``"candidates"`` inside :func:`eiou.scoring.record_candidates`, with the engine's
    ``"scale"`` (``(4,)``; required). Tensors are moved to the CPU; dtypes are kept (labels
    become int32), so rescoring sees exactly the values the detector saw.
    """
    import torch

    with_iou = [c.get("predicted_iou") is not None for _, c in images]
    if any(with_iou) and not all(with_iou):
        raise ValueError("predicted IoUs are recorded for some images but not all")
    for image_id, c in images:
        if c.get("scale") is None:
            raise ValueError(
                f"image {image_id}: candidates without 'scale' (the engine must record the "
                "factors that map its boxes to the image's pixels; see eiou.scoring)"
            )

    def cat(key: str, empty: Any) -> Any:
        parts = [c[key].detach().cpu() for _, c in images]
        return torch.cat(parts) if parts else empty

    return {
        "version": CANDIDATES_VERSION,
        "run": run,
        "image_ids": torch.tensor([int(i) for i, _ in images], dtype=torch.int64),
        "counts": torch.tensor([int(c["boxes"].shape[0]) for _, c in images], dtype=torch.int64),
        "scale": torch.stack([c["scale"].detach().cpu().reshape(4) for _, c in images])
        if images
        else torch.zeros(0, 4),
        "boxes": cat("boxes", torch.zeros(0, 4)),
        "labels": cat("labels", torch.zeros(0, dtype=torch.int64)).to(torch.int32),
        "scores": cat("scores", torch.zeros(0)),
        "predicted_iou": cat("predicted_iou", torch.zeros(0)) if all(with_iou) else None,
        "label_to_category_id": {int(k): int(v) for k, v in label_to_category_id.items()},
        "scoring": dict(scoring) if scoring is not None else None,
    }


def save_candidates(path: str | os.PathLike[str], packed: Mapping[str, Any]) -> None:
    """Write a :func:`pack_candidates` dict atomically (``torch.save``)."""
    from eiou.io import save_torch

    save_torch(path, dict(packed))


def load_candidates(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a candidates file (``weights_only``: plain tensors and containers only)."""
    import pickle

    import torch

    try:
        packed = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        packed = err
    if not isinstance(packed, dict) or packed.get("version") != CANDIDATES_VERSION:
        raise ValueError(
            f"{path}: not a candidates file of version {CANDIDATES_VERSION} "
            "(written by eiou predict --candidates)"
        )
    return packed


def split_candidates(packed: Mapping[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(image_id, {"boxes", "labels" (int64), "scores", "predicted_iou", "scale"})`` per
    image, in the order they were predicted."""
    counts = [int(n) for n in packed["counts"].tolist()]
    pieces = {
        key: packed[key].split(counts)
        for key in ("boxes", "labels", "scores", "predicted_iou")
        if packed[key] is not None
    }
    for i, image_id in enumerate(packed["image_ids"].tolist()):
        yield (
            int(image_id),
            {
                "boxes": pieces["boxes"][i],
                "labels": pieces["labels"][i].long(),
                "scores": pieces["scores"][i],
                "predicted_iou": pieces["predicted_iou"][i] if "predicted_iou" in pieces else None,
                "scale": packed["scale"][i],
            },
        )


# --------------------------------------------------------------------------- rescoring
def rescore_candidates(
    packed: Mapping[str, Any],
    method: str,
    scoring: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """COCO results of the candidates under ``method``, as ``eiou predict`` writes them.

    Args:
        packed: a candidates dict (:func:`load_candidates`).
        method: one of :data:`eiou.scoring.SCORING_METHODS` (not ``cls`` needs predicted
            IoUs).
        scoring: ``nms_threshold``, ``detections_per_image`` and ``score_threshold``
            (default: those recorded in the file). A score threshold above the recorded one
            drops the candidates below it (the same detections a detector with that
            threshold keeps); one below it cannot be honoured and raises ``ValueError``.
        device: where NMS runs (``cpu``, ``cuda``, ``cuda:N``). The result equals
            ``eiou predict``'s bit for bit when this is the kind of device that predicted;
            across kinds (CUDA and CPU NMS kernels round differently) a pair of boxes whose
            overlap is within rounding of the NMS threshold can be decided otherwise.
    """
    from eiou.predict import to_coco_results
    from eiou.scoring import select_detections

    recorded = packed.get("scoring") or {}
    settings = {**recorded, **(scoring or {})}
    missing = {"nms_threshold", "detections_per_image"} - set(settings)
    if missing:
        raise ValueError(f"scoring settings missing: {sorted(missing)}")
    threshold = settings.get("score_threshold")
    floor = recorded.get("score_threshold")
    if threshold is not None and floor is not None and threshold < floor:
        raise ValueError(
            f"score_threshold {threshold} is below the {floor} the candidates were cut at: "
            "predict again with the lower threshold"
        )
    if method != "cls" and packed.get("predicted_iou") is None:
        raise ValueError(f"scoring method {method!r} needs predicted IoUs (an IoU head)")
    mapping = packed["label_to_category_id"]
    results: list[dict[str, Any]] = []
    for image_id, c in split_candidates(packed):
        c = {k: v.to(device) if v is not None else None for k, v in c.items()}
        boxes, labels, scores, ious = c["boxes"], c["labels"], c["scores"], c["predicted_iou"]
        if threshold is not None and floor is not None and threshold > floor:
            keep = scores > threshold
            boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
            ious = ious[keep] if ious is not None else None
        out = select_detections(
            boxes,
            scores,
            labels,
            ious,
            method,
            float(settings["nms_threshold"]),
            int(settings["detections_per_image"]),
        )
        out["boxes"] = out["boxes"] * c["scale"].to(out["boxes"].dtype)
        results += to_coco_results(out, image_id, mapping)
    return results


def rescore_run(
    cfg: str | os.PathLike[str] | Mapping[str, Any],
    candidates: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    methods: Sequence[str] | None = None,
    device: str = "cpu",
) -> dict[str, Path]:
    """Rescore a run's candidates with each method; write ``<out_dir>/<method>/``
    ``predictions.json`` (COCO results) and ``run.yaml`` (the run config with
    ``model.scoring.method: <method>``), atomically.

    Args:
        cfg: the run config (file or mapping); its ``model.scoring`` settings are used.
        candidates: the file ``eiou predict --candidates`` wrote.
        out_dir: e.g. ``results/runs/<run>/rescored``.
        methods: default every method the candidates allow (all with predicted IoUs, else
            ``cls``).
        device: where NMS runs (see :func:`rescore_candidates`).

    Returns:
        ``{method: predictions path}``.
    """
    from eiou.config import load_run_config
    from eiou.experiments import write_run_spec
    from eiou.io import write_json
    from eiou.scoring import SCORING_METHODS

    cfg = load_run_config(cfg)
    packed = load_candidates(candidates)
    if methods is None:
        methods = SCORING_METHODS if packed["predicted_iou"] is not None else ("cls",)
    written = {}
    for method in methods:
        results = rescore_candidates(packed, method, cfg["model"]["scoring"], device)
        folder = Path(out_dir) / method
        spec = copy.deepcopy(cfg)
        spec["model"]["scoring"]["method"] = method
        write_run_spec(folder / "run.yaml", load_run_config(spec))
        write_json(folder / "predictions.json", results, indent=None)
        written[method] = folder / "predictions.json"
    return written
