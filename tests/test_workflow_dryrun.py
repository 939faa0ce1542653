"""The Snakemake workflow: dry runs, job counts, lint, config errors, missing roots.

The paper preset's job count is computed here from the config file alone (plain YAML and
itertools, not eiou.experiments), so the test fails if the workflow's expansion or
deduplication drifts from what the config says.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

#: Job count of `snakemake -n --configfile config/paper.yaml`, as README.md states it.
PAPER_DRY_RUN_JOBS = 104

# Domain knowledge, not code: Tables II-IV's "ours" is Table I's row 8.
SAME_VARIANT = {"ours": "eiou_ct_sot_iou_head"}
# Rules that run once per workflow: plan, select, toy, figures_toy, compare, tables, figures,
# report, all.
ONCE = 9
# The built-in variants with an IoU head, and the scoring methods each of their runs is
# rescored with (cls, sqrt_cls_x_iou, iou_guided_nms), on the engines that record the
# candidates (torchvision; the paper preset runs on detectron2, which does not yet).
IOU_HEAD_VARIANTS = {"smooth_l1_iou_head", "eiou_ct_sot_iou_head"}
SCORING_METHODS = 3
CANDIDATE_ENGINES = {"torchvision"}


pytestmark = pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake not installed")


def snakemake(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run the checkout's Snakefile in ``cwd`` (default: a fresh empty folder, so outputs of
    an earlier run in the checkout do not change the job counts); ``config/...`` arguments
    name the checkout's presets. Returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    cwd = Path(tempfile.mkdtemp(prefix="eiou-dryrun-")) if cwd is None else cwd
    args = tuple(str(ROOT / a) if a.startswith("config/") else a for a in args)
    return subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(cwd), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    stats = output.split("Job stats:")[1]
    counts = {}
    for line in stats.splitlines():
        match = re.match(r"^([A-Za-z_]+)\s+(\d+)\s*$", line)
        if match:
            counts[match.group(1)] = int(match.group(2))
        elif counts and not line.strip():
            break
    return counts


def expected_counts(preset: str) -> dict[str, int]:
    """Per-rule job counts computed from the preset file alone."""
    config = yaml.safe_load((ROOT / "config" / f"{preset}.yaml").read_text())
    default_seeds = config.get("seeds", 1)
    runs = set()
    datasets = set()

    def listify(value):
        return value if isinstance(value, list) else [value]

    for table in config["tables"].values():
        for row in table["rows"]:
            axes = [
                listify(row[k]) for k in ("variant", "detector", "backbone", "dataset", "schedule")
            ]
            for variant, detector, backbone, dataset, schedule in itertools.product(*axes):
                variant = SAME_VARIANT.get(variant, variant)
                datasets.add(dataset)
                for seed in range(table.get("seeds", default_seeds)):
                    runs.add((variant, detector, backbone, dataset, schedule, seed))
    scored = [r for r in runs if config["datasets"][r[3]].get("has_ground_truth", True)]
    engine = (config.get("model") or {}).get("engine", "torchvision")
    rescored = [r for r in scored if r[0] in IOU_HEAD_VARIANTS and engine in CANDIDATE_ENGINES]
    return {
        "run_spec": len(runs),
        "train": len(runs),
        "predict": len(runs) - len(rescored),
        "predict_with_candidates": len(rescored),
        "rescore": len(rescored),
        "evaluate": len(scored),
        "evaluate_rescored": SCORING_METHODS * len(rescored),
        "server_results": len(runs) - len(scored),
        "prepare_data": len(datasets),
        "total": 4 * len(runs) + len(datasets) + ONCE + (1 + SCORING_METHODS) * len(rescored),
    }


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("roots")
    (base / "voc").mkdir()
    (base / "coco").mkdir()
    return {"EIOU_VOC_ROOT": str(base / "voc"), "EIOU_COCO_ROOT": str(base / "coco")}


def test_paper_dry_run_job_count(data_roots):
    result = snakemake(
        "-n", "--quiet", "rules", "--configfile", "config/paper.yaml", env=data_roots
    )
    assert result.returncode == 0, result.stderr + result.stdout
    counts = job_counts(result.stdout + result.stderr)
    expected = expected_counts("paper")
    for rule, count in expected.items():
        assert counts.get(rule, 0) == count, (rule, counts)
    # 23 unique runs: Table I 8, Table II adds 5 (CIoU and 4 RetinaNet), III 8, IV 2; on the
    # detectron2 engine none is rescored
    assert expected["train"] == 23 and expected["rescore"] == 0
    assert counts["total"] == PAPER_DRY_RUN_JOBS


def test_paper_on_torchvision_rescores_its_iou_head_runs(data_roots):
    """With the torchvision overlay, the 5 IoU-head runs with ground truth (Table I 2,
    Table II 1 more, Table III 2) record candidates and are rescored under each method."""
    result = snakemake(
        "-n",
        "--quiet",
        "rules",
        "--configfile",
        "config/paper.yaml",
        "config/engines/torchvision.yaml",
        env=data_roots,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    counts = job_counts(result.stdout + result.stderr)
    assert counts["predict_with_candidates"] == counts["rescore"] == 5
    assert counts["evaluate_rescored"] == SCORING_METHODS * 5
    assert counts["predict"] + counts["predict_with_candidates"] == counts["train"] == 23


@pytest.mark.parametrize("preset", ["mini", "smoke"])
def test_reduced_presets_dry_run(preset):
    result = snakemake("-n", "--quiet", "rules", "--configfile", f"config/{preset}.yaml")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout + result.stderr)
    for rule, count in expected_counts(preset).items():
        assert counts.get(rule, 0) == count, (rule, counts)


def test_default_preset_is_mini_and_presets_do_not_merge():
    default = job_counts(snakemake("-n", "--quiet", "rules").stdout)
    smoke = job_counts(
        snakemake("-n", "--quiet", "rules", "--configfile", "config/smoke.yaml").stdout
    )
    assert default == job_counts(
        snakemake("-n", "--quiet", "rules", "--configfile", "config/mini.yaml").stdout
    )
    assert smoke["train"] == expected_counts("smoke")["train"] < default["train"]


def test_seeds_override_repeats_runs():
    result = snakemake(
        "-n", "--quiet", "rules", "--configfile", "config/smoke.yaml", "--config", "seeds=3"
    )
    counts = job_counts(result.stdout)
    assert counts["train"] == 3 * expected_counts("smoke")["train"]


def test_missing_roots_fail_before_scheduling(tmp_path):
    env = {"EIOU_VOC_ROOT": str(tmp_path / "absent"), "EIOU_COCO_ROOT": ""}
    result = snakemake("-n", "--configfile", "config/paper.yaml", env=env)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "dataset roots missing" in out
    assert "datasets.voc.root" in out and "absent" in out
    assert "EIOU_COCO_ROOT is not set" in out
    assert "Job stats" not in out


def test_invalid_config_names_key(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["tables"]["table1"]["rows"][0]["detector"] = "yolo"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path))
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "config key tables.table1.rows[0].detector" in out
    assert "'faster_rcnn', 'retinanet'" in out


def test_gpu_jobs_use_torchrun_and_resources(data_roots):
    result = snakemake(
        "-n", "-p", "--configfile", "config/paper.yaml", "--until", "train", env=data_roots
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "torchrun --standalone --nproc_per_node 8 -m eiou.cli train" in out
    assert re.search(r"resources: .*gpu=8", out)
    # the checkpoint folder is not an output: Snakemake never deletes it
    assert "checkpoints" not in "".join(re.findall(r"output: (.*)", out))


def test_every_rule_has_log_and_resources():
    text = "\n".join(p.read_text() for p in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    rules = re.split(r"^rule ", text, flags=re.M)[1:]
    assert len(rules) >= 11
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    local = set(re.findall(r"^    (\w+),$", common.split("localrules:")[1].split("\n\n")[0], re.M))
    assert {"all", "plan", "run_spec"} <= local
    for body in rules:
        name = body.split(":")[0]
        assert "    log:" in body, name
        if name not in local:  # local bookkeeping rules write one small file
            for key in ("threads:", "mem_mb=", "runtime=", "gpu="):
                assert key in body, (name, key)


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


@pytest.mark.slow
def test_runs_verb_writes_specs(tmp_path):
    out = tmp_path / "runs"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from eiou.cli import runs; import argparse, sys;"
            "p = argparse.ArgumentParser(); runs.add_arguments(p);"
            "sys.exit(runs.run(p.parse_args(sys.argv[1:])))",
            "--config",
            "config/smoke.yaml",
            "--out-dir",
            str(out),
            "--plan",
            str(tmp_path / "plan.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(plan["runs"])
    assert "2 unique runs" in result.stdout
    shutil.rmtree(out)
