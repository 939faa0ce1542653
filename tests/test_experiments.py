"""Config validation, matrix expansion, deduplication, hashing and seeds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from eiou import experiments
from eiou.config import load_run_config
from eiou.experiments import ConfigError, build_plan, validate_config

ROOT = Path(__file__).resolve().parent.parent


def minimal(**tables) -> dict:
    """A small valid config; ``tables`` replace the default one."""
    return {
        "preset": "unit",
        "datasets": {
            "shapes": {"kind": "synthetic", "train_splits": ["train"], "test_split": "test"}
        },
        "schedules": {"short": {"max_iter": 10, "base_lr": 0.01, "batch_size": 2}},
        "tables": tables
        or {
            "t1": {
                "title": "unit",
                "rows": [
                    {
                        "variant": ["smooth_l1", "giou"],
                        "detector": ["faster_rcnn", "retinanet"],
                        "backbone": "tiny",
                        "dataset": "shapes",
                        "schedule": "short",
                    }
                ],
            }
        },
    }


def plan_of(config: dict, **kwargs) -> dict:
    return build_plan(validate_config(config), **kwargs)


# --------------------------------------------------------------------------- validation
def test_defaults_are_filled_in():
    config = validate_config(minimal())
    assert config["seeds"] == 1
    assert config["paper_setting"] is False
    assert config["schedules"]["short"]["momentum"] == 0.9
    assert config["schedules"]["short"]["steps"] == []
    assert config["resources"]["train"] == {"threads": 1, "mem_mb": 2000, "runtime": 30, "gpu": 0}
    assert config["tables"]["t1"]["baseline"] == "smooth_l1"
    # the defaults are copies: filling one config does not touch another
    config["resources"]["train"]["gpu"] = 4
    assert validate_config(minimal())["resources"]["train"]["gpu"] == 0


@pytest.mark.parametrize(
    ("path", "value", "key", "allowed"),
    [
        (
            ("tables", "t1", "rows", 0, "detector"),
            "fasterrcnn",
            "tables.t1.rows[0].detector",
            "faster_rcnn",
        ),
        (
            ("tables", "t1", "rows", 0, "backbone"),
            "resnet18",
            "tables.t1.rows[0].backbone",
            "resnext101_64x4d",
        ),
        (("schedules", "short", "max_iter"), 0, "schedules.short.max_iter", "minimum of 1"),
        (("datasets", "shapes", "kind"), "kitti", "datasets.shapes.kind", "synthetic"),
        (("seeds",), "two", "seeds", "integer"),
    ],
)
def test_schema_errors_name_the_key_and_what_is_allowed(path, value, key, allowed):
    config = minimal()
    target = config
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert f"config key {key}" in message
    assert allowed in message


def test_unknown_top_level_key_lists_the_allowed_keys():
    config = minimal()
    config["seed"] = 3
    with pytest.raises(ConfigError, match=r"config key seed: unknown key; allowed: .*\bseeds\b"):
        validate_config(config)


def test_bad_loss_name_is_explained():
    config = minimal()
    config["tables"]["t1"]["rows"][0]["variant"] = [{"box_loss": {"name": "not a loss"}}]
    with pytest.raises(ConfigError, match=r"variant\[0\]\.box_loss\.name.*registered loss"):
        validate_config(config)


def test_unknown_variant_dataset_schedule_are_reported():
    config = minimal()
    row = config["tables"]["t1"]["rows"][0]
    row["variant"] = ["smooth_l1", "eiuo"]
    row["dataset"] = "voc"
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert "tables.t1.rows[0].variant: 'eiou' is not" not in message
    assert "'eiuo' is not a variant" in message and "eiou_ct_sot" in message
    assert "tables.t1.rows[0].dataset: 'voc' is not defined under datasets" in message


def test_every_preset_validates():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        config = experiments.load_config(path)
        assert config["preset"] == path.stem
        assert config["paper_setting"] is (path.stem == "paper")


def test_study_preset_gives_every_variant_the_same_budget():
    """config/study.yaml: Tables I and II analogues, 3 seeds, two learning rates per variant
    chosen on a held-out validation split; 13 configurations x 2 candidates x 3 seeds."""
    plan = build_plan(experiments.load_config(ROOT / "config" / "study.yaml"))
    assert len(plan["runs"]) == 13 * 2 * 3
    for table in plan["tables"]:
        assert table["tuning"] and table["seeds"] == 3
        assert {len(r["candidates"]) for r in table["rows"]} == {2}
    assert all(s["data"]["holdout"]["fraction"] == 0.2 for s in plan["runs"].values())
    assert {s["train"]["base_lr"] for s in plan["runs"].values()} == {0.01, 0.02}


# --------------------------------------------------------------------------- data roots
def voc_config(root: str) -> dict:
    config = minimal()
    config["datasets"]["voc"] = {
        "kind": "voc",
        "root": root,
        "train_splits": ["voc_2007_trainval"],
        "test_split": "voc_2007_test",
    }
    config["tables"]["t1"]["rows"][0]["dataset"] = ["shapes", "voc"]
    return config


def test_missing_root_fails_before_planning(tmp_path):
    with pytest.raises(
        ConfigError, match=r"datasets\.voc\.root: folder .*nowhere.* does not exist"
    ):
        plan_of(voc_config(str(tmp_path / "nowhere")))


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("EIOU_TEST_VOC", raising=False)
    with pytest.raises(ConfigError, match="environment variable EIOU_TEST_VOC is not set"):
        plan_of(voc_config("${EIOU_TEST_VOC}"))
    monkeypatch.setenv("EIOU_TEST_VOC", str(tmp_path))
    year = tmp_path / "VOCdevkit" / "VOC2007"  # the layout the plan checks
    for sub, name in (("Annotations", "1.xml"), ("JPEGImages", "1.jpg"), ("ImageSets/Main", "")):
        (year / sub).mkdir(parents=True)
        (year / sub / (name or "trainval.txt")).write_text("1\n")
    (year / "ImageSets" / "Main" / "test.txt").write_text("1\n")
    plan = plan_of(voc_config("${EIOU_TEST_VOC}/"))
    assert plan["datasets"]["voc"]["root"] == f"{tmp_path}/"
    # check_roots=False lists the runs without the data
    monkeypatch.delenv("EIOU_TEST_VOC")
    assert len(plan_of(voc_config("${EIOU_TEST_VOC}"), check_roots=False)["runs"]) == 8


def test_unused_dataset_roots_are_not_checked():
    config = voc_config("/does/not/exist")
    config["tables"]["t1"]["rows"][0]["dataset"] = "shapes"
    assert len(plan_of(config)["runs"]) == 4


# --------------------------------------------------------------------------- expansion
def test_matrix_expansion_and_seeds():
    config = minimal()
    config["seeds"] = 3
    plan = plan_of(config)
    (table,) = plan["tables"]
    assert [(r["variant"], r["detector"]) for r in table["rows"]] == [
        ("smooth_l1", "faster_rcnn"),
        ("smooth_l1", "retinanet"),
        ("giou", "faster_rcnn"),
        ("giou", "retinanet"),
    ]
    assert all(len(r["run_ids"]) == 3 for r in table["rows"])
    assert len(plan["runs"]) == 12
    seeds = sorted(plan["runs"][rid]["seed"] for rid in table["rows"][0]["run_ids"])
    assert seeds == [0, 1, 2]


def test_identical_runs_across_tables_are_trained_once():
    rows = minimal()["tables"]["t1"]["rows"]
    second = [{**rows[0], "variant": ["giou", "ciou"]}]
    config = minimal(t1={"title": "a", "rows": rows}, t2={"title": "b", "rows": second, "seeds": 2})
    plan = plan_of(config)
    ids_t1 = {rid for r in plan["tables"][0]["rows"] for rid in r["run_ids"]}
    ids_t2 = {rid for r in plan["tables"][1]["rows"] for rid in r["run_ids"]}
    # t1: 4 runs; t2: giou/ciou x 2 detectors x 2 seeds = 8 runs, of which giou seed 0 is shared
    assert len(ids_t1) == 4 and len(ids_t2) == 8
    assert len(ids_t1 & ids_t2) == 2
    assert len(plan["runs"]) == 10


def test_ours_and_table1_row8_are_the_same_run():
    base = minimal()["tables"]["t1"]["rows"][0]
    config = minimal(
        t1={"title": "I", "rows": [{**base, "variant": "eiou_ct_sot_iou_head"}]},
        t2={"title": "II", "rows": [{**base, "variant": "ours"}]},
    )
    plan = plan_of(config)
    assert plan["tables"][0]["rows"][0]["run_ids"] == plan["tables"][1]["rows"][0]["run_ids"]
    assert plan["tables"][1]["rows"][0]["label"].startswith("Ours")


def test_new_loss_by_dotted_path_is_one_edit():
    config = minimal()
    config["tables"]["t1"]["rows"][0]["variant"].append(
        {"label": "Alpha-IoU", "box_loss": {"name": "my_pkg.losses.alpha_iou", "power": 3}}
    )
    plan = plan_of(config)
    new = [r for r in plan["tables"][0]["rows"] if r["label"] == "Alpha-IoU"]
    assert len(new) == 2 and new[0]["variant"] == "alpha_iou"
    spec = plan["runs"][new[0]["run_ids"][0]]
    assert spec["model"]["box_loss"] == {
        "name": "my_pkg.losses.alpha_iou",
        "power": 3,
        "sot": None,
        "gradient": "autograd",
        "coder": "standard",
        "coder_weights": None,
        "weight": None,
    }
    assert spec["model"]["iou_head"] == {"enabled": False, "weight": 1.0, "negatives": False}
    assert spec["model"]["scoring"]["method"] == "cls"


def test_schema_defaults_never_override_a_losss_own_default():
    """An inline {name: smooth_eiou} without power trains Smooth-EIoU (power 2), not EIoU."""
    from eiou.engines.torchvision.box_regression import build_box_regression

    config = minimal()
    config["tables"]["t1"]["rows"][0]["variant"] = [{"box_loss": {"name": "smooth_eiou"}}]
    spec = next(iter(plan_of(config)["runs"].values()))
    assert spec["model"]["box_loss"]["power"] is None
    for stage in ("faster_rcnn", "retinanet"):
        assert build_box_regression(spec["model"]["box_loss"], stage).box_loss.power == 2.0


def test_run_spec_contents_follow_the_contract():
    plan = plan_of(minimal())
    spec = next(iter(plan["runs"].values()))
    # a run spec IS a run config: the same layout, every default filled in, loadable as is
    assert set(spec) == {"name", "spec_version", "seed", "data", "model", "train", "predict"}
    assert load_run_config(spec) == spec
    assert spec["train"] == {**load_run_config({})["train"], **minimal()["schedules"]["short"]}
    assert spec["data"]["kind"] == "synthetic" and spec["data"]["root"] == "results/data/shapes"
    assert spec["model"]["detector"] in ("faster_rcnn", "retinanet")


def test_paper_variants_match_table_one():
    v = experiments.BUILTIN_VARIANTS
    assert v["iou"]["box_loss"]["name"] == "iou"
    assert v["eiou"]["box_loss"]["power"] == 1 and not v["eiou"]["box_loss"].get("sot")
    assert v["eiou_ct"]["box_loss"]["power"] == 2
    assert v["eiou_ct_sot"]["box_loss"]["sot"] and not v["eiou_ct_sot"]["iou_head"]["enabled"]
    assert v["eiou_ct_sot_iou_head"]["iou_head"]["enabled"]
    assert v["smooth_l1_iou_head"]["box_loss"]["name"] == "smooth_l1"
    assert v["smooth_l1_iou_head"]["iou_head"]["enabled"]


# --------------------------------------------------------------------------- hashing
#: The id scheme, written down. A run's id names its folder ``results/runs/<id>/``: when the
#: ids change, every finished run of every preset is orphaned and retrained. So a change
#: must be deliberate. If the run-spec layout changed on purpose, bump
#: ``experiments.SPEC_VERSION`` and paste the new values printed by the failing test here
#: (``spec_hash`` of a fixed mapping pins the hashing itself, canonical JSON + SHA-256 without
#: the dataset root, and does not depend on the layout).
PINNED_IDS = {
    "spec_version": 3,
    "spec_hash": "7a5b8acabb5e6cf3ba94793f862cb95a870bddf133831642149870f70f2f9b7b",
    "run_ids": [
        "shapes-faster_rcnn-tiny-giou-s0-9f7195638d",
        "shapes-faster_rcnn-tiny-smooth_l1-s0-85532b61d4",
        "shapes-retinanet-tiny-giou-s0-37da8c239f",
        "shapes-retinanet-tiny-smooth_l1-s0-acdb85200c",
    ],
}


def test_id_scheme_is_pinned():
    fixed = {"a": 1, "b": [1, 2], "data": {"name": "x", "root": "/anywhere"}}
    now = {
        "spec_version": experiments.SPEC_VERSION,
        "spec_hash": experiments.spec_hash(fixed),
        "run_ids": sorted(plan_of(minimal())["runs"]),
    }
    assert now == PINNED_IDS, f"the id scheme changed; if on purpose, pin: {now!r}"


def test_hash_is_stable_and_content_derived(tmp_path, monkeypatch):
    spec = next(iter(plan_of(minimal())["runs"].values()))
    # equal content gives an equal hash, whatever the key order and the dataset root
    fixed = {"a": 1, "b": [1, 2], "data": {"name": "x", "root": "/anywhere"}}
    assert experiments.spec_hash(fixed) == experiments.spec_hash(
        {"data": {"root": "/elsewhere", "name": "x"}, "b": [1, 2], "a": 1}
    )
    assert experiments.spec_hash(fixed) != experiments.spec_hash({**fixed, "a": 2})
    # the id is recomputed from the content
    assert experiments.run_id(spec) == spec["name"]
    changed = copy.deepcopy(spec)
    changed["seed"] += 1
    assert experiments.run_id(changed) != spec["name"]
    changed = copy.deepcopy(spec)
    changed["model"]["box_loss"]["gradient"] = "paper"
    assert experiments.run_id(changed) != spec["name"]
    # the dataset root is machine-specific and does not change the id
    monkeypatch.setenv("EIOU_TEST_ROOT_A", str(tmp_path))
    (tmp_path / "b").mkdir()
    a = plan_of(voc_config("${EIOU_TEST_ROOT_A}"), check_roots=False)
    b = plan_of(voc_config(str(tmp_path / "b")), check_roots=False)
    assert set(a["runs"]) == set(b["runs"])


def test_hash_independent_of_key_order_in_the_preset():
    config = minimal()
    reordered = yaml.safe_load(yaml.safe_dump(config, sort_keys=True))
    reordered["schedules"]["short"] = dict(reversed(list(config["schedules"]["short"].items())))
    assert set(plan_of(config)["runs"]) == set(plan_of(reordered)["runs"])


def test_run_spec_roundtrip(tmp_path):
    spec = next(iter(plan_of(minimal())["runs"].values()))
    path = tmp_path / "r" / "run.yaml"
    experiments.write_run_spec(path, spec)
    assert experiments.load_run_spec(path) == spec


# --------------------------------------------------------------------------- paper tables
def test_paper_tables_transcription():
    ref = experiments.paper_reference
    assert [r["metrics"]["AP"] for r in experiments.PAPER_TABLES["I"]] == [
        45.5,
        46.6,
        46.9,
        46.2,
        47.5,
        47.9,
        48.2,
        49.7,
    ]
    assert ref("II", "ours", "faster_rcnn", "resnet50") == {
        "AP": 49.7,
        "AP50": 73.7,
        "AP75": 54.1,
        "AP90": 33.4,
        "APs": 11.9,
        "APm": 32.8,
        "APl": 59.8,
    }
    assert ref("II", "ciou", "retinanet", "tiny")["AP75"] == 50.1
    assert ref("III", "smooth_l1", "retinanet", "resnet50")["AP90"] == 22.8
    # the paper's own cross-checks: Table III ours - baseline = 2.3 AP, 5.3 AP90
    ours, base = ref("III", "ours", "faster_rcnn", "x"), ref("III", "smooth_l1", "faster_rcnn", "x")
    assert round(ours["AP"] - base["AP"], 1) == 2.3 and round(ours["AP90"] - base["AP90"], 1) == 5.3
    # Table I row 1 and row 8 equal Table II's Faster R-CNN baseline and ours
    assert (
        ref("I", "smooth_l1", "faster_rcnn", "r")["AP"]
        == ref("II", "smooth_l1", "faster_rcnn", "r")["AP"]
    )
    assert ref("IV", "ours", "faster_rcnn", "resnext101_64x4d")["AP"] == 44.1
    assert ref("IV", "ours", "faster_rcnn", "resnet101")["APl"] == 55.4
    assert ref("I", "ciou", "faster_rcnn", "resnet50") is None
    assert ref(None, "ours", "faster_rcnn", "resnet50") is None


def test_paper_preset_follows_section_v_a():
    config = experiments.load_config(ROOT / "config" / "paper.yaml")
    s = config["schedules"]
    assert (s["voc_20k"]["max_iter"], s["voc_20k"]["steps"]) == (20000, [12000, 18000])
    assert (s["coco_90k"]["max_iter"], s["coco_90k"]["steps"]) == (90000, [60000, 80000])
    assert (s["coco_180k"]["max_iter"], s["coco_180k"]["steps"]) == (180000, [120000, 160000])
    for sched in s.values():
        assert (
            sched["base_lr"],
            sched["batch_size"],
            sched["momentum"],
            sched["weight_decay"],
        ) == (0.02, 16, 0.9, 0.0001)
    d = config["datasets"]
    assert d["voc"]["min_size"] == 500 and d["coco"]["min_size"] == 800
    assert d["voc"]["train_splits"] == ["voc_2007_trainval", "voc_2012_trainval"]
    assert d["coco_test_dev"]["has_ground_truth"] is False
    assert config["model"]["weights"] == "imagenet"
    assert {s["warmup_iters"] for s in s.values()} == {500}  # Detectron: linear over 500
    assert {round(s["warmup_factor"], 4) for s in s.values()} == {0.3333}  # from lr / 3
    assert config["resources"]["train"]["gpu"] == 8


def test_paper_preset_runs_detectron2_and_the_overlay_torchvision():
    """config/paper.yaml: the detectron2 engine with Detectron's settings; the overlay
    config/engines/torchvision.yaml (merged as Snakemake merges --configfile files) moves
    every run to torchvision with the settings torchvision allows aligned."""
    from snakemake.utils import update_config

    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    plan = build_plan(validate_config(paper), check_roots=False)
    assert {s["model"]["engine"] for s in plan["runs"].values()} == {"detectron2"}
    assert {s["model"]["retinanet_p6"] for s in plan["runs"].values()} == {"c5"}
    update_config(paper, yaml.safe_load((ROOT / "config/engines/torchvision.yaml").read_text()))
    overlaid = build_plan(validate_config(paper), check_roots=False)
    assert overlaid["preset"] == "paper_torchvision" and len(overlaid["runs"]) == len(plan["runs"])
    specs = overlaid["runs"].values()
    assert {s["model"]["engine"] for s in specs} == {"torchvision"}
    assert {s["model"]["retinanet_p6"] for s in specs} == {"c5"}
    smooth = [s for s in specs if s["model"]["box_loss"]["name"] == "smooth_l1"]
    assert smooth and all(s["model"]["box_loss"]["beta"] == 1.0 for s in smooth)
    for spec in specs:  # everything else as the paper preset
        assert spec["train"]["warmup_factor"] == pytest.approx(1 / 3)
        assert spec["train"]["num_workers"] == 4 and spec["model"]["weights"] == "imagenet"
