"""PASCAL VOC devkit -> COCO JSON on a fake devkit the tests write (real tiny JPEGs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from eiou import evaluate
from eiou.cli import main
from eiou.data import DatasetError, build_dataset, voc


def _xml(filename: str, objects: list[tuple], size: tuple[int, int] | None) -> str:
    objs = "".join(
        f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox>"
        f"<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax>"
        f"</bndbox></object>"
        for name, b, diff in objects
    )
    size_xml = (
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        if size
        else ""
    )
    return f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def _image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path)


def make_devkit(root: Path) -> Path:
    """VOC2007 (trainval: 000005, 000007; test: 000001) and VOC2012 (trainval: 2008_000002)."""
    devkit = root / "VOCdevkit"
    entries = {
        ("2007", "000005"): ("000005.jpg", [("dog", (1, 1, 10, 20), False),
                                            ("cat", (5, 6, 40, 30), True)], (48, 32), ".jpg"),
        # annotation says .jpg, the file on disk is .png; no <size>; float coordinates
        ("2007", "000007"): ("000007.jpg", [("person", (2.5, 3, 20.5, 31), False)], None, ".png"),
        ("2007", "000001"): ("000001.jpg", [("car", (10, 10, 30, 20), False)], (40, 40), ".jpg"),
        ("2012", "2008_000002"): ("2008_000002.jpg", [("dog", (1, 1, 64, 48), False)],
                                  (64, 48), ".jpg"),
    }  # fmt: skip
    sizes = {("2007", "000007"): (36, 40)}
    for (year, name), (filename, objects, size, ext) in entries.items():
        base = devkit / f"VOC{year}"
        (base / "Annotations").mkdir(parents=True, exist_ok=True)
        (base / "Annotations" / f"{name}.xml").write_text(_xml(filename, objects, size))
        _image(base / "JPEGImages" / f"{name}{ext}", size or sizes[(year, name)])
    for year, imageset, names in (("2007", "trainval", ["000005", "000007"]),
                                  ("2007", "test", ["000001"]),
                                  ("2012", "trainval", ["2008_000002"])):  # fmt: skip
        path = devkit / f"VOC{year}" / "ImageSets" / "Main" / f"{imageset}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(names) + "\n")
    return devkit


@pytest.fixture
def devkit(tmp_path: Path) -> Path:
    return make_devkit(tmp_path / "raw")


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_conversion_coordinates_sizes_and_files(devkit: Path, tmp_path: Path) -> None:
    paths = voc.convert_voc(devkit.parent, tmp_path / "ann", ["voc_2007_trainval"],
                            progress=False)  # fmt: skip
    data = _load(paths["voc_2007_trainval"])
    images = {im["file_name"]: im for im in data["images"]}
    assert set(images) == {"VOC2007/JPEGImages/000005.jpg", "VOC2007/JPEGImages/000007.png"}
    assert (
        images["VOC2007/JPEGImages/000007.png"]["width"],
        images["VOC2007/JPEGImages/000007.png"]["height"],
    ) == (36, 40)  # read from the file
    anns = {(a["image_id"], a["category_id"]): a for a in data["annotations"]}
    dog, cat, person = (voc.VOC_CLASSES.index(c) + 1 for c in ("dog", "cat", "person"))
    id5, id7 = 2007 * 10**10 + 5, 2007 * 10**10 + 7
    # 1-based inclusive (1, 1)..(10, 20): pixels 0..9 x 0..19 -> [0, 0, 10, 20]
    assert anns[(id5, dog)]["bbox"] == [0, 0, 10, 20]
    assert anns[(id5, dog)]["area"] == 200
    assert anns[(id5, cat)]["bbox"] == [4, 5, 36, 25] and anns[(id5, cat)]["iscrowd"] == 1
    assert anns[(id7, person)]["bbox"] == pytest.approx([1.5, 2, 19, 29])
    assert [c["name"] for c in data["categories"]] == list(voc.VOC_CLASSES)


def test_difficult_objects_are_ignored_unless_asked(devkit: Path, tmp_path: Path) -> None:
    cfg = {"kind": "voc", "root": str(devkit), "annotations": str(tmp_path / "ann")}
    ds = build_dataset(cfg, "voc_2007_trainval", train=False)
    id5 = 2007 * 10**10 + 5
    index = ds.ids.index(id5)
    _, target = ds[index]
    assert target["labels"].tolist() == [voc.VOC_CLASSES.index("dog") + 1]  # no difficult cat
    # evaluation: a detection on the difficult object is not a false positive, and not
    # detecting it is not a miss
    gt = ds.coco
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 0.9} for a in gt.dataset["annotations"] if not a["iscrowd"]]  # fmt: skip
    on_difficult = [{"image_id": id5, "category_id": voc.VOC_CLASSES.index("cat") + 1,
                     "bbox": [4, 5, 36, 25], "score": 0.99}]  # fmt: skip
    assert evaluate.evaluate_predictions(gt, perfect)["AP"] == pytest.approx(1.0)
    assert evaluate.evaluate_predictions(gt, perfect + on_difficult)["AP"] == pytest.approx(1.0)
    # use_difficult: an ordinary object, reconverted (the cache key includes the option)
    ds2 = build_dataset({**cfg, "use_difficult": True}, "voc_2007_trainval", train=False)
    _, target2 = ds2[ds2.ids.index(id5)]
    assert sorted(target2["labels"].tolist()) == sorted(
        [voc.VOC_CLASSES.index("dog") + 1, voc.VOC_CLASSES.index("cat") + 1]
    )
    assert evaluate.evaluate_predictions(ds2.coco, perfect)["AP"] < 1.0


def test_train_split_merges_voc07_and_voc12(devkit: Path, tmp_path: Path) -> None:
    cfg = {"kind": "voc", "root": str(devkit.parent), "annotations": str(tmp_path / "ann"),
           "train_splits": ["voc_2007_trainval", "voc_2012_trainval"],
           "test_split": "voc_2007_test"}  # fmt: skip
    train = build_dataset(cfg, "train", train=True)
    test = build_dataset(cfg, "test", train=False)
    assert sorted(train.ids) == [2007 * 10**10 + 5, 2007 * 10**10 + 7, 2012 * 10**10 + 2008000002]
    assert len(train.coco.getImgIds()) == 3 and test.ids == [2007 * 10**10 + 1]
    image, target = train[train.ids.index(2012 * 10**10 + 2008000002)]
    assert image.shape == (3, 48, 64)
    assert target["boxes"].tolist() == [[0.0, 0.0, 64.0, 48.0]]
    assert train.class_names == list(voc.VOC_CLASSES)


def test_conversion_is_cached(devkit: Path, tmp_path: Path, monkeypatch) -> None:
    voc.convert_voc(devkit, tmp_path, ["voc_2007_test"], progress=False)
    before = (tmp_path / "voc_2007_test.json").read_bytes()

    def boom(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(voc, "parse_annotation", boom)
    voc.convert_voc(devkit, tmp_path, ["voc_2007_test"], progress=False)
    assert (tmp_path / "voc_2007_test.json").read_bytes() == before
    with pytest.raises(AssertionError):
        voc.convert_voc(devkit, tmp_path, ["voc_2007_test"], force=True, progress=False)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "VOC2007/ImageSets/Main/test.txt").unlink(), "test.txt"),
        (lambda d: (d / "VOC2007/Annotations/000001.xml").unlink(), "000001.xml"),
        (lambda d: (d / "VOC2007/Annotations/000001.xml").write_text("<annotation><obj"),
         "000001.xml"),
        (lambda d: (d / "VOC2007/Annotations/000001.xml").write_text(
            _xml("000001.jpg", [("unicorn", (1, 1, 5, 5), False)], (40, 40))), "unicorn"),
        (lambda d: (d / "VOC2007/Annotations/000001.xml").write_text(
            _xml("000001.jpg", [("car", (9, 1, 5, 5), False)], (40, 40))), "inverted"),
        (lambda d: (d / "VOC2007/JPEGImages/000001.jpg").unlink(), "000001"),
    ],
)  # fmt: skip
def test_clear_errors_name_the_file(devkit: Path, tmp_path: Path, damage, message: str) -> None:
    damage(devkit)
    with pytest.raises(DatasetError, match=message) as info:
        voc.convert_voc(devkit, tmp_path, ["voc_2007_test"], progress=False)
    assert "VOC2007" in str(info.value) or message == "unicorn"
    assert not (tmp_path / "voc_2007_test.json").exists()


def test_missing_devkit_and_bad_split_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no VOC devkit"):
        voc.convert_voc(tmp_path / "nowhere", tmp_path, ["voc_2007_test"], progress=False)
    make_devkit(tmp_path / "raw")
    with pytest.raises(DatasetError, match="VOC2010"):
        voc.convert_voc(tmp_path / "raw", tmp_path, ["voc_2010_test"], progress=False)
    with pytest.raises(DatasetError, match="voc_<year>_<imageset>"):
        voc.convert_voc(tmp_path / "raw", tmp_path, ["trainval"], progress=False)


def test_cli_voc(devkit: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    rc = main(
        [
            "data",
            "voc",
            "--root",
            str(devkit),
            "--output-dir",
            str(out),
            "--splits",
            "voc_2007_trainval",
            "voc_2007_test",
            "--no-use-difficult",
        ]
    )
    assert rc == 0
    report = _load(out / "voc_2007_trainval.validation.json")
    assert report["images"] == 2 and report["crowd_annotations"] == 1
    assert _load(out / "voc_2007_test.json")["images"][0]["id"] == 2007 * 10**10 + 1
    assert main(["data", "voc", "--root", str(tmp_path / "none"), "--output-dir", str(out)]) == 2
