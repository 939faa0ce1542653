"""IoU-aware scoring and NMS at inference.

The paper says only that the predicted IoU "guides NMS" and "corrects" the classification
confidence; these named methods make the choice explicit (record it with every result):

- ``"cls"``: class score only, standard per-class NMS (the baseline).
- ``"sqrt_cls_x_iou"``: rank and report ``sqrt(cls * iou)`` (the geometric mean, on the
  scale of ``cls``; the public face-detector code of the authors' group uses it).
- ``"iou_guided_nms"``: IoU-Net's IoU-guided NMS (Jiang et al. 2018, Algorithm 1): boxes are
  ranked by predicted IoU; each kept box suppresses the remaining boxes of its class that
  overlap it by more than the threshold, and takes the maximum class score of the cluster
  it suppressed (itself included) as its score.

``cls * iou`` is not a method of its own: ``sqrt`` is increasing, so ranking by ``cls * iou``
ranks every detection, within an image and across images, exactly as ``sqrt(cls * iou)``
does. The detectors apply the score threshold to ``cls`` before scoring, so both keep the
same candidates, NMS keeps the same boxes in the same order, and the COCO evaluation (which
only ranks) gives the same AP; only the printed scores differ. They would differ if a
threshold were applied to the final score (``cls * iou > t`` keeps fewer detections than
``sqrt(cls * iou) > t``), which no detector here does. ``tests/test_scoring.py`` checks
both statements with pycocotools.

Boxes are ``(N, 4)`` xyxy, scores and predicted IoUs ``(N,)`` in ``[0, 1]``, labels
``(N,)`` int. NMS is per label.

Rescoring without re-running the network: inside :func:`record_candidates`, every call of
:func:`select_detections` (both torchvision detectors call it once per image, and so can
any engine) also returns its inputs, the image's *candidates*, under ``"candidates"``;
:mod:`eiou.rescoring` applies :func:`select_detections` to them with every method.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou, nms

__all__ = [
    "SCORING_METHODS",
    "nms_with_scoring",
    "record_candidates",
    "rescore",
    "select_detections",
]

SCORING_METHODS = ("cls", "sqrt_cls_x_iou", "iou_guided_nms")

#: Names that were methods once, and the method that ranks every detection the same way.
RANKS_AS: dict[str, str] = {"cls_x_iou": "sqrt_cls_x_iou"}

_RECORDING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "eiou_record_candidates", default=False
)


def _check_method(method: str, predicted_iou: Tensor | None) -> None:
    if method in RANKS_AS:
        raise ValueError(
            f"scoring method {method!r} ranks every detection as {RANKS_AS[method]!r} does "
            f"(same detections, same AP; see eiou.scoring): use {RANKS_AS[method]!r}"
        )
    if method not in SCORING_METHODS:
        raise ValueError(f"unknown scoring method {method!r}; choose from {SCORING_METHODS}")
    if method != "cls" and predicted_iou is None:
        raise ValueError(f"scoring method {method!r} needs predicted IoUs (an IoU head)")


def rescore(cls_scores: Tensor, predicted_iou: Tensor | None, method: str) -> Tensor:
    """The ranking score of each detection ``(N,)`` for the pointwise methods.

    ``"iou_guided_nms"`` is not pointwise: it ranks by ``predicted_iou`` (returned here) and
    its final scores come from :func:`nms_with_scoring`.
    """
    _check_method(method, predicted_iou)
    if method == "cls":
        return cls_scores
    assert predicted_iou is not None
    iou = predicted_iou.clamp(0, 1)
    if method == "sqrt_cls_x_iou":
        return (cls_scores * iou).sqrt()
    return iou


def _offset_by_label(boxes: Tensor, labels: Tensor) -> Tensor:
    """Shift each label's boxes to a disjoint region so one NMS never mixes labels."""
    if boxes.numel() == 0:
        return boxes
    offsets = labels.to(boxes) * (boxes.max() - boxes.min() + 1)
    return boxes + offsets[:, None]


def nms_with_scoring(
    boxes: Tensor,
    cls_scores: Tensor,
    labels: Tensor,
    predicted_iou: Tensor | None = None,
    method: str = "cls",
    iou_threshold: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Per-label NMS with the chosen scoring method.

    Returns:
        ``keep`` (int64 indices into the inputs, sorted by decreasing final score) and the
        final scores of the kept detections, both ``(K,)``.
    """
    _check_method(method, predicted_iou)
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device), cls_scores[:0]
    if method != "iou_guided_nms":
        scores = rescore(cls_scores, predicted_iou, method)
        keep = batched_nms(boxes, scores, labels, iou_threshold)
        return keep, scores[keep]
    assert predicted_iou is not None
    shifted = _offset_by_label(boxes.float(), labels)
    keep = nms(shifted, predicted_iou.float(), iou_threshold)  # ranked by predicted IoU
    # Greedy NMS removes box j by the first kept box (in rank order) overlapping it above
    # the threshold; a kept box is its own first match (IoU 1 with itself).
    overlaps = box_iou(shifted[keep], shifted) > iou_threshold
    overlaps[torch.arange(keep.numel(), device=keep.device), keep] = True
    cluster = overlaps.to(torch.uint8).argmax(dim=0)  # first True along the ranking
    scores = torch.zeros(keep.numel(), dtype=cls_scores.dtype, device=cls_scores.device)
    scores = scores.scatter_reduce(0, cluster, cls_scores, reduce="amax", include_self=False)
    order = torch.argsort(scores, descending=True, stable=True)
    return keep[order], scores[order]


@contextlib.contextmanager
def record_candidates() -> Iterator[None]:
    """Within this context, :func:`select_detections` also returns its inputs.

    Each result then holds ``"candidates"``: ``{"boxes" (N, 4), "labels" (N,), "scores"
    (N,) class scores, "predicted_iou" (N,) or None}``, detached, exactly the tensors NMS
    saw (after the detector's score threshold and top-k, in the frame the detector selects
    in). An engine that maps its final boxes to another frame adds ``"scale"`` (4,), the
    factors ``(sx, sy, sx, sy)`` it multiplies them by. The flag is a context variable: it
    holds in this thread (or task) only.
    """
    token = _RECORDING.set(True)
    try:
        yield
    finally:
        _RECORDING.reset(token)


def select_detections(
    boxes: Tensor,
    cls_scores: Tensor,
    labels: Tensor,
    predicted_iou: Tensor | None,
    method: str,
    iou_threshold: float,
    max_detections: int,
) -> dict[str, Any]:
    """One image's final detections: :func:`nms_with_scoring`, then the best
    ``max_detections``.

    Returns ``{"boxes" (K, 4), "labels" (K,), "scores" (K,)}`` (torchvision's detection
    format; ``scores`` are the final scores of ``method``), plus ``"predicted_iou"`` (K,)
    when ``predicted_iou`` is given, plus ``"candidates"`` (the inputs) inside
    :func:`record_candidates`.
    """
    keep, final = nms_with_scoring(boxes, cls_scores, labels, predicted_iou, method, iou_threshold)
    keep, final = keep[:max_detections], final[:max_detections]
    result: dict[str, Any] = {"boxes": boxes[keep], "labels": labels[keep], "scores": final}
    if predicted_iou is not None:
        result["predicted_iou"] = predicted_iou[keep]
    if _RECORDING.get():
        result["candidates"] = {
            "boxes": boxes.detach(),
            "labels": labels.detach(),
            "scores": cls_scores.detach(),
            "predicted_iou": None if predicted_iou is None else predicted_iou.detach(),
        }
    return result
