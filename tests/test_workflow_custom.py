"""The custom template end to end through Snakemake, on a COCO-format and a VOC-format
dataset of one's own (written by ``tests/custom_datasets.py``), sizes and iterations cut
down so that it runs in about a minute on two CPU cores."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from custom_datasets import make_custom_coco, make_custom_voc

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

pytestmark = pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake not installed")


def small_copy_of_the_template(path: Path) -> dict:
    """config/custom.yaml pointed at the two test datasets (paths relative to ``path``'s
    folder), with the tiny backbone, 64 px images, 4 iterations and one seed."""
    config = yaml.safe_load((ROOT / "config" / "custom.yaml").read_text())
    config["seeds"] = 1
    config["model"]["weights"] = "none"
    config["datasets"] = {
        "trees": {
            "kind": "coco",
            "train": {"annotations": "../trees_coco/annotations/train.json",
                      "images": "../trees_coco/images"},
            "test": {"annotations": "../trees_coco/annotations/test.json",
                     "images": "../trees_coco/images"},
            "min_size": 64,
            "max_size": 64,
        },
        "trees_voc": {
            "kind": "voc",
            "root": "../trees_voc",
            "classes": "auto",
            "train_splits": ["train"],
            "test_split": "test",
            "min_size": 64,
            "max_size": 64,
        },
    }  # fmt: skip
    row = config["tables"]["losses"]["rows"][0]
    row.update(backbone="tiny", dataset=["trees", "trees_voc"])
    config["schedules"]["default"].update(
        max_iter=4, batch_size=2, base_batch_size=2, base_lr=0.005, warmup_iters=0, steps=[],
        checkpoint_period=2, num_workers=0,
    )  # fmt: skip
    for section in config["resources"].values():
        section.update(threads=1, mem_mb=1000, runtime=5, gpu=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


@pytest.mark.slow
def test_custom_template_trains_and_reports_on_own_coco_and_voc_data(tmp_path):
    make_custom_coco(tmp_path / "trees_coco", num_train=8, num_test=5)
    make_custom_voc(tmp_path / "trees_voc", num_train=8, num_test=5)
    preset = tmp_path / "config" / "trees.yaml"
    config = small_copy_of_the_template(preset)
    work = tmp_path / "work"  # neither the checkout nor the preset's folder
    work.mkdir()
    start = time.perf_counter()
    result = subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
         "--cores", "2", "--configfile", str(preset), "--quiet", "rules"],
        cwd=work, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"the workflow took {time.perf_counter() - start:.0f} s")

    plan = json.loads((work / "results" / "plan.json").read_text())
    assert len(plan["runs"]) == 4 * 2  # smooth_l1, giou, ciou, ours x two datasets
    by_variant: dict[str, dict[str, dict]] = {}
    for rid, spec in plan["runs"].items():
        metrics = json.loads((work / "results" / "runs" / rid / "metrics.json").read_text())
        variant = json.dumps([spec["model"]["box_loss"], spec["model"]["iou_head"]])
        by_variant.setdefault(variant, {})[spec["data"]["name"]] = metrics
        for key in ("AP", "AP50", "AP90"):
            assert 0.0 <= metrics[key] <= 1.0, (rid, key)
        assert len(metrics["recall_per_iou"]) == 10
        assert metrics["provenance"]["run_id"] == rid
        assert metrics["provenance"]["dataset"] == spec["data"]["name"]
        if spec["data"]["name"] == "trees":
            assert spec["data"]["splits"]["train"]["images"] == str(
                tmp_path / "trees_coco" / "images"
            )
    # the two datasets hold the same images, boxes and classes in the same order (Bush, Tree
    # by category id and by name; images by id and by sorted name): the COCO and the VOC
    # paths must give the same training data, so the same numbers
    for variant, runs in by_variant.items():
        for key in ("AP", "AP50", "AP75", "recall_per_iou"):
            assert runs["trees"][key] == runs["trees_voc"][key], (variant, key)
    # the ground truth evaluation read: the prepared copies, with the names of one's own data
    coco_gt = json.loads((work / "results" / "data" / "trees" / "test.json").read_text())
    voc_gt = json.loads((work / "results" / "data" / "trees_voc" / "test.json").read_text())
    assert sorted(c["id"] for c in coco_gt["categories"]) == [7, 40]
    assert [c["name"] for c in voc_gt["categories"]] == ["Bush", "Tree"]
    assert all(im["voc_name"].startswith("PLOT_") for im in voc_gt["images"])

    table = pd.read_csv(work / "results" / "tables" / "losses.csv")
    assert len(table) == 8 and set(table["dataset"]) == {"trees", "trees_voc"}
    assert not table["AP"].isna().any()
    assert set(table["variant"]) == set(config["tables"]["losses"]["rows"][0]["variant"])
    summary = (work / "reports" / "summary.md").read_text()
    assert "trees (coco)" in summary and "trees_voc (voc)" in summary
    figures = list((work / "reports" / "figures").glob("*.png"))
    assert figures and not any(f.name.startswith("toy_") for f in figures)
    assert math.isfinite(float(table["AP"].mean()))
