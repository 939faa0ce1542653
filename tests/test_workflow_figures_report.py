"""Figures and the Markdown summary from fabricated run outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eiou import figures, report, tables
from eiou.experiments import build_plan, validate_config
from eiou.io import write_json, write_text

IOUS = [round(0.5 + 0.05 * i, 2) for i in range(10)]


def make_plan() -> dict:
    row = {"detector": "faster_rcnn", "backbone": "tiny", "dataset": "shapes", "schedule": "s"}
    config = {
        "preset": "unit",
        "seeds": 2,
        "datasets": {"shapes": {"kind": "synthetic", "train_splits": ["a"], "test_split": "b"}},
        "schedules": {"s": {"max_iter": 20, "base_lr": 0.1, "batch_size": 1}},
        "tables": {
            "t1": {
                "title": "Ablation",
                "paper_table": "I",
                "metrics": ["AP"],
                "rows": [{**row, "variant": ["smooth_l1", "eiou", "eiou_ct_sot_iou_head"]}],
            },
            "t2": {
                "title": "Detectors",
                "paper_table": "II",
                "rows": [
                    {
                        **row,
                        "variant": ["smooth_l1", "ours"],
                        "detector": ["faster_rcnn", "retinanet"],
                    }
                ],
            },
        },
    }
    return build_plan(validate_config(config))


def fabricate(plan: dict, runs_dir: Path) -> None:
    for k, (rid, spec) in enumerate(plan["runs"].items()):
        recall = [0.9 - 0.08 * i - 0.01 * k for i in range(10)]
        write_json(
            runs_dir / rid / "metrics.json",
            {
                "AP": 0.3 + 0.01 * k,
                "AP50": 0.6,
                "recall_per_iou": recall,
                "ap_per_iou": [r - 0.2 for r in recall],
            },
        )
        lines = [
            json.dumps(
                {"iteration": i, "loss": 2.0 / (i + 1), "loss_box_reg": 1.0 / (i + 1), "lr": 0.1}
            )
            for i in range(0, spec["train"]["max_iter"], 5)
        ]
        write_text(runs_dir / rid / "train_log.jsonl", "\n".join(lines) + "\n")


def test_expected_figure_lists():
    plan = make_plan()
    stems = figures.experiment_figure_stems(plan)
    assert stems == [
        "fig7_recall_vs_iou", "ap_by_iou", "ablation_t1", "differences_t2", "training_curves",
    ]  # fmt: skip
    files = figures.expected_figures(plan, "out")
    assert len(files) == 10 and {Path(f).suffix for f in files} == {".png", ".pdf"}
    assert figures.figure_kind("out/differences_t2.png") == "Differences to the baseline"
    assert len(figures.expected_toy_figures("out")) == 2 * len(figures.TOY_TABLES)


def test_recall_and_training_frames(tmp_path):
    plan = make_plan()
    fabricate(plan, tmp_path)
    frame = figures.recall_frame(plan, tmp_path)
    assert len(frame) == 10 * len(plan["runs"])
    first = next(iter(plan["runs"]))
    values = frame[frame["run_id"] == first].sort_values("iou")
    assert values["iou"].tolist() == IOUS
    assert values["value"].to_numpy() == pytest.approx([90 - 8 * i for i in range(10)])
    train = figures.training_frame(plan, tmp_path)
    assert set(train["loss"]) == {"loss", "loss_box_reg"}  # "lr" is not a loss
    assert len(train) == 2 * 4 * len(plan["runs"])


@pytest.mark.slow
def test_figures_and_summary_are_written(tmp_path):
    plan = make_plan()
    runs_dir, fig_dir, tab_dir = tmp_path / "runs", tmp_path / "figures", tmp_path / "tables"
    fabricate(plan, runs_dir)
    comparisons = pd.DataFrame(
        [{"table": t["name"], "row": i, "variant": r["variant"], "label": r["label"],
          "detector": r["detector"], "dataset": r["dataset"], "metric": m,
          "diff": 0.0 if r["variant"] == t["baseline"] else 1.0 + i, "low": -0.5 + i,
          "high": 2.5 + i, "half_width": 1.0, "resolved": int(i > 1), "baseline_row": 1,
          "n_seeds": 2,
          "n_images": 32, "replicates": 1000, "confidence": 0.95}
         for t in plan["tables"] for i, r in enumerate(t["rows"], start=1)
         for m in ("AP", "AP75", "AP90")]
    )  # fmt: skip
    comparisons["resolved"] = comparisons["resolved"].astype("Int64")
    tables.write_tables(plan, runs_dir, tab_dir, None, comparisons)
    written = figures.make_experiment_figures(plan, runs_dir, fig_dir, comparisons)
    assert sorted(map(str, written)) == sorted(figures.expected_figures(plan, str(fig_dir)))
    for path in written:
        head = path.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), path

    toy_dir = tmp_path / "toy"
    x = np.linspace(-1, 1, 5)
    grid = pd.DataFrame(
        [(a, b, a * a + b * b, m) for a in x for b in x for m in ("iou", "eiou")],
        columns=["dx", "dy", "loss", "loss_name"],
    )
    write_text(toy_dir / "fig4_surface.csv", grid.to_csv(index=False))
    write_text(
        toy_dir / "fig3.csv", pd.DataFrame({"x": x, "iou": x, "giou": x / 2}).to_csv(index=False)
    )
    toy = figures.make_toy_figures(toy_dir, fig_dir)  # the other CSVs are missing: placeholders
    assert sorted(map(str, toy)) == sorted(figures.expected_toy_figures(str(fig_dir)))

    output = tmp_path / "reports" / "summary.md"
    report.write_summary(plan, tab_dir, fig_dir, output)
    text = output.read_text()
    assert "NOT the paper's setting" in text
    assert "### Ablation" in text and "### Detectors" in text
    assert "](../figures/fig7_recall_vs_iou.png)" in text
    assert "](../tables/t1.csv)" in text and "](../tables/comparisons.csv)" in text
    assert "| ΔAP vs smooth_l1 |" in text and "| +3.0 [+1.5, +4.5] * |" in text
    assert all(f"`{rid}`" in text for rid in plan["runs"])
