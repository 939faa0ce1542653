"""eiou.statistics: AP from per-image records against pycocotools (independently run here),
image weights against duplicated test sets, and the paired two-level bootstrap against
cases with a known answer (identical models, analytic standard errors of a proportion and
of a paired difference, simulated populations with a known difference, seeds alone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from coco_cases import CASES, coco_case, run_pycocotools
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.cocoeval import COCOeval

from eiou import evaluate, statistics
from eiou.cli import main
from eiou.evaluate import ImageRecords
from eiou.experiments import build_plan, validate_config, write_plan
from eiou.io import write_json

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"
TOLERANCE = 1e-12


_pycocotools = run_pycocotools


def _mean_valid(values: np.ndarray) -> float:
    return float(values[values > -1].mean()) if (values > -1).any() else -1.0


def _assert_matches_pycocotools(records: Any, e: COCOeval, weights: Any = None) -> None:
    precision, recall = statistics.precision_recall(records, weights)
    ref_p, ref_r = e.eval["precision"][:, :, :, 0, 2], e.eval["recall"][:, :, 0, 2]
    assert precision.shape == ref_p.shape and recall.shape == ref_r.shape
    assert np.abs(precision - ref_p).max() <= TOLERANCE
    assert np.abs(recall - ref_r).max() <= TOLERANCE
    m = statistics.metrics(records, weights)
    expected = {"AP": e.stats[0], "AP50": e.stats[1], "AP75": e.stats[2], "AR100": e.stats[8],
                "AP90": _mean_valid(ref_p[8])}  # fmt: skip
    for name, value in expected.items():
        if value == -1:  # pycocotools: nothing to average (no ground truth)
            assert np.isnan(m[name]), name
        else:
            assert abs(m[name] - value) <= TOLERANCE, name


# --------------------------------------------------------------------------- AP
@pytest.mark.parametrize("options", list(CASES.values()), ids=list(CASES))
def test_unit_weights_equal_pycocotools(options: dict) -> None:
    gt, preds = coco_case(**options)
    _, records = evaluate.evaluate_with_records(gt, preds)
    e = _pycocotools(gt, preds)
    assert (e.eval["precision"][:, :, -1, 0, 2] == -1).all()  # a class without ground truth
    assert 0 < e.stats[0] < 1
    _assert_matches_pycocotools(records, e)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_images=st.integers(2, 6),
    num_classes=st.integers(2, 4),
    copies=st.integers(0, 6),
    false_positives=st.integers(0, 80),
    crowd_rate=st.sampled_from([0.0, 0.3]),
    score_decimals=st.sampled_from([None, 1]),
)
def test_unit_weights_equal_pycocotools_on_random_cases(**options: Any) -> None:
    gt, preds = coco_case(max_objects=10, **options)
    if not gt["annotations"] or not preds:
        return
    _, records = evaluate.evaluate_with_records(gt, preds)
    _assert_matches_pycocotools(records, _pycocotools(gt, preds))


def _duplicated(gt: dict, preds: list[dict], weights: np.ndarray) -> tuple[dict, list[dict]]:
    """``weights[i]`` copies of image ``i`` (ids 1..), the copies next to each other in the
    image order."""
    images, anns, dets = [], [], []
    for image in gt["images"]:
        for copy in range(int(weights[image["id"] - 1])):
            new_id = 100 * image["id"] + copy
            images.append({**image, "id": new_id})
            anns += [{**a, "id": len(anns) + 1 + n, "image_id": new_id}
                     for n, a in enumerate(x for x in gt["annotations"]
                                           if x["image_id"] == image["id"])]  # fmt: skip
            dets += [{**p, "image_id": new_id} for p in preds if p["image_id"] == image["id"]]
    return {**gt, "images": images, "annotations": anns}, dets


@pytest.mark.parametrize("seed", range(6))
def test_integer_weights_equal_duplicated_images(seed: int) -> None:
    """Without tied scores, weight w_i is pycocotools on w_i copies of image i (0 removes
    it)."""
    gt, preds = coco_case(seed, num_images=7, max_objects=8, copies=4, false_positives=60,
                          crowd_rate=0.2)  # fmt: skip
    weights = np.random.default_rng(seed).integers(0, 4, len(gt["images"]))
    weights[0] = 0
    dup_gt, dup_preds = _duplicated(gt, preds, weights)
    if not dup_gt["annotations"] or not dup_preds:
        pytest.skip("this draw removed every ground truth")
    _, records = evaluate.evaluate_with_records(gt, preds)
    _assert_matches_pycocotools(records, _pycocotools(dup_gt, dup_preds), weights)


def test_zero_weights_remove_images_even_with_ties() -> None:
    gt, preds = coco_case(1, num_images=6, max_objects=10, copies=6, false_positives=100,
                          score_decimals=1)  # fmt: skip
    weights = np.array([1, 0, 1, 1, 0, 1])
    _, records = evaluate.evaluate_with_records(gt, preds)
    sub_gt, sub_preds = _duplicated(gt, preds, weights)
    _assert_matches_pycocotools(records, _pycocotools(sub_gt, sub_preds), weights)


def test_batched_weights_equal_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    gt, preds = coco_case(0, **{k: v for k, v in CASES["100-per-image"].items() if k != "seed"})
    _, records = evaluate.evaluate_with_records(gt, preds)
    prepared = statistics.prepare(records)
    weights = statistics.bootstrap_weights(records.num_images, 7, np.random.default_rng(0))
    monkeypatch.setattr(statistics, "_BLOCK", 2000)  # several blocks of replicates
    batched = statistics.metrics(prepared, weights, threads=2)
    for b in range(7):
        single = statistics.metrics(prepared, weights[b])
        for name in statistics.METRICS:
            assert abs(batched[name][b] - single[name]) <= TOLERANCE


def test_weights_must_be_multiplicities() -> None:
    records = _recall_records(np.array([True, False, True]))
    with pytest.raises(ValueError, match="multiplicities"):
        statistics.metrics(records, np.array([1.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="multiplicities"):
        statistics.metrics(records, np.array([1, -1, 1]))
    with pytest.raises(ValueError, match="shape"):
        statistics.metrics(records, np.ones(4, int))
    assert np.isnan(statistics.metrics(records, np.zeros(3, int), ("AP",))["AP"])  # no truth
    with pytest.raises(ValueError, match=r"0\.75 is not among"):
        statistics.metrics(records, None, ("AP75",))  # records of the 0.5 threshold alone


# --------------------------------------------------------------------------- bootstrap
def _recall_records(hits: np.ndarray, seed: int = 0, thresholds: int = 1) -> ImageRecords:
    """One class, one ground truth and one detection per image, matched where ``hits``:
    AR100 is the fraction of hits (a proportion with a known standard error)."""
    n = hits.size
    rng = np.random.default_rng(seed)
    return ImageRecords(
        image_ids=np.arange(1, n + 1, dtype=np.int64),
        category_ids=np.array([1], dtype=np.int64),
        iou_thresholds=np.linspace(0.5, 0.95, 10)[:thresholds]
        if thresholds > 1
        else np.array([0.5]),
        num_gt=np.ones((1, n), dtype=np.int32),
        det_category=np.zeros(n, dtype=np.int32),
        det_image=np.arange(n, dtype=np.int32),
        det_score=rng.uniform(size=n),
        det_matched=np.repeat(hits[:, None], thresholds, axis=1),
        det_ignored=np.zeros((n, thresholds), dtype=bool),
    )


def test_bootstrap_weights_resample_the_images() -> None:
    w = statistics.bootstrap_weights(50, 300, np.random.default_rng(4))
    assert w.shape == (300, 50) and (w >= 0).all() and (w.sum(axis=1) == 50).all()
    assert abs(w.mean() - 1) < 1e-12 and 0.9 < w.var() < 1.1  # multinomial(n, 1/n): var ~ 1
    again = statistics.bootstrap_weights(50, 300, np.random.default_rng(4))
    assert np.array_equal(w, again)


def test_identical_models_differ_by_exactly_zero() -> None:
    gt, preds = coco_case(**CASES["crowd-regions"])
    _, a = evaluate.evaluate_with_records(gt, preds)
    _, b = evaluate.evaluate_with_records(gt, [dict(p) for p in preds])
    other = [{**p, "score": p["score"] * 0.5 + 0.1} for p in preds[::2]]
    _, c = evaluate.evaluate_with_records(gt, other)
    for row, base in (([a], [b]), ([a, c], [b, c])):  # one seed; two seeds, paired
        result = statistics.compare_runs(row, base, replicates=300)
        for m in statistics.METRICS:
            r = result[m]
            assert r.diff == 0.0 and r.low == 0.0 and r.high == 0.0 and r.resolved == 0
            assert r.value_high > r.value_low  # the row's own interval is not empty
        assert result["AP"].seeds_paired


def test_recall_standard_error_matches_the_analytic_one() -> None:
    rng = np.random.default_rng(11)
    n = 400
    x = rng.uniform(size=n) < 0.3
    y = np.where(rng.uniform(size=n) < 0.8, x, rng.uniform(size=n) < 0.5)  # correlated
    boot = statistics.Bootstrap(replicates=4000, seed=2, metrics=("AR100",))
    point_x, reps_x = boot.run(_recall_records(x, 1))
    _, reps_y = boot.run(_recall_records(y, 2))
    _, reps_y_unpaired = boot.run(_recall_records(y, 2), stream=1)
    p = x.mean()
    assert point_x["AR100"] == pytest.approx(p, abs=1e-15)
    assert reps_x["AR100"].std() == pytest.approx(np.sqrt(p * (1 - p) / n), rel=0.05)
    d = x.astype(float) - y.astype(float)
    paired = reps_x["AR100"] - reps_y["AR100"]
    assert paired.std() == pytest.approx(d.std() / np.sqrt(n), rel=0.05)
    unpaired = reps_x["AR100"] - reps_y_unpaired["AR100"]
    expected = np.sqrt((x.var() + y.var()) / n)
    assert unpaired.std() == pytest.approx(expected, rel=0.05)
    assert paired.std() < 0.75 * unpaired.std()  # pairing matters for correlated models


def test_paired_intervals_are_narrower_than_unpaired_ones() -> None:
    gt, preds = coco_case(2, num_images=40, num_classes=3, max_objects=4, copies=2)
    rng = np.random.default_rng(0)
    other = [{**p, "score": float(np.clip(p["score"] + rng.normal(0, 0.05), 0, 1))}
             for p in preds]  # fmt: skip
    _, a = evaluate.evaluate_with_records(gt, preds)
    _, b = evaluate.evaluate_with_records(gt, other)
    paired = statistics.compare_runs([a], [b], replicates=500)
    unpaired = statistics.compare_runs([a], [b], replicates=500, paired=False)
    for m in ("AP", "AP75", "AP90"):
        assert paired[m].diff == unpaired[m].diff
        width = paired[m].high - paired[m].low
        assert 0 < width < 0.5 * (unpaired[m].high - unpaired[m].low)


def test_coverage_on_simulated_populations() -> None:
    """Draw test sets from a population whose true recall difference is known; about 95% of
    the paired 95% intervals must contain it (binomial tolerance: 3.3 standard errors)."""
    rng = np.random.default_rng(2024)
    p_x, agree, p_other = 0.6, 0.7, 0.45
    truth = p_x - (agree * p_x + (1 - agree) * p_other)  # E[x] - E[y] = 0.045
    simulations, covered = 300, 0
    for sim in range(simulations):
        x = rng.uniform(size=200) < p_x
        y = np.where(rng.uniform(size=200) < agree, x, rng.uniform(size=200) < p_other)
        result = statistics.compare_runs(
            [_recall_records(x)], [_recall_records(y)], replicates=400, seed=sim,
            metrics=("AR100",),
        )["AR100"]  # fmt: skip
        covered += result.low <= truth <= result.high
    rate = covered / simulations
    tolerance = 3.3 * np.sqrt(0.95 * 0.05 / simulations)
    assert 0.95 - tolerance <= rate <= 0.95 + tolerance


def test_seed_resampling_alone() -> None:
    """Runs whose images are all alike: image resampling changes nothing and the replicates
    are the bootstrap of the seed mean (variance: population variance / S)."""
    n, k = 30, 4
    per_seed = [1, 2, 2, 3, 4]  # ground truths found per image (of k) by each seed

    def alike(found: int) -> ImageRecords:
        hits = np.zeros((n, k), bool)
        hits[:, :found] = True
        return ImageRecords(
            image_ids=np.arange(1, n + 1, dtype=np.int64),
            category_ids=np.array([1], dtype=np.int64),
            iou_thresholds=np.array([0.5]),
            num_gt=np.full((1, n), k, dtype=np.int32),
            det_category=np.zeros(n * k, dtype=np.int32),
            det_image=np.repeat(np.arange(n, dtype=np.int32), k),
            det_score=np.tile(np.linspace(0.9, 0.6, k), n),
            det_matched=hits.reshape(-1, 1),
            det_ignored=np.zeros((n * k, 1), bool),
        )

    runs = [alike(f) for f in per_seed]
    recall = np.array(per_seed) / k
    boot = statistics.Bootstrap(replicates=4000, seed=3, metrics=("AR100",))
    draws = boot.seed_draws(len(runs))
    values = np.stack([boot.run(r)[1]["AR100"] for r in runs])
    assert np.allclose(values, recall[:, None], atol=1e-15)  # images do not matter here
    replicates = statistics._mean_of_drawn(values, draws)
    assert replicates.var() == pytest.approx(recall.var() / len(runs), rel=0.08)
    result = boot.compare(runs, [alike(0)])
    assert result["AR100"].value == pytest.approx(recall.mean())
    assert result["AR100"].resolved == 1 and result["AR100"].low > 0
    single = boot.compare(runs[:1], [alike(0)])["AR100"]  # one seed: nothing to resample
    assert single.value_low == single.value_high == single.value


def test_seeds_pair_by_value_only() -> None:
    gt, preds = coco_case(**CASES["crowd-regions"])
    _, a = evaluate.evaluate_with_records(gt, preds)
    _, c = evaluate.evaluate_with_records(gt, preds[::2])
    boot = statistics.Bootstrap(replicates=300, metrics=("AP",))
    same = boot.compare([a, c], [a, c], row_seeds=[0, 1], baseline_seeds=[0, 1])["AP"]
    swapped = boot.compare([a, c], [c, a], row_seeds=[0, 1], baseline_seeds=[1, 0])["AP"]
    assert same.low == same.high == 0.0 and swapped.low == swapped.high == 0.0
    other = boot.compare([a, c], [a, c], row_seeds=[0, 1], baseline_seeds=[5, 6])["AP"]
    assert not other.seeds_paired and other.diff == 0.0 and other.low < 0 < other.high


def test_resolved_sign_and_determinism() -> None:
    gt, preds = coco_case(5, num_images=40, num_classes=3, max_objects=5, copies=1,
                          false_positives=20)  # fmt: skip
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 0.9} for a in gt["annotations"] if not a["iscrowd"]]  # fmt: skip
    _, noisy = evaluate.evaluate_with_records(gt, preds)
    _, good = evaluate.evaluate_with_records(gt, perfect)
    better = statistics.compare_runs([good], [noisy], replicates=300)
    worse = statistics.compare_runs([noisy], [good], replicates=300)
    for m in ("AP", "AP75", "AP90"):
        assert better[m].resolved == 1 and better[m].low > 0
        assert worse[m].resolved == -1 and worse[m].high < 0
        assert better[m].diff == pytest.approx(-worse[m].diff, abs=1e-15)
    again = statistics.compare_runs([good], [noisy], replicates=300)
    assert again == better
    reseeded = statistics.compare_runs([good], [noisy], replicates=300, seed=1)
    assert reseeded["AP"].diff == better["AP"].diff and reseeded["AP"].low != better["AP"].low
    with pytest.raises(ValueError, match="same test images"):
        statistics.compare_runs([good], [_recall_records(np.ones(3, bool))], replicates=10)


def test_percentile_interval_and_resolved() -> None:
    values = np.arange(1001, dtype=float)
    assert statistics.percentile_interval(values, 0.95) == pytest.approx((25.0, 975.0))
    assert statistics.percentile_interval(values[::-1], 0.9) == pytest.approx((50.0, 950.0))
    nan_left_out = statistics.percentile_interval(np.array([np.nan, 1.0, 3.0]), 0.5)
    assert nan_left_out == pytest.approx((1.5, 2.5))
    assert all(np.isnan(statistics.percentile_interval(np.array([np.nan]), 0.95)))
    assert [statistics.resolved(*i) for i in ((0.1, 2), (-2, -0.1), (-1, 1), (0, 1))] == [
        1, -1, 0, 0,
    ]  # fmt: skip


# --------------------------------------------------------------------------- plan level
def _plan(seeds: int = 2) -> dict:
    config = {
        "preset": "unit",
        "seeds": seeds,
        "datasets": {"shapes": {"kind": "synthetic", "train_splits": ["a"], "test_split": "b"}},
        "schedules": {"s": {"max_iter": 1, "base_lr": 0.1, "batch_size": 1}},
        "tables": {
            "t1": {
                "title": "Ablation",
                "paper_table": "I",
                "metrics": ["AP", "AP75", "AP90"],
                "rows": [{"variant": ["smooth_l1", "giou", "eiou"], "detector": "faster_rcnn",
                          "backbone": "tiny", "dataset": "shapes", "schedule": "s"}],
            }
        },
    }  # fmt: skip
    return build_plan(validate_config(config, SCHEMA))


def _fabricate(plan: dict, runs_dir: Path, skip: frozenset = frozenset()) -> dict:
    """Per run: detections with a localisation error that depends on the variant (giou
    better than smooth_l1, eiou the same as smooth_l1) and a little on the seed; records
    and metrics.json as `eiou evaluate` writes them."""
    gt, _ = coco_case(7, num_images=60, num_classes=3, max_objects=4, copies=0)
    error = {"smooth_l1": 0.12, "giou": 0.03, "eiou": 0.12}
    for row in plan["tables"][0]["rows"]:
        for seed, rid in enumerate(row["run_ids"]):
            if (row["variant"], seed) in skip:
                continue
            offset = {"smooth_l1": 0, "giou": 100, "eiou": 200}[row["variant"]]
            rng = np.random.default_rng(offset + seed)
            preds = []
            for a in gt["annotations"]:
                x, y, w, h = a["bbox"]
                j = rng.normal(0, error[row["variant"]], 4) * [w, h, w, h]
                preds.append({"image_id": a["image_id"], "category_id": a["category_id"],
                              "bbox": [x + j[0], y + j[1], abs(w + j[2]), abs(h + j[3])],
                              "score": float(rng.uniform())})  # fmt: skip
            metrics, records = evaluate.evaluate_with_records(gt, preds)
            evaluate.write_image_records(runs_dir / rid / evaluate.RECORDS_FILE, records)
            write_json(runs_dir / rid / "metrics.json", {**metrics, "provenance": {"seed": seed}})
    return gt


def test_compare_plan(tmp_path: Path) -> None:
    plan = _plan()
    _fabricate(plan, tmp_path)
    frame = statistics.compare_plan(plan, tmp_path, replicates=300)
    assert list(frame.columns) == list(statistics.COLUMNS)
    assert len(frame) == 3 * len(statistics.METRICS)
    by = frame.set_index(["variant", "metric"])
    for m in statistics.METRICS:
        base = by.loc[("smooth_l1", m)]
        assert base["diff"] == 0 and base["low"] == base["high"] == 0 and base["resolved"] == 0
        assert base["value"] == pytest.approx(base["baseline_value"])
    assert by.loc[("giou", "AP75"), "resolved"] == 1 and by.loc[("giou", "AP"), "low"] > 0
    eiou_ap = by.loc[("eiou", "AP")]  # the same error as the baseline, other runs: no claim
    assert eiou_ap["diff"] != 0 and eiou_ap["low"] < 0 < eiou_ap["high"]
    assert eiou_ap["resolved"] == 0
    assert (frame["n_seeds"] == 2).all() and frame["seeds_paired"].all()
    assert (frame["n_images"] == 60).all() and (frame["baseline_row"] == 1).all()
    # percent: the row's value is the mean over seeds of its metrics.json AP
    ap = [json.loads((tmp_path / rid / "metrics.json").read_text())["AP"]
          for rid in plan["tables"][0]["rows"][1]["run_ids"]]  # fmt: skip
    assert by.loc[("giou", "AP"), "value"] == pytest.approx(100 * np.mean(ap), abs=1e-10)
    assert by.loc[("giou", "AP"), "half_width"] == pytest.approx(
        (by.loc[("giou", "AP"), "value_high"] - by.loc[("giou", "AP"), "value_low"]) / 2
    )
    path = tmp_path / "comparisons.csv"
    statistics.write_comparisons(path, frame)
    back = statistics.read_comparisons(path)
    pd.testing.assert_frame_equal(back, frame, check_exact=False, rtol=1e-12)


def test_compare_plan_with_missing_runs(tmp_path: Path) -> None:
    plan = _plan()
    _fabricate(plan, tmp_path, skip=frozenset({("giou", 1), ("eiou", 0), ("eiou", 1)}))
    frame = statistics.compare_plan(plan, tmp_path, replicates=50).set_index("variant")
    giou = frame.loc["giou"]
    assert (giou["n_seeds"] == 1).all() and not giou["seeds_paired"].any()
    eiou = frame.loc["eiou"]
    assert (eiou["n_seeds"] == 0).all() and eiou["diff"].isna().all()
    assert eiou["resolved"].isna().all()


@pytest.mark.slow
def test_cli_compare_then_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(seeds=1)
    runs = tmp_path / "runs"
    _fabricate(plan, runs)
    write_plan(tmp_path / "plan.json", plan)
    out = tmp_path / "tables" / "comparisons.csv"
    rc = main(["compare", "--plan", str(tmp_path / "plan.json"), "--runs-dir", str(runs),
               "--output", str(out), "--replicates", "200"])  # fmt: skip
    assert rc == 0 and "resolved at 95% (200 replicates)" in capsys.readouterr().out
    frame = statistics.read_comparisons(out)
    assert len(frame) == 3 * len(statistics.METRICS) and (frame["replicates"] == 200).all()
    rc = main(["tables", "--plan", str(tmp_path / "plan.json"), "--runs-dir", str(runs),
               "--out-dir", str(tmp_path / "tables"), "--comparisons", str(out)])  # fmt: skip
    assert rc == 0
    md = (tmp_path / "tables" / "t1.md").read_text()
    giou = frame[(frame["variant"] == "giou") & (frame["metric"] == "AP75")].iloc[0]
    cell = f"{giou['diff']:+.1f} [{giou['low']:+.1f}, {giou['high']:+.1f}] *"
    assert cell in md and "| baseline |" in md
    assert "200 bootstrap replicates" in md and "60 test images" in md
    assert "One seed per row" in md
