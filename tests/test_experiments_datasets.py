"""Datasets of one's own in a preset: forms, relative paths, run specs and preparation."""

from __future__ import annotations

import copy
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from custom_datasets import make_custom_coco, make_custom_voc

from eiou import experiments
from eiou.cli import main
from eiou.config import load_run_config
from eiou.data import build_dataset, coco, voc
from eiou.experiments import ConfigError, build_plan, validate_config

ROOT = Path(__file__).resolve().parent.parent


def preset(**datasets) -> dict:
    """The custom template with ``datasets`` and its table row pointed at them."""
    config = yaml.safe_load((ROOT / "config" / "custom.yaml").read_text())
    config["datasets"] = datasets
    config["tables"]["losses"]["rows"][0]["dataset"] = sorted(datasets)
    return config


COCO_RELATIVE = {
    "kind": "coco",
    "train": {"annotations": "../data/annotations/train.json", "images": "../data/images"},
    "test": {"annotations": "../data/annotations/test.json", "images": "../data/images"},
    "min_size": 64,
    "max_size": 64,
}


def test_template_is_a_normal_preset_of_baselines_and_the_full_method():
    config = experiments.load_config(ROOT / "config" / "custom.yaml")
    plan = build_plan(config, check_roots=False)
    assert config["seeds"] == 3 and config["toy"]["enabled"] is False
    (table,) = plan["tables"]
    assert [r["variant"] for r in table["rows"]] == ["smooth_l1", "giou", "ciou", "ours"]
    assert {r["detector"] for r in table["rows"]} == {"faster_rcnn"}
    assert table["paper_table"] is None and all(r["paper"] is None for r in table["rows"])
    assert len(plan["runs"]) == 4 * 3
    # its placeholder paths resolve against config/ and do not exist: nothing is scheduled
    with pytest.raises(ConfigError, match=r"datasets\.mine\.train\.annotations") as info:
        build_plan(config)
    assert str(ROOT / "data" / "mine" / "annotations" / "train.json") in str(info.value)


def test_relative_paths_resolve_against_the_preset_folder(tmp_path, monkeypatch):
    make_custom_coco(tmp_path / "data")
    path = tmp_path / "config" / "trees.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(preset(trees=COCO_RELATIVE)))
    monkeypatch.chdir(tmp_path / "data")  # anywhere else
    plan = build_plan(experiments.load_config(path))
    spec = next(iter(plan["runs"].values()))
    assert spec["data"]["splits"] == {
        split: {
            "annotations": str(tmp_path / "data" / "annotations" / f"{split}.json"),
            "images": str(tmp_path / "data" / "images"),
        }
        for split in ("train", "test")
    }
    assert (spec["data"]["train_splits"], spec["data"]["test_split"]) == (["train"], "test")
    assert "root" not in spec["data"] and "val_split" not in spec["data"]
    assert load_run_config(spec, deep=False)["data"] == spec["data"]  # a valid run config
    # Snakemake's way: the folder of the last --configfile
    folder = experiments.preset_folder([tmp_path / "x.yaml", path], "unused")
    assert folder == path.parent
    assert experiments.preset_folder([], tmp_path) == tmp_path


def test_environment_variables_and_missing_files(tmp_path, monkeypatch):
    make_custom_coco(tmp_path / "data")
    entry = copy.deepcopy(COCO_RELATIVE)
    entry["train"] = {"annotations": "${TREES}/annotations/train.json", "images": "${TREES}/images"}
    entry["test"]["annotations"] = "../data/annotations/nope.json"
    entry["val"] = {"annotations": "${TREES}/annotations/test.json", "images": "${TREES}/images"}
    monkeypatch.setenv("TREES", str(tmp_path / "data"))
    config = validate_config(preset(trees=entry), base_dir=tmp_path / "config")
    with pytest.raises(ConfigError, match="nothing was scheduled") as info:
        build_plan(config)
    message = str(info.value)
    assert "datasets.trees.test.annotations" in message
    assert str(tmp_path / "data" / "annotations" / "nope.json") in message
    assert "datasets.trees.train" not in message  # the environment's paths exist
    plan = build_plan(config, check_roots=False)
    data = next(iter(plan["runs"].values()))["data"]
    assert data["splits"]["train"]["images"] == str(tmp_path / "data" / "images")
    assert data["val_split"] == "val"
    monkeypatch.delenv("TREES")
    with pytest.raises(ConfigError, match="TREES is not set"):
        build_plan(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "voc"}, "datasets.trees.train: .* kind coco"),
        ({"train_splits": ["train"]}, "datasets.trees.train_splits: not with train/test"),
        ({"classes": "auto"}, "datasets.trees.classes: only VOC-format data"),
        ({"test": None}, "'test' is a required property"),
        ({"train": {"annotations": "a.json"}}, "'images' is a required property"),
    ],
)
def test_dataset_forms_are_checked(change, message):
    entry = {**COCO_RELATIVE, **change}
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        validate_config(preset(trees=entry))


def test_location_does_not_change_the_run_ids(tmp_path):
    ids = []
    for where in ("a", "b"):
        config = validate_config(preset(trees=COCO_RELATIVE), base_dir=tmp_path / where / "cfg")
        ids.append(sorted(build_plan(config, check_roots=False)["runs"]))
    other = validate_config(preset(other=COCO_RELATIVE), base_dir=tmp_path)
    assert ids[0] == ids[1]
    assert not set(ids[0]) & set(build_plan(other, check_roots=False)["runs"])


def _prepare_then_build(entry: dict, spec_data: dict, monkeypatch) -> None:
    """`eiou data` with the workflow's arguments, then the run's data section reads what it
    wrote without converting or normalising again."""
    assert main(["data", *experiments.data_arguments(entry)]) == 0

    def boom(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(voc, "parse_annotation", boom)
    monkeypatch.setattr(coco, "normalize_coco", boom)
    for split, train in (("train", True), ("test", False)):
        assert len(build_dataset(spec_data, split, train=train)) > 0


def test_workflow_preparation_is_what_training_reads(tmp_path, monkeypatch):
    make_custom_coco(tmp_path / "data")
    make_custom_voc(tmp_path / "voc")
    voc_entry = {"kind": "voc", "root": "../voc", "classes": "auto", "train_splits": ["train"],
                 "test_split": "test", "options": {"use_difficult": True}}  # fmt: skip
    config = validate_config(
        preset(trees=COCO_RELATIVE, trees_voc=voc_entry), base_dir=tmp_path / "config"
    )
    plan = build_plan(config)
    monkeypatch.chdir(tmp_path)  # results/data/<name> is relative to the working directory
    for name in ("trees", "trees_voc"):
        spec = next(s for s in plan["runs"].values() if s["data"]["name"] == name)
        if name == "trees_voc":
            assert spec["data"]["classes"] == "auto" and spec["data"]["use_difficult"] is True
        with monkeypatch.context() as patch:
            _prepare_then_build(plan["datasets"][name], spec["data"], patch)
        assert (tmp_path / "results" / "data" / name / "test.json").is_file()


def test_readme_dataset_snippet_plans_into_the_template(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- snippet: own-dataset\b.*?-->\s*```yaml\n(.*?)```", readme, re.S)
    assert match, "README has no own-dataset snippet"
    edit = yaml.safe_load(textwrap.dedent(match.group(1)))
    config = yaml.safe_load((ROOT / "config" / "custom.yaml").read_text())
    config["datasets"] = edit["datasets"]
    plan = build_plan(validate_config(config, base_dir=tmp_path / "config"), check_roots=False)
    assert len(plan["runs"]) == 12
    data = next(iter(plan["runs"].values()))["data"]
    assert data["splits"]["test"] == {
        "annotations": str(tmp_path / "data" / "trees" / "test.json"),
        "images": str(tmp_path / "data" / "trees" / "images"),
    }


def test_moving_the_files_keeps_checkpoints_resumable(tmp_path):
    from eiou.train import config_differences

    config = validate_config(preset(trees=COCO_RELATIVE), base_dir=tmp_path / "a" / "cfg")
    moved = validate_config(preset(trees=COCO_RELATIVE), base_dir=tmp_path / "b" / "cfg")
    here, there = (
        next(iter(build_plan(c, check_roots=False)["runs"].values())) for c in (config, moved)
    )
    assert here["data"]["splits"] != there["data"]["splits"]
    assert config_differences(here, there) == []
    there["data"]["train_splits"] = ["test"]
    assert config_differences(here, there) == ["data.train_splits"]
