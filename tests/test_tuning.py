"""Tuning on equal terms: the held-out validation split, candidates and budgets, and a
selection that never reads the test split."""

from __future__ import annotations

import builtins
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_experiments import minimal

from eiou import experiments
from eiou.data import DatasetError, carve_holdout

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def _coco(n: int) -> dict:
    images = [
        {"id": 100 + 7 * i, "file_name": f"{i}.png", "width": 8, "height": 8} for i in range(n)
    ]
    annotations = [
        {"id": k, "image_id": im["id"], "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4}
        for k, im in enumerate(images * 2)
    ]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}


# --------------------------------------------------------------------------- holdout
def test_holdout_is_a_seeded_disjoint_split_independent_of_order() -> None:
    data = _coco(50)
    kept, held = carve_holdout(data, 0.2, seed=3)
    kept_ids = {im["id"] for im in kept["images"]}
    held_ids = {im["id"] for im in held["images"]}
    assert len(held_ids) == 10 and not kept_ids & held_ids
    assert kept_ids | held_ids == {im["id"] for im in data["images"]}
    for part, ids in ((kept, kept_ids), (held, held_ids)):  # annotations follow their images
        assert {a["image_id"] for a in part["annotations"]} == ids
        assert len(part["annotations"]) == 2 * len(ids)
    shuffled = copy.deepcopy(data)
    shuffled["images"].reverse()
    assert {im["id"] for im in carve_holdout(shuffled, 0.2, 3)[1]["images"]} == held_ids
    other = {im["id"] for im in carve_holdout(data, 0.2, seed=4)[1]["images"]}
    assert other != held_ids  # the seed matters
    with pytest.raises(DatasetError, match="fraction"):
        carve_holdout(data, 1.0, 0)


# --------------------------------------------------------------------------- planning
def tuned(grid: dict | None = None, variants: list | None = None) -> dict:
    config = minimal()
    table = config["tables"]["t1"]
    table["rows"][0]["variant"] = variants or [
        {"name": "l1", "box_loss": {"name": "smooth_l1", "weight": [0.5, 1.0]}},
        {"name": "ct", "box_loss": {"name": "eiou", "power": [1.5, 2]}},
    ]
    table["rows"][0]["detector"] = "faster_rcnn"
    table["tuning"] = {"holdout_fraction": 0.25, "grid": grid or {}}
    config["seeds"] = 2
    return config


def plan_of(config: dict) -> dict:
    return experiments.build_plan(experiments.validate_config(config))


def test_candidates_times_seeds_all_train_without_the_holdout() -> None:
    plan = plan_of(tuned(grid={"train.base_lr": [0.01, 0.02]}))
    rows = plan["tables"][0]["rows"]
    assert [len(r["candidates"]) for r in rows] == [4, 4]
    assert all(r["run_ids"] == [] for r in rows)  # chosen later, on the validation split
    assert len(plan["runs"]) == 2 * 4 * 2
    for spec in plan["runs"].values():
        assert spec["data"]["holdout"] == {"fraction": 0.25, "seed": 0}
    chosen = rows[1]["candidates"][3]
    assert chosen["values"] == {"model.box_loss.power": 2, "train.base_lr": 0.02}
    spec = plan["runs"][chosen["run_ids"][0]]
    assert spec["model"]["box_loss"]["power"] == 2 and spec["train"]["base_lr"] == 0.02
    assert set(experiments.validated_runs(plan)) == set(plan["runs"])


def test_every_variant_gets_the_same_budget() -> None:
    unequal = tuned(
        variants=[
            {"name": "l1", "box_loss": {"name": "smooth_l1", "weight": [0.5, 1.0, 2.0]}},
            {"name": "ct", "box_loss": {"name": "eiou", "power": [1.5, 2]}},
        ]
    )
    with pytest.raises(experiments.ConfigError, match=r"same number of candidates.*ct: 2.*l1: 3"):
        plan_of(unequal)


def test_option_lists_need_a_tuned_table_and_valid_candidates() -> None:
    config = tuned()
    del config["tables"]["t1"]["tuning"]
    with pytest.raises(experiments.ConfigError, match=r"add a tuning section to tables\.t1"):
        experiments.validate_config(config)
    bad = tuned(
        variants=[
            {"name": "l1", "box_loss": {"name": "smooth_l1", "weight": [0.5, 0]}},
            {"name": "ct", "box_loss": {"name": "eiou", "power": [1.5, 2]}},
        ]
    )
    with pytest.raises(experiments.ConfigError, match=r"variant\[0\]\.box_loss\.weight: 0 is"):
        experiments.validate_config(bad)


def test_selection_uses_validation_metrics_only() -> None:
    plan = plan_of(tuned())
    rows = plan["tables"][0]["rows"]
    val = {}  # candidate 1 of l1, candidate 0 of ct are best on average over seeds
    for row, best in zip(rows, (1, 0), strict=True):
        for c, candidate in enumerate(row["candidates"]):
            for s, rid in enumerate(candidate["run_ids"]):
                val[rid] = {"AP": (0.5 if c == best else 0.4) + 0.01 * s}
    asked: list[str] = []

    def validation_metrics(rid: str) -> dict:
        asked.append(rid)
        return val[rid]

    resolved = experiments.select_candidates(plan, validation_metrics)
    chosen = [r["chosen"]["index"] for r in resolved["tables"][0]["rows"]]
    assert chosen == [1, 0]
    assert resolved["tables"][0]["rows"][0]["run_ids"] == rows[0]["candidates"][1]["run_ids"]
    assert sorted(asked) == sorted(experiments.validated_runs(plan))


def test_select_verb_never_opens_a_test_file(tmp_path, monkeypatch) -> None:
    from eiou.cli import main

    plan = plan_of(tuned())
    plan_path = tmp_path / "plan.json"
    experiments.write_plan(plan_path, plan)
    for i, rid in enumerate(plan["runs"]):
        folder = tmp_path / "runs" / rid
        folder.mkdir(parents=True)
        (folder / "metrics_val.json").write_text(json.dumps({"AP": 0.1 * (i % 3)}))
        (folder / "metrics.json").write_text("not JSON: the test split must not be read")
        (folder / "predictions.json").write_text("not JSON either")
    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    out = tmp_path / "plan_selected.json"
    argv = ["select", "--plan", str(plan_path), "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--output", str(out)]) == 0
    monkeypatch.setattr(builtins, "open", real_open)
    run_files = [Path(p).name for p in opened if str(tmp_path / "runs") in p]
    assert run_files and set(run_files) == {"metrics_val.json"}
    assert all("chosen" in r for r in json.loads(out.read_text())["tables"][0]["rows"])


@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake not installed")
def test_select_job_depends_on_validation_metrics_alone(tmp_path) -> None:
    """In the DAG, the select job's inputs are the plan and metrics_val.json files."""
    config = tuned()
    config["preset"] = "tuned"
    preset = tmp_path / "tuned.yaml"
    preset.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(SNAKEMAKE), "results/plan_selected.json", "-n", "--snakefile",
         str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(preset)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    block = result.stdout.split("rule select:")[1].split("\n\n")[0]
    inputs = block.split("input:")[1].split("\n")[0].split(", ")
    assert inputs[0].strip() == "results/plan.json"
    assert len(inputs) == 1 + 8 and all(i.strip().endswith("/metrics_val.json") for i in inputs[1:])


@pytest.mark.slow
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake not installed")
def test_tuned_smoke_table_end_to_end(tmp_path) -> None:
    """A tuned table through Snakemake: candidates trained without the holdout, scored on
    it, one chosen per variant, its test numbers and choice in the table."""
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["tables"]["table1"]["rows"][0]["variant"] = [
        {"name": "l1", "box_loss": {"name": "smooth_l1", "weight": [0.5, 1.0]}},
        {"name": "ours_w", "box_loss": {"name": "eiou", "power": 2, "sot": True,
                                        "coder": "sqrt_area", "weight": [1.0, 2.0]}},
    ]  # fmt: skip
    config["tables"]["table1"]["baseline"] = "l1"
    config["tables"]["table1"]["tuning"] = {"holdout_fraction": 0.25}
    config["toy"] = {"enabled": False}
    preset = tmp_path / "tuned.yaml"
    preset.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(SNAKEMAKE), "results/tables/runs.csv", "--cores", "2", "--snakefile",
         str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(preset)],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    selected = json.loads((tmp_path / "results" / "plan_selected.json").read_text())
    rows = selected["tables"][0]["rows"]
    assert all(r["chosen"]["metric"] == "AP" and len(r["run_ids"]) == 1 for r in rows)
    table = (tmp_path / "results" / "tables" / "table1.md").read_text()
    assert "Tuned on equal terms" in table
    for row in rows:
        assert f"[{row['chosen']['label']}]" in table
    shutil.rmtree(tmp_path / "results" / "runs", ignore_errors=True)
