"""Uncertainty of every table number: COCO AP recomputed from per-image records with a
weight per image, and a paired two-level bootstrap (seeds x test images) of each table
row's difference to its baseline. The tables and the figures both read what this module
computes (``results/tables/comparisons.csv``, written by ``eiou compare``).

**AP with image weights.** :func:`prepare` and :func:`metrics` re-implement pycocotools'
``COCOeval.accumulate`` for area "all" and 100 detections on the records that
``eiou.evaluate`` writes (:class:`eiou.evaluate.ImageRecords`): per class, detections
sorted by a merge sort on ``-score`` over the concatenation in image order, cumulative true
and false positives, precision ``tp / (tp + fp + eps)`` made monotone from the right, read
at the 101 recall thresholds with ``searchsorted(..., side="left")``; a class without a
(non-ignored) ground truth is left out of the mean. An integer weight ``w_i`` counts image
``i`` ``w_i`` times (its copies side by side in the image order): its detections and
ground truths count ``w_i`` times, and ``w_i = 0`` removes it. With all weights 1 this is
pycocotools' arithmetic (equal to 1e-12, tested); with integer weights it equals
pycocotools on a test set holding ``w_i`` copies of each image, except that among tied
scores the copies of a detection stay together. AP, AP50, AP75, AP90 (the threshold 0.90
alone) and AR100 are computed; values are fractions.

Per class and threshold only the true-positive positions of the ranking matter (precision
peaks there), so a batch of ``B`` weight vectors costs one cumulative sum over all
detections per class plus ``O(B x true positives)`` per threshold.

**The bootstrap.** A row's number is the mean over its seeds of the metric on the test
set. Two sources of uncertainty move it: training (another seed gives another model) and
the test set (other images from the same distribution give another AP). Each replicate
``b`` of :class:`Bootstrap`

1. resamples the ``n`` test images with replacement (multiplicities ``W[b]``, drawn once
   per test set, so every model evaluated on that set, all seeds and both sides of every
   difference, is scored on the same resampled images: the comparison is *paired*);
2. resamples the seeds with replacement: the ``S`` runs of a row are drawn ``S`` times.
   Where a row and its baseline have the same seeds, seed ``s`` of one is paired with seed
   ``s`` of the other (the same draw for both; same initialisation and data order); where
   they differ, each side is drawn on its own;
3. takes the mean over the drawn seeds of each run's metric under ``W[b]``, and the
   difference row - baseline.

This resamples the two crossed factors independently (Owen's "pigeonhole" bootstrap,
Ann. Appl. Stat. 2007), which is mildly conservative for a crossed design. The interval is
the percentile interval of the replicates (``confidence`` 0.95: the 2.5% and 97.5%
quantiles). A difference is *resolved* when its interval excludes 0: ``resolved`` is its
sign (+1 / -1), 0 when the interval contains 0 (no claim).

Seeds: with **one seed** step 2 does nothing and the interval covers test-image sampling
only, not training noise (a second seed of the same config may fall outside it); with
**two seeds** the seed part rests on two values and the bootstrap's seed variance is half
the sample variance ((S - 1) / S): read such intervals as too narrow. Three or more seeds
make the seed part meaningful, five or more make it reliable.

Each row also gets its own interval (mean over seeds, same resampling); its half-width is
what to use when sizing a test split (it shrinks about as ``1 / sqrt(n)``).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eiou.evaluate import (
    RECORD_MAX_DETECTIONS,
    RECORDS_FILE,
    ImageRecords,
    load_image_records,
)
from eiou.io import write_text

__all__ = [
    "DEFAULT_REPLICATES",
    "DIFFERENCE_METRICS",
    "METRICS",
    "RECALL_THRESHOLDS",
    "RECORDS_FILE",
    "Bootstrap",
    "Comparison",
    "PreparedRecords",
    "baseline_rows",
    "bootstrap_weights",
    "compare_plan",
    "compare_runs",
    "metrics",
    "percentile_interval",
    "precision_recall",
    "prepare",
    "read_comparisons",
    "resolved",
    "write_comparisons",
]

#: pycocotools' recall thresholds 0, 0.01, ..., 1 (``Params.recThrs``).
RECALL_THRESHOLDS: np.ndarray = np.linspace(0.0, 1.00, round((1.00 - 0.0) / 0.01) + 1)
#: Metrics computed from the records, in this order.
METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "AP90", "AR100")
#: Metrics whose difference to the baseline the tables print.
DIFFERENCE_METRICS: tuple[str, ...] = ("AP", "AP75", "AP90")
DEFAULT_REPLICATES = 1000
_EPS = np.spacing(1)
_THRESHOLD_OF = {"AP50": 0.5, "AP75": 0.75, "AP90": 0.9}
#: Elements of one (replicates x detections) block, to bound memory (~32 MB of int32).
_BLOCK = 1 << 23


# --------------------------------------------------------------------------- AP
@dataclass(frozen=True)
class _Category:
    """One class's detections in pycocotools' merge-sorted order."""

    image: np.ndarray  # (n,) image index of each detection
    num_gt: np.ndarray  # (I,) non-ignored ground truths per image
    true_positives: tuple[np.ndarray, ...]  # per threshold: sorted positions
    ignored: tuple[np.ndarray, ...]  # per threshold: sorted positions
    ignored_before: tuple[np.ndarray, ...]  # per threshold: ignored positions before each TP


@dataclass(frozen=True)
class PreparedRecords:
    """:class:`~eiou.evaluate.ImageRecords` sorted once for repeated weighted AP
    (:func:`prepare`)."""

    image_ids: np.ndarray
    iou_thresholds: np.ndarray
    categories: tuple[_Category, ...]

    @property
    def num_images(self) -> int:
        return int(self.image_ids.size)


def prepare(records: ImageRecords | PreparedRecords) -> PreparedRecords:
    """Sort each class's detections the way pycocotools' ``accumulate`` does."""
    if isinstance(records, PreparedRecords):
        return records
    order_cat = records.det_category
    if order_cat.size and np.any(np.diff(order_cat) < 0):
        raise ValueError("records must be grouped by category (as eiou.evaluate writes them)")
    bounds = np.searchsorted(order_cat, np.arange(records.category_ids.size + 1), side="left")
    n_thr = records.iou_thresholds.size
    categories = []
    for k in range(records.category_ids.size):
        start, stop = int(bounds[k]), int(bounds[k + 1])
        order = np.argsort(-records.det_score[start:stop], kind="mergesort") + start
        matched = records.det_matched[order]
        ignored = records.det_ignored[order]
        tps, igs, before = [], [], []
        for t in range(n_thr):
            tp = np.flatnonzero(matched[:, t] & ~ignored[:, t])
            ig = np.flatnonzero(ignored[:, t])
            tps.append(tp)
            igs.append(ig)
            before.append(np.searchsorted(ig, tp))
        categories.append(
            _Category(
                image=records.det_image[order].astype(np.intp),
                num_gt=records.num_gt[k].astype(np.int64),
                true_positives=tuple(tps),
                ignored=tuple(igs),
                ignored_before=tuple(before),
            )
        )
    return PreparedRecords(
        image_ids=np.asarray(records.image_ids),
        iou_thresholds=np.asarray(records.iou_thresholds, dtype=np.float64),
        categories=tuple(categories),
    )


def _check_weights(weights: Any, num_images: int) -> np.ndarray:
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] != num_images:
        raise ValueError(f"weights must have shape (B, {num_images}), got {w.shape}")
    if w.size and (not np.issubdtype(w.dtype, np.integer) and np.any(w != np.round(w))):
        raise ValueError("weights are multiplicities: non-negative integers")
    if w.size and w.min() < 0:
        raise ValueError("weights are multiplicities: non-negative integers")
    return w.astype(np.int64)


def _recall_targets(npig: np.ndarray) -> np.ndarray:
    """(b, R): per recall threshold ``r`` the least count ``c`` with ``c / npig >= r`` in
    float64, i.e. where pycocotools' ``searchsorted(tp / npig, r, side="left")`` lands: on
    the first true positive whose cumulative count reaches ``c``."""
    denominator = np.where(npig > 0, npig, 1).astype(np.float64)[:, None]
    c = np.ceil(RECALL_THRESHOLDS[None, :] * denominator)
    for _ in range(2):  # the ceiling of a rounded product is off by at most one
        c -= (c >= 1) & ((c - 1) / denominator >= RECALL_THRESHOLDS[None, :])
        c += c / denominator < RECALL_THRESHOLDS[None, :]
    return c.astype(np.int64)


def _first_at_least(rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per row of ``rows`` (b, m), nondecreasing non-negative integers: the first column
    whose value is >= each of ``targets`` (b, R), non-negative; ``m`` where none is. One
    exact ``searchsorted`` over the rows laid end to end, each lifted above the last."""
    b, m = rows.shape
    lift = int(max(rows.max(initial=0), targets.max(initial=0))) + 1
    offsets = np.arange(b, dtype=np.int64)[:, None] * lift
    flat = (rows + offsets).ravel()
    found = np.searchsorted(flat, (targets + offsets).ravel(), side="left")
    return found.reshape(b, -1) - np.arange(b, dtype=np.int64)[:, None] * m


def _category_block(
    cat: _Category, weights_t: np.ndarray, dtype: Any, curves: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """One class under a block of ``b`` weight vectors, given transposed (I, b): per
    threshold the mean interpolated precision over the recall thresholds (T, b), the recall
    (T, b), whether the class counts (b,) and, with ``curves``, the precision at each recall
    threshold (T, R, b).

    Only true positives move recall, and precision peaks at them (it falls at every other
    detection), so both are evaluated at the true-positive ranks alone: ``tp`` and ``fp``
    there are the weighted counts of true positives and of the other non-ignored
    detections up to that rank (replicates along the last, contiguous axis).
    """
    b = weights_t.shape[1]
    n_thr, n_rec = len(cat.true_positives), RECALL_THRESHOLDS.size
    npig = cat.num_gt @ weights_t  # (b,)
    precision = np.zeros((n_thr, b))
    recall = np.zeros((n_thr, b))
    full = np.zeros((n_thr, n_rec, b)) if curves else None
    if not cat.image.size:
        return precision, recall, npig > 0, full
    targets = _recall_targets(npig)  # (b, R)
    denominator = np.where(npig > 0, npig, 1).astype(np.float64)
    rows = np.arange(b)[:, None]
    w = weights_t[cat.image]  # (n, b)
    seen = np.cumsum(w, axis=0, dtype=dtype)  # detections up to and including each rank
    for t in range(n_thr):
        tp_at = cat.true_positives[t]
        m = tp_at.size
        if not m:
            continue
        tp = np.cumsum(w[tp_at], axis=0, dtype=np.int64)
        counted = seen[tp_at]  # tp + fp (+ ignored, taken off below), an exact integer
        if cat.ignored[t].size:
            ignored = np.zeros((cat.ignored[t].size + 1, b), dtype=dtype)
            np.cumsum(w[cat.ignored[t]], axis=0, dtype=dtype, out=ignored[1:])
            counted -= ignored[cat.ignored_before[t]]
        tp_f = tp.astype(np.float64)
        pr = tp_f / (counted.astype(np.float64) + _EPS)  # pycocotools: tp / (fp + tp + eps)
        envelope = np.maximum.accumulate(pr[::-1], axis=0)[::-1]  # (m, b)
        at = _first_at_least(np.ascontiguousarray(tp.T), targets)  # (b, R)
        q = np.where(at < m, envelope.T[rows, np.minimum(at, m - 1)], 0.0)  # (b, R)
        precision[t] = q.mean(axis=1)
        recall[t] = tp_f[-1] / denominator
        if full is not None:
            full[t] = q.T
    return precision, recall, npig > 0, full


def _accumulate(
    prepared: PreparedRecords, weights: np.ndarray, curves: bool = False, threads: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(mean precision (B, T, K), recall (B, T, K), valid (B, K), curves (B, T, R, K))."""
    n_rep, n_thr, n_cat = weights.shape[0], prepared.iou_thresholds.size, len(prepared.categories)
    precision = np.zeros((n_rep, n_thr, n_cat))
    recall = np.zeros((n_rep, n_thr, n_cat))
    valid = np.zeros((n_rep, n_cat), dtype=bool)
    full = np.zeros((n_rep, n_thr, RECALL_THRESHOLDS.size, n_cat)) if curves else None
    most = int(weights.sum(axis=1).max(initial=0)) * RECORD_MAX_DETECTIONS
    dtype = np.int32 if most < 2**31 else np.int64
    largest = max((c.image.size for c in prepared.categories), default=0)
    step = max(1, _BLOCK // max(largest, prepared.num_images, 1))

    def one(block: slice, weights_t: np.ndarray, k: int) -> None:
        p, r, v, f = _category_block(prepared.categories[k], weights_t, dtype, curves)
        precision[block, :, k], recall[block, :, k], valid[block, k] = p.T, r.T, v
        if full is not None:
            full[block, :, :, k] = np.moveaxis(f, -1, 0)

    with ThreadPoolExecutor(max(1, threads)) as pool:  # numpy releases the GIL
        for start in range(0, n_rep, step):
            block = slice(start, start + step)
            weights_t = np.ascontiguousarray(weights[block].T, dtype=dtype)  # (I, b)
            list(pool.map(lambda k: one(block, weights_t, k), range(n_cat)))  # noqa: B023
    return precision, recall, valid, full


def _threshold_index(thresholds: np.ndarray, value: float) -> int:
    hits = np.flatnonzero(np.isclose(thresholds, value))
    if not hits.size:
        raise ValueError(f"IoU threshold {value} is not among the records' thresholds")
    return int(hits[0])


def metrics(
    records: ImageRecords | PreparedRecords,
    weights: Any = None,
    names: Sequence[str] = METRICS,
    threads: int = 1,
) -> dict[str, Any]:
    """COCO metrics (fractions) from per-image records, each image counted ``weights[i]``
    times.

    Args:
        records: one evaluation's records (or :func:`prepare` of them, to reuse the sort).
        weights: None (every image once), ``(I,)`` or ``(B, I)`` non-negative integers.
        names: any of :data:`METRICS`.
        threads: classes evaluated in parallel.

    Returns:
        name -> a float (weights None or ``(I,)``) or a ``(B,)`` array; NaN where no class
        has a ground truth among the weighted images (pycocotools' -1).
    """
    prepared = prepare(records)
    unknown = set(names) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    single = weights is None or np.ndim(weights) == 1
    w = np.ones((1, prepared.num_images), np.int64) if weights is None else np.asarray(weights)
    w = _check_weights(w[None, :] if w.ndim == 1 else w, prepared.num_images)
    precision, recall, valid, _ = _accumulate(prepared, w, threads=threads)
    counted = valid.sum(axis=1).astype(np.float64)  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_threshold = (precision * valid[:, None, :]).sum(axis=2) / counted[:, None]
        recall_mean = (recall * valid[:, None, :]).sum(axis=2).mean(axis=1) / counted
    out: dict[str, Any] = {}
    for name in names:
        if name == "AP":
            value = per_threshold.mean(axis=1)
        elif name == "AR100":
            value = recall_mean
        else:
            value = per_threshold[:, _threshold_index(prepared.iou_thresholds, _THRESHOLD_OF[name])]
        value = np.where(counted > 0, value, np.nan)
        out[name] = float(value[0]) if single else value
    return out


def precision_recall(
    records: ImageRecords | PreparedRecords, weights: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' ``eval["precision"][:, :, :, all, 100]`` ``(T, R, K)`` and
    ``eval["recall"][:, :, all, 100]`` ``(T, K)`` for one weight vector ``(I,)`` (None:
    every image once), -1 for a class without ground truth."""
    prepared = prepare(records)
    w = np.ones(prepared.num_images, np.int64) if weights is None else np.asarray(weights)
    w = _check_weights(w[None, :], prepared.num_images)
    _, recall, valid, full = _accumulate(prepared, w, True)
    precision = np.where(valid[0][None, None, :], full[0], -1.0)
    return precision, np.where(valid[0][None, :], recall[0], -1.0)


# --------------------------------------------------------------------------- bootstrap
def bootstrap_weights(num_images: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """``(replicates, num_images)`` int32 multiplicities: each row draws ``num_images``
    images with replacement."""
    draws = rng.integers(0, num_images, size=(replicates, num_images))
    flat = draws + np.arange(replicates)[:, None] * num_images
    counts = np.bincount(flat.ravel(), minlength=replicates * num_images)
    return counts.reshape(replicates, num_images).astype(np.int32)


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN replicates left out)."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not values.size:
        return math.nan, math.nan
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def resolved(low: float, high: float) -> int:
    """+1 when the interval lies above 0, -1 below, 0 when it contains 0 (or is NaN)."""
    if low > 0:
        return 1
    if high < 0:
        return -1
    return 0


@dataclass(frozen=True)
class Comparison:
    """One metric of a row against its baseline (fractions; see the module docstring).

    ``value``: mean over the row's seeds, with its own interval ``value_low`` /
    ``value_high`` (``half_width`` is half its length); ``diff`` = ``value`` -
    ``baseline_value`` with the interval ``low`` / ``high`` and ``resolved`` its sign where
    the interval excludes 0."""

    metric: str
    value: float
    value_low: float
    value_high: float
    half_width: float
    baseline_value: float
    diff: float
    low: float
    high: float
    resolved: int
    n_seeds: int
    n_seeds_baseline: int
    seeds_paired: bool
    n_images: int
    replicates: int
    confidence: float


def _stream(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *parts])


def _image_key(image_ids: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(image_ids, dtype=np.int64).tobytes())


class Bootstrap:
    """The paired two-level bootstrap of the module docstring, with caches, so that a run
    shared by several rows or tables is resampled once and every comparison on one test
    set uses the same resampled images.

    Deterministic: the image multiplicities depend only on ``seed`` and the test set's
    image ids, the seed draws only on ``seed`` and the number of seeds.
    """

    def __init__(
        self,
        replicates: int = DEFAULT_REPLICATES,
        confidence: float = 0.95,
        seed: int = 0,
        metrics: Sequence[str] = METRICS,
        threads: int = 1,
    ) -> None:
        if replicates < 1 or not 0 < confidence < 1:
            raise ValueError("replicates >= 1 and 0 < confidence < 1")
        self.replicates, self.confidence, self.seed = int(replicates), confidence, int(seed)
        self.metrics, self.threads = tuple(metrics), int(threads)
        self._weights: dict[tuple[int, int], np.ndarray] = {}
        self._runs: dict[Any, tuple[dict[str, float], dict[str, np.ndarray]]] = {}

    def weights(self, image_ids: np.ndarray, stream: int = 0) -> np.ndarray:
        """The ``(B, I)`` image multiplicities of a test set (``stream`` 1: an independent
        draw, for the unpaired comparison)."""
        key = (_image_key(image_ids), stream)
        if key not in self._weights:
            rng = _stream(self.seed, 0, key[0], stream)
            self._weights[key] = bootstrap_weights(image_ids.size, self.replicates, rng)
        return self._weights[key]

    def seed_draws(self, num_seeds: int, stream: int = 0) -> np.ndarray:
        """``(B, S)`` indices of the seeds drawn in each replicate."""
        rng = _stream(self.seed, 1, num_seeds, stream)
        return rng.integers(0, num_seeds, size=(self.replicates, num_seeds))

    def run(
        self, records: ImageRecords | PreparedRecords, key: Any = None, stream: int = 0
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """(point estimates, ``(B,)`` replicates) of one run's metrics; cached by ``key``."""
        cache_key = None if key is None else (key, stream)
        if cache_key is not None and cache_key in self._runs:
            return self._runs[cache_key]
        prepared = prepare(records)
        point = metrics(prepared, None, self.metrics)
        weights = self.weights(prepared.image_ids, stream)
        reps = metrics(prepared, weights, self.metrics, self.threads)
        if cache_key is not None:
            self._runs[cache_key] = (point, reps)
        return point, reps

    def compare(
        self,
        row: Sequence[ImageRecords | PreparedRecords],
        baseline: Sequence[ImageRecords | PreparedRecords],
        row_seeds: Sequence[Any] | None = None,
        baseline_seeds: Sequence[Any] | None = None,
        row_keys: Sequence[Any] | None = None,
        baseline_keys: Sequence[Any] | None = None,
        paired: bool = True,
    ) -> dict[str, Comparison]:
        """Every metric of ``row`` (one records per seed) against ``baseline``.

        Seeds are paired where ``row_seeds`` and ``baseline_seeds`` hold the same values
        (default: positions 0, 1, ...); ``paired=False`` scores the baseline on an
        independent resample of the images (for comparison only: it ignores that both
        models saw the same images). ``row_keys`` / ``baseline_keys`` name the runs for the
        cache.
        """
        if not row or not baseline:
            raise ValueError("each side needs at least one run")
        row_prep = [prepare(r) for r in row]
        base_prep = [prepare(r) for r in baseline]
        ids = row_prep[0].image_ids
        for p in row_prep + base_prep:
            if not np.array_equal(p.image_ids, ids):
                raise ValueError("a row and its baseline must be scored on the same test images")
        row_seeds = list(range(len(row))) if row_seeds is None else list(row_seeds)
        baseline_seeds = (
            list(range(len(baseline))) if baseline_seeds is None else list(baseline_seeds)
        )
        row_keys = row_keys or [None] * len(row)
        baseline_keys = baseline_keys or [None] * len(baseline)
        rows = [self.run(p, k) for p, k in zip(row_prep, row_keys, strict=True)]
        bases = [
            self.run(p, k, 0 if paired else 1)
            for p, k in zip(base_prep, baseline_keys, strict=True)
        ]
        seeds_paired = sorted(row_seeds, key=str) == sorted(baseline_seeds, key=str)
        if seeds_paired:  # align the baseline's runs with the row's seeds
            position = {s: i for i, s in enumerate(baseline_seeds)}
            bases = [bases[position[s]] for s in row_seeds]
            draws_row = draws_base = self.seed_draws(len(row))
        else:
            draws_row = self.seed_draws(len(row), 1)
            draws_base = self.seed_draws(len(baseline), 2)
        out = {}
        for m in self.metrics:
            value = float(np.mean([p[m] for p, _ in rows]))
            base_value = float(np.mean([p[m] for p, _ in bases]))
            row_reps = _mean_of_drawn(np.stack([r[m] for _, r in rows]), draws_row)
            base_reps = _mean_of_drawn(np.stack([r[m] for _, r in bases]), draws_base)
            v_low, v_high = percentile_interval(row_reps, self.confidence)
            low, high = percentile_interval(row_reps - base_reps, self.confidence)
            out[m] = Comparison(
                metric=m,
                value=value,
                value_low=v_low,
                value_high=v_high,
                half_width=(v_high - v_low) / 2,
                baseline_value=base_value,
                diff=value - base_value,
                low=low,
                high=high,
                resolved=resolved(low, high),
                n_seeds=len(row),
                n_seeds_baseline=len(baseline),
                seeds_paired=seeds_paired,
                n_images=int(ids.size),
                replicates=self.replicates,
                confidence=self.confidence,
            )
        return out


def _mean_of_drawn(values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``values`` (S, B) per seed and replicate; ``draws`` (B, S): per replicate the mean
    over the drawn seeds (B,)."""
    return np.take_along_axis(values, draws.T, axis=0).mean(axis=0)


def compare_runs(
    row: Sequence[ImageRecords | PreparedRecords],
    baseline: Sequence[ImageRecords | PreparedRecords],
    row_seeds: Sequence[Any] | None = None,
    baseline_seeds: Sequence[Any] | None = None,
    replicates: int = DEFAULT_REPLICATES,
    confidence: float = 0.95,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
    paired: bool = True,
) -> dict[str, Comparison]:
    """One row (a records per seed) against its baseline: :meth:`Bootstrap.compare`."""
    boot = Bootstrap(replicates, confidence, seed, metrics)
    return boot.compare(row, baseline, row_seeds, baseline_seeds, paired=paired)


# --------------------------------------------------------------------------- plan level
def baseline_rows(table: Mapping[str, Any]) -> list[int | None]:
    """Per row of a planned table, the index of its baseline row: the first row of the
    table's baseline variant with the same detector, backbone, dataset and schedule
    (None where there is none)."""
    keys = ("detector", "backbone", "dataset", "schedule")
    first: dict[tuple[Any, ...], int] = {}
    for i, row in enumerate(table["rows"]):
        if row["variant"] == table["baseline"]:
            first.setdefault(tuple(row[k] for k in keys), i)
    return [first.get(tuple(row[k] for k in keys)) for row in table["rows"]]


def _run_seed(run_dir: Path, fallback: Any) -> Any:
    """The seed a run's ``metrics.json`` provenance records (``fallback`` where absent)."""
    path = run_dir / "metrics.json"
    if path.exists():
        seed = (json.loads(path.read_text(encoding="utf-8")).get("provenance") or {}).get("seed")
        if seed is not None:
            return seed
    return fallback


COLUMNS: tuple[str, ...] = (
    "table", "row", "variant", "label", "detector", "backbone", "dataset", "schedule",
    "baseline", "baseline_row", "metric", "value", "value_low", "value_high", "half_width",
    "baseline_value", "diff", "low", "high", "resolved", "n_seeds", "n_seeds_baseline",
    "seeds_paired", "n_images", "replicates", "confidence", "bootstrap_seed",
)  # fmt: skip


def compare_plan(
    plan: Mapping[str, Any],
    runs_dir: str | os.PathLike[str],
    replicates: int = DEFAULT_REPLICATES,
    confidence: float = 0.95,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
    threads: int = 1,
) -> Any:
    """Every row of every planned table against its baseline, as a pandas frame with one
    line per (table, row, metric) and the columns :data:`COLUMNS`; values in percent.

    Reads ``<runs_dir>/<run>/eval_images.npz`` (:data:`RECORDS_FILE`) of each row's runs
    and their seeds from ``metrics.json``'s provenance; a run without records is left out
    (``n_seeds`` counts those used) and a row without any gets NaN.
    """
    import pandas as pd

    boot = Bootstrap(replicates, confidence, seed, metrics, threads)
    runs_dir = Path(runs_dir)
    loaded: dict[str, PreparedRecords | None] = {}

    def runs_of(row: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
        ids, seeds = [], []
        for position, rid in enumerate(row["run_ids"]):
            if rid not in loaded:
                path = runs_dir / rid / RECORDS_FILE
                loaded[rid] = prepare(load_image_records(path)) if path.exists() else None
            if loaded[rid] is not None:
                ids.append(rid)
                seeds.append(_run_seed(runs_dir / rid, position))
        return ids, seeds

    records = []
    for table in plan["tables"]:
        base_index = baseline_rows(table)
        for i, row in enumerate(table["rows"]):
            b = base_index[i]
            ids, seeds = runs_of(row)
            base_ids, base_seeds = runs_of(table["rows"][b]) if b is not None else ([], [])
            result: dict[str, Comparison] = {}
            if ids and base_ids:
                result = boot.compare(
                    [loaded[r] for r in ids],
                    [loaded[r] for r in base_ids],
                    seeds,
                    base_seeds,
                    row_keys=ids,
                    baseline_keys=base_ids,
                )
            for m in metrics:
                c = result.get(m)
                line: dict[str, Any] = {
                    "table": table["name"],
                    "row": i + 1,
                    **{k: row[k] for k in ("variant", "label", "detector", "backbone")},
                    **{k: row[k] for k in ("dataset", "schedule")},
                    "baseline": table["baseline"],
                    "baseline_row": None if b is None else b + 1,
                    "metric": m,
                    "n_seeds": len(ids),
                    "n_seeds_baseline": len(base_ids),
                    "replicates": replicates,
                    "confidence": confidence,
                    "bootstrap_seed": seed,
                }
                if c is not None:
                    values = asdict(c)
                    for key in ("value", "value_low", "value_high", "half_width",
                                "baseline_value", "diff", "low", "high"):  # fmt: skip
                        line[key] = 100.0 * values[key]
                    line.update(
                        resolved=c.resolved, seeds_paired=c.seeds_paired, n_images=c.n_images
                    )
                records.append(line)
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    frame["resolved"] = frame["resolved"].astype("Int64")
    frame["n_images"] = frame["n_images"].astype("Int64")
    frame["baseline_row"] = frame["baseline_row"].astype("Int64")
    frame["seeds_paired"] = frame["seeds_paired"].astype("boolean")
    return frame


def write_comparisons(path: str | os.PathLike[str], frame: Any) -> None:
    """Write :func:`compare_plan`'s frame as CSV, atomically."""
    write_text(path, frame.to_csv(index=False))


def read_comparisons(path: str | os.PathLike[str]) -> Any:
    """Read a comparisons CSV (nullable integer / boolean columns restored)."""
    import pandas as pd

    frame = pd.read_csv(path)
    for column in ("resolved", "n_images", "baseline_row"):
        frame[column] = frame[column].astype("Int64")
    frame["seeds_paired"] = frame["seeds_paired"].astype("boolean")
    return frame
