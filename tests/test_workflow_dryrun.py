"""The Snakemake workflow: dry runs, job counts, resources, lint, config errors, datasets.

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
SNAKEFMT = Path(sys.executable).parent / "snakefmt"

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


def make_layouts(base: Path) -> dict[str, str]:
    """The smallest VOC devkit and COCO 2017 folders the plan accepts (one file each)."""
    for year in ("2007", "2012"):
        year_dir = base / "voc" / "VOCdevkit" / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (year_dir / sub).mkdir(parents=True)
        for imageset in ("trainval", "test"):
            (year_dir / "ImageSets" / "Main" / f"{imageset}.txt").write_text("000001\n")
        (year_dir / "Annotations" / "000001.xml").write_text("<annotation/>")
        (year_dir / "JPEGImages" / "000001.jpg").write_bytes(b"\xff\xd8")
    for folder in ("train2017", "val2017", "test2017"):
        (base / "coco" / folder).mkdir(parents=True)
        (base / "coco" / folder / "000000000001.jpg").write_bytes(b"\xff\xd8")
    (base / "coco" / "annotations").mkdir()
    for name in ("instances_train2017", "instances_val2017", "image_info_test-dev2017"):
        (base / "coco" / "annotations" / f"{name}.json").write_text("{}")
    return {"EIOU_VOC_ROOT": str(base / "voc"), "EIOU_COCO_ROOT": str(base / "coco")}


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
    return make_layouts(tmp_path_factory.mktemp("roots"))


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


def test_config_overrides_as_typed(tmp_path):
    """`--config` values as people type them: booleans, numbers, YAML mappings."""
    result = snakemake(
        "-n", "--quiet", "rules", "--configfile", "config/paper.yaml",
        "--config", "check_data_roots=false", "toy={enabled: false}", "seeds=2",
        env={"EIOU_VOC_ROOT": str(tmp_path / "absent"), "EIOU_COCO_ROOT": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    counts = job_counts(result.stdout)
    assert counts["train"] == 2 * expected_counts("paper")["train"]
    assert "toy" not in counts
    bad = snakemake("-n", "--configfile", "config/smoke.yaml", "--config", "seeds=two")
    assert bad.returncode != 0 and "config key seeds" in bad.stdout + bad.stderr


def test_seeds_override_repeats_runs():
    result = snakemake(
        "-n", "--quiet", "rules", "--configfile", "config/smoke.yaml", "--config", "seeds=3"
    )
    counts = job_counts(result.stdout)
    assert counts["train"] == 3 * expected_counts("smoke")["train"]


def test_empty_roots_fail_before_scheduling(tmp_path):
    """Roots that exist but lack the expected layout name what is missing."""
    (tmp_path / "voc" / "VOCdevkit" / "VOC2007" / "JPEGImages").mkdir(parents=True)
    (tmp_path / "coco").mkdir()
    env = {"EIOU_VOC_ROOT": str(tmp_path / "voc"), "EIOU_COCO_ROOT": str(tmp_path / "coco")}
    result = snakemake("-n", "--configfile", "config/paper.yaml", env=env)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "dataset roots missing or incomplete" in out and "Job stats" not in out
    voc2007 = tmp_path / "voc" / "VOCdevkit" / "VOC2007"
    assert f"image set {voc2007 / 'ImageSets' / 'Main' / 'trainval.txt'} does not exist" in out
    assert f"folder {voc2007 / 'JPEGImages'} is empty" in out
    assert f"folder {voc2007 / 'Annotations'} does not exist" in out
    assert "VOC2012 does not exist" in out
    coco = tmp_path / "coco"
    assert f"annotation file {coco / 'annotations' / 'instances_val2017.json'}" in out
    assert f"image folder {coco / 'test2017'} does not exist" in out


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


def jobs_of(output: str, rule: str) -> list[str]:
    """The dry-run blocks (-p) of one rule's jobs, shell command included."""
    return [
        b for b in re.split(r"\n(?=\[|rule |localrule )", output) if b.startswith(f"rule {rule}:")
    ]


def test_gpu_jobs_resources_and_launcher(data_roots):
    """Training asks for its GPUs on one node (the launcher is in `eiou train`, from the
    run's train.processes, not from the scheduler's resource); predict runs one process;
    CPU jobs ask for no GPU; nothing a retry needs is a declared output."""
    result = snakemake(
        "-n", "-p", "--configfile", "config/paper.yaml", "--until", "predict", env=data_roots
    )
    assert result.returncode == 0, result.stderr
    train, predict = jobs_of(result.stdout, "train"), jobs_of(result.stdout, "predict")
    prepare = jobs_of(result.stdout, "prepare_data")
    assert len(train) == 23 and len(predict) == 23 and len(prepare) == 3
    for block in train:
        assert re.search(r"resources: .*runtime=2880, gpu=8, nodes=1", block)
        assert "python -m eiou.cli train --config" in block and "torchrun" not in block
        assert re.search(r"output: results/runs/[^/]+/model_final\.pth\n", block)
        assert "tee -a results/logs/train/" in block  # every attempt's output is kept
    for block in predict:
        assert re.search(r"resources: .*gpu=1, nodes=1", block)
        assert "torchrun" not in block
    for block in prepare:
        assert re.search(r"resources: .*gpu=0, nodes=1", block)
    outputs = "".join(re.findall(r"output: (.*)", result.stdout))
    # the checkpoints and the training log are not outputs: Snakemake never deletes them
    assert "checkpoints" not in outputs and "train_log.jsonl" not in outputs
    runs = {
        yaml.safe_load(p)["name"]
        for p in re.findall(r"printf '%s' '(.*?)' > results/runs/", result.stdout, re.S)
    }
    assert len(runs) == 23


def test_runtime_requests():
    from eiou.experiments import runtime_request

    assert [runtime_request(2880, a, 4000, resumable=True) for a in (1, 2, 3)] == [2880] * 3
    assert [runtime_request(60, a, 200, resumable=False) for a in (1, 2, 3, 4)] == [
        60, 120, 200, 200,
    ]  # fmt: skip
    assert runtime_request(2880, 1, 1440, resumable=True) == 1440


def test_gpu_request_must_match_processes(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    config["schedules"]["voc_20k"]["processes"] = 4
    config["check_data_roots"] = False
    path = tmp_path / "paper4.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path))
    assert result.returncode != 0
    assert "resources.train.gpu: 8 GPUs per training job" in result.stdout + result.stderr
    assert "schedules.voc_20k.processes is 4" in result.stdout + result.stderr


def test_parsing_imports_no_torch(tmp_path):
    """The driver and every job parse the Snakefile: neither torch nor pycocotools may be
    imported while parsing (stand-ins that fail on import prove it; pandas is not blocked:
    Snakemake's SLURM plugin imports it itself)."""
    blocked = tmp_path / "blocked"
    for name in ("torch", "torchvision", "pycocotools"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} imported')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(blocked)])}
    result = snakemake("-n", "--quiet", "rules", "--configfile", "config/smoke.yaml", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert job_counts(result.stdout)["train"] == expected_counts("smoke")["train"]
    help_ = subprocess.run(
        [sys.executable, "-m", "eiou.cli", "--help"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert help_.returncode == 0 and "train" in help_.stdout, help_.stderr


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
            for key in ("threads:", "mem_mb=", "runtime=", "gpu=", "nodes=1,"):
                assert key in body, (name, key)
    for name in ("train", "predict", "evaluate"):
        body = next(b for b in rules if b.startswith(f"{name}:"))
        assert f'"results/benchmarks/{name}/{{run}}.tsv"' in body, name


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


@pytest.mark.skipif(not SNAKEFMT.exists(), reason="snakefmt not installed")
def test_snakefmt_is_clean():
    files = [ROOT / "Snakefile", ROOT / "workflow"]
    result = subprocess.run(
        [str(SNAKEFMT), "--check", *map(str, files)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_lint_runs_every_linter():
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:")[1].split("\n\n")[0]
    for tool in ("ruff check", "ruff format --check", "snakemake --lint", "snakefmt --check"):
        assert tool in lint, tool


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
            "--output",
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
