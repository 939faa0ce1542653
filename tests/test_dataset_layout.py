"""eiou.dataset_layout: the cheap plan-time check of VOC and COCO folders, against the
converters' own view of the same folders (eiou.data.voc, eiou.data.coco)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eiou.dataset_layout import COCO_SPLITS, layout_problems

VOC_SPLITS = ["voc_2007_trainval", "voc_2012_trainval", "voc_2007_test"]


def voc_devkit(root: Path, years=("2007", "2012")) -> Path:
    for year in years:
        year_dir = root / "VOCdevkit" / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (year_dir / sub).mkdir(parents=True)
        (year_dir / "Annotations" / "000001.xml").write_text("<annotation/>")
        (year_dir / "JPEGImages" / "000001.jpg").write_bytes(b"\xff\xd8")
        for imageset in ("trainval", "test"):
            (year_dir / "ImageSets" / "Main" / f"{imageset}.txt").write_text("000001\n")
    return root


def coco_root(root: Path, splits=("train2017", "val2017")) -> Path:
    (root / "annotations").mkdir(parents=True)
    for split in splits:
        annotations, images = COCO_SPLITS[split]
        (root / "annotations" / annotations).write_text("{}")
        (root / images).mkdir(exist_ok=True)
        (root / images / "1.jpg").write_bytes(b"\xff\xd8")
    return root


def test_complete_layouts_pass(tmp_path):
    assert layout_problems("voc", voc_devkit(tmp_path / "voc"), VOC_SPLITS) == []
    # the devkit folder itself as the root, as eiou.data.voc.find_devkit accepts it
    assert layout_problems("voc", tmp_path / "voc" / "VOCdevkit", VOC_SPLITS) == []
    coco = coco_root(tmp_path / "coco", ("train2017", "val2017", "test-dev2017"))
    assert layout_problems("coco", coco, ["train2017", "val2017", "test-dev2017"]) == []
    assert layout_problems("synthetic", tmp_path / "nothing", ["train"]) == []


def test_voc_problems_name_each_missing_piece(tmp_path):
    root = voc_devkit(tmp_path, years=("2007",))
    year_dir = root / "VOCdevkit" / "VOC2007"
    (year_dir / "ImageSets" / "Main" / "test.txt").write_text("")
    for path in (year_dir / "JPEGImages").iterdir():
        path.unlink()
    problems = layout_problems("voc", root, VOC_SPLITS)
    assert problems == [
        f"folder {year_dir / 'JPEGImages'} is empty",
        f"split voc_2012_trainval: folder {root / 'VOCdevkit' / 'VOC2012'} does not exist "
        "(a VOC devkit year, holding Annotations/, JPEGImages/ and ImageSets/Main/)",
        f"image set {year_dir / 'ImageSets' / 'Main' / 'test.txt'} is empty",
    ]
    # a split name that is no devkit year's: a VOC-format folder of one's own under root
    assert layout_problems("voc", root, ["2007-test"]) == [
        f"image set {root / 'ImageSets' / 'Main' / '2007-test.txt'} does not exist",
        f"folder {root / 'Annotations'} does not exist",
        f"folder {root / 'JPEGImages'} does not exist",
    ]


def test_a_voc_format_folder_of_ones_own(tmp_path):
    """root/Annotations, root/JPEGImages and root/ImageSets/Main/<any split>.txt."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "Annotations" / "SITE_029.xml").write_text("<annotation/>")
    (tmp_path / "JPEGImages" / "SITE_029.png").write_bytes(b"png")
    (tmp_path / "ImageSets" / "Main" / "trees_train.txt").write_text("SITE_029\n")
    assert layout_problems("voc", tmp_path, ["trees_train"]) == []
    assert layout_problems("voc", tmp_path, ["trees_test"]) == [
        f"image set {tmp_path / 'ImageSets' / 'Main' / 'trees_test.txt'} does not exist"
    ]


def test_coco_problems_name_each_missing_piece(tmp_path):
    root = coco_root(tmp_path, ("train2017",))
    (root / "annotations" / "instances_train2017.json").write_text("")
    problems = layout_problems("coco", root, ["train2017", "val2017", "test2018"])
    assert problems == [
        f"annotation file {root / 'annotations' / 'instances_train2017.json'} is empty",
        f"annotation file {root / 'annotations' / 'instances_val2017.json'} does not exist",
        f"image folder {root / 'val2017'} does not exist",
        "unknown COCO split 'test2018'; known: " + ", ".join(COCO_SPLITS),
    ]


@pytest.mark.parametrize("kind", ["voc", "coco"])
def test_the_converters_agree(tmp_path, kind):
    """Where the check finds the layout complete, the converter finds its inputs (it then
    fails on the placeholder contents, not on a missing file); where the check reports a
    missing folder, so does the converter."""
    from eiou.data import DatasetError, coco, voc

    if kind == "voc":
        root = voc_devkit(tmp_path / "voc", years=("2007",))
        assert voc.find_devkit(root) == root / "VOCdevkit"
        assert layout_problems("voc", root, ["voc_2012_trainval"])
        with pytest.raises(DatasetError, match="VOC2012 folder not found"):
            voc.convert_voc(root, tmp_path / "out", ["voc_2012_trainval"], progress=False)
    else:
        root = coco_root(tmp_path / "coco", ("train2017",))
        assert coco.coco_split_paths(root, "train2017") == (
            root / "annotations" / "instances_train2017.json",
            root / "train2017",
        )
        assert layout_problems("coco", root, ["val2017"])
        with pytest.raises(DatasetError, match="COCO layout incomplete"):
            coco.prepare_coco(root, tmp_path / "out", ["val2017"])


def test_imports_nothing_heavy():
    code = (
        "import sys, eiou.dataset_layout, eiou.experiments, eiou.outputs\n"
        "heavy = {'torch', 'pandas', 'pycocotools', 'PIL'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
