"""Tables from fabricated metrics.json files against hand-computed expectations."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from eiou import tables
from eiou.experiments import build_plan, validate_config
from eiou.io import write_json

# AP as fractions, per (variant, detector): one value per seed
AP = {
    ("smooth_l1", "faster_rcnn"): [0.40, 0.42],
    ("giou", "faster_rcnn"): [0.45, 0.47],
    ("smooth_l1", "retinanet"): [0.30, 0.36],
    ("giou", "retinanet"): [0.32, 0.34],
}


def make_plan(seeds: int = 2, paper_setting: bool = False) -> dict:
    config = {
        "preset": "unit",
        "description": "fabricated",
        "paper_setting": paper_setting,
        "seeds": seeds,
        "datasets": {"shapes": {"kind": "synthetic", "train_splits": ["a"], "test_split": "b"}},
        "schedules": {"s": {"max_iter": 1, "base_lr": 0.1, "batch_size": 1}},
        "tables": {
            "t2": {
                "title": "Table II analogue",
                "paper_table": "II",
                "metrics": ["AP", "AP90"],
                "rows": [
                    {
                        "variant": ["smooth_l1", "giou"],
                        "detector": ["faster_rcnn", "retinanet"],
                        "backbone": "tiny",
                        "dataset": "shapes",
                        "schedule": "s",
                    }
                ],
            }
        },
    }
    return build_plan(validate_config(config))


def fabricate(plan: dict, runs_dir: Path, skip: set[tuple[str, str, int]] = frozenset()) -> None:
    for row in plan["tables"][0]["rows"]:
        for seed, rid in enumerate(row["run_ids"]):
            if (row["variant"], row["detector"], seed) in skip:
                continue
            ap = AP[(row["variant"], row["detector"])][seed]
            write_json(runs_dir / rid / "metrics.json", {"AP": ap, "AP90": ap / 2, "AP50": 0.9})


@pytest.fixture
def table_frame(tmp_path):
    plan = make_plan()
    fabricate(plan, tmp_path)
    runs = tables.gather_runs(plan, tmp_path)
    return plan, tables.build_table(plan["tables"][0], runs).set_index(["variant", "detector"])


def test_mean_std_paper_delta(table_frame):
    _, frame = table_frame
    r = frame.loc[("giou", "faster_rcnn")]
    assert r["AP"] == pytest.approx(46.0)
    assert r["AP_std"] == pytest.approx(math.sqrt(2.0))  # sample std of 45, 47
    assert r["AP_paper"] == 46.9
    assert r["AP_delta"] == pytest.approx(-0.9)
    assert r["AP90"] == pytest.approx(23.0)
    assert r["AP90_paper"] == 28.6
    r = frame.loc[("smooth_l1", "retinanet")]
    assert r["AP"] == pytest.approx(33.0)
    assert r["AP_std"] == pytest.approx(math.sqrt(18.0))  # 30, 36
    assert r["AP_delta"] == pytest.approx(33.0 - 44.2)
    assert r["n_seeds"] == 2 and r["n_measured"] == 2


def comparisons_for(plan: dict, replicates: int = 2000) -> pd.DataFrame:
    """A hand-made comparisons frame (the columns of eiou.statistics.COLUMNS that the
    tables read): giou vs smooth_l1 on Faster R-CNN +5.0 [+1.0, +9.0] (resolved), on
    RetinaNet +0.0 [-3.0, +2.5] (not); AP90 of Faster R-CNN -2.0 [-3.5, -0.5] (resolved)."""
    lines = []
    values = {
        ("giou", "faster_rcnn"): {"AP": (5.0, 1.0, 9.0), "AP90": (-2.0, -3.5, -0.5)},
        ("giou", "retinanet"): {"AP": (0.0, -3.0, 2.5), "AP90": (1.0, -1.0, 3.0)},
    }
    for i, row in enumerate(plan["tables"][0]["rows"], start=1):
        for m in ("AP", "AP50", "AP75", "AP90", "AR100"):
            diff, low, high = values.get((row["variant"], row["detector"]), {}).get(m, (0, 0, 0))
            lines.append({"table": "t2", "row": i, "variant": row["variant"],
                          "detector": row["detector"], "metric": m, "diff": diff, "low": low,
                          "high": high, "resolved": 1 if low > 0 else (-1 if high < 0 else 0),
                          "half_width": 1.5, "n_seeds": 2, "n_images": 32,
                          "replicates": replicates, "confidence": 0.95})  # fmt: skip
    frame = pd.DataFrame(lines)
    frame["resolved"] = frame["resolved"].astype("Int64")
    return frame


def test_difference_to_baseline_with_interval(table_frame):
    plan, _ = table_frame
    runs = tables.gather_runs(plan, Path("/nonexistent"))
    frame = tables.build_table(plan["tables"][0], runs, comparisons_for(plan))
    frame = frame.set_index(["variant", "detector"])
    r = frame.loc[("giou", "faster_rcnn")]
    assert (r["AP_diff"], r["AP_low"], r["AP_high"], r["AP_resolved"]) == (5.0, 1.0, 9.0, 1)
    assert r["AP90_resolved"] == -1 and r["AP_half_width"] == 1.5
    r = frame.loc[("giou", "retinanet")]
    assert r["AP_diff"] == 0.0 and r["AP_resolved"] == 0
    assert frame.loc[("smooth_l1", "faster_rcnn"), "is_baseline"]
    assert "AP50_diff" not in frame  # only the table's metrics
    # no comparisons: no difference columns, and no claim
    plain = tables.build_table(plan["tables"][0], runs)
    assert not any(c.endswith(("_diff", "_resolved")) for c in plain.columns)


def test_percent_units_are_not_scaled(tmp_path):
    plan = make_plan(seeds=1)
    rid = plan["tables"][0]["rows"][0]["run_ids"][0]
    write_json(tmp_path / rid / "metrics.json", {"AP": 41.5, "units": "percent"})
    runs = tables.gather_runs(plan, tmp_path).set_index("run_id")
    assert runs.loc[rid, "AP"] == 41.5
    assert runs["has_metrics"].sum() == 1 and runs["AP"].isna().sum() == 3


def test_written_files(tmp_path):
    plan = make_plan()
    fabricate(plan, tmp_path / "runs")
    comparisons = comparisons_for(plan)
    written = tables.write_tables(plan, tmp_path / "runs", tmp_path / "tables", None, comparisons)
    assert sorted(str(p) for p in written) == sorted(
        str(tmp_path / p) for p in tables.expected_files(plan, "tables")
    )
    csv = pd.read_csv(tmp_path / "tables" / "t2.csv")
    assert len(csv) == 4 and set(csv["preset"]) == {"unit"} and not csv["paper_setting"].any()
    assert csv["notice"].str.contains("NOT the paper's setting").all()
    assert {"AP_diff", "AP_low", "AP_high", "AP_resolved", "AP90_diff"} <= set(csv.columns)
    md = (tmp_path / "tables" / "t2.md").read_text()
    assert "NOT the paper's setting" in md
    assert "| 46.0 ± 1.4 (46.9, -0.9) |" in md
    assert "| ΔAP vs smooth_l1 | ΔAP90 vs smooth_l1 |" in md
    assert "| +5.0 [+1.0, +9.0] * | -2.0 [-3.5, -0.5] * |" in md
    assert "| +0.0 [-3.0, +2.5] | +1.0 [-1.0, +3.0] |" in md  # not resolved: no mark
    assert "| baseline | baseline |" in md
    assert "2000 bootstrap replicates" in md and "32 test images" in md and "95% interval" in md
    tex = (tmp_path / "tables" / "t2.tex").read_text()
    assert r"46.0 $\pm$ 1.4 (46.9, -0.9)" in tex and r"\label{tab:t2}" in tex
    assert r"$\Delta$AP vs smooth\_l1" in tex and r"95\% interval" in tex
    assert "smooth_l1" not in tex.replace(r"smooth\_l1", "")  # underscores escaped
    runs = pd.read_csv(tmp_path / "tables" / "runs.csv")
    assert len(runs) == 8


def test_paper_preset_tables_do_not_carry_the_notice(tmp_path):
    plan = make_plan(paper_setting=True)
    tables.write_tables(plan, tmp_path / "runs", tmp_path / "tables")
    md = (tmp_path / "tables" / "t2.md").read_text()
    assert "NOT the paper's setting" not in md and "the paper's setting" in md
    assert "pending" in md  # no metrics yet


def test_one_seed_legend(tmp_path):
    plan = make_plan(seeds=1)
    fabricate(plan, tmp_path / "runs")
    tables.write_tables(plan, tmp_path / "runs", tmp_path / "tables")
    md = (tmp_path / "tables" / "t2.md").read_text()
    assert "over 1 seed(s)" in md and "±" not in md.split("\n\n")[3]
    assert "No differences to the baseline with intervals yet" in md
    comparisons = comparisons_for(plan, replicates=500)
    comparisons["n_seeds"] = 1
    tables.write_tables(plan, tmp_path / "runs", tmp_path / "tables", None, comparisons)
    md = (tmp_path / "tables" / "t2.md").read_text()
    assert "One seed per row: the interval covers test-image sampling only" in md
    assert "500 bootstrap replicates" in md
