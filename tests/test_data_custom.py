"""Datasets of one's own: any COCO-format dataset, any VOC-format folder, odd images.

The datasets are written by ``tests/custom_datasets.py`` from generated shapes whose drawing
is recorded, so boxes are checked against the pixels, not against the loader's own output.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from custom_datasets import CLASSES, category_names, make_custom_coco, make_custom_voc
from PIL import Image, ImageOps

from eiou import evaluate
from eiou.cli import main
from eiou.data import DatasetError, build_dataset, coco, synthetic, validate_dataset, voc
from eiou.data.coco import EXIF_ORIENTATION


def _xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [float(x), float(y), float(x + w), float(y + h)]


def _tight_xyxy(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


# --------------------------------------------------------------------------- COCO format
@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("trees")
    return root, make_custom_coco(root)


def coco_cfg(root: Path, **extra) -> dict:
    splits = {
        s: {"annotations": str(root / "annotations" / f"{s}.json"), "images": str(root / "images")}
        for s in ("train", "test")
    }
    return {"kind": "coco", "splits": splits, "train_splits": ["train"], "test_split": "test",
            "horizontal_flip": False, **extra}  # fmt: skip


def test_coco_any_category_ids_names_and_images_without_boxes(trees) -> None:
    root, records = trees
    test = build_dataset(coco_cfg(root), "test", train=False)
    test_records = [r for r in records if r.split == "test"]
    assert len(test) == len(test_records)  # the image without boxes is evaluated
    assert test.class_names == category_names() == ["Bush", "Tree"]
    assert test.label_to_category_id == {1: 7, 2: 40}  # labels follow the sorted ids
    by_file = {im["file_name"]: im["id"] for im in test.coco.dataset["images"]}
    label = {cls: 1 + category_names().index(name) for cls, (name, _) in CLASSES.items()}
    for record in test_records:
        _, target = test[test.ids.index(by_file[record.file_name])]
        got = sorted(zip(target["labels"].tolist(), target["boxes"].tolist(), strict=True))
        want = sorted((label[o["class"]], _xyxy(o["bbox"])) for o in record.objects)
        assert got == want, record.name
    train = build_dataset(coco_cfg(root), "train", train=True)
    assert len(train) == sum(r.split == "train" for r in records) - 1
    assert train.stats.skipped_empty_images == 1


def test_gray_rgba_and_exif_images_load_as_rgb_in_the_stored_orientation(trees) -> None:
    root, records = trees
    ds = build_dataset(coco_cfg(root), "train", train=False)
    by_file = {im["file_name"]: im["id"] for im in ds.coco.dataset["images"]}
    kinds = {r.kind: r for r in records if r.split == "train"}
    assert {"gray", "rgba", "exif"} <= set(kinds)
    for kind, record in kinds.items():
        path = root / "images" / record.file_name
        image, target = ds[ds.ids.index(by_file[record.file_name])]
        assert image.dtype == torch.float32 and image.shape == (3, *record.size[::-1]), kind
        stored = np.asarray(Image.open(path))
        if kind == "gray":
            assert stored.ndim == 2
            expected = np.repeat(stored[..., None], 3, axis=-1)
        elif kind == "rgba":
            assert stored.shape[-1] == 4
            expected = stored[..., :3]  # alpha dropped, colours as stored
        else:
            expected = np.asarray(Image.open(path).convert("RGB"))
        got = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        assert np.array_equal(got, expected), kind
    # EXIF orientation 6: the tag is ignored, and the boxes fit the stored pixels
    record = kinds["exif"]
    with Image.open(root / "images" / record.file_name) as img:
        assert img.getexif()[EXIF_ORIENTATION] == 6
        displayed = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    image, target = ds[ds.ids.index(by_file[record.file_name])]
    pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    last = record.objects[-1]  # drawn last: every pixel of its mask has its colour
    mask = synthetic.render_shape_mask(last["shape"], record.size[0])
    assert (pixels[mask] == last["color"]).all()
    assert not (displayed[mask] == last["color"]).all()  # the displayed image would not fit
    assert _tight_xyxy(mask) in target["boxes"].tolist()


def test_prepare_fills_what_coco_tools_leave_out_and_evaluates(trees, tmp_path) -> None:
    root = trees[0]
    out = tmp_path / "prepared"
    args = ["data", "coco", "--output-dir", str(out)]
    for split in ("train", "test"):
        args += [
            "--split",
            split,
            str(root / "annotations" / f"{split}.json"),
            str(root / "images"),
        ]
    assert main(args) == 0
    raw = json.loads((root / "annotations" / "test.json").read_text())
    prepared = json.loads((out / "test.json").read_text())
    assert all("area" not in a and "iscrowd" not in a for a in raw["annotations"])
    for a in prepared["annotations"]:
        assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3]) and a["iscrowd"] == 0
    assert {"area", "iscrowd"} <= set(prepared["info"]["filled_by_eiou"])
    report = json.loads((out / "train.validation.json").read_text())
    assert report["empty_images"] == 1 and report["exif_oriented_images"] == 1
    # the prepared ground truth scores the hand-made boxes perfectly (pycocotools)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 0.9} for a in raw["annotations"]]  # fmt: skip
    assert evaluate.evaluate_predictions(out / "test.json", perfect)["AP"] == pytest.approx(1.0)
    # preparing again rewrites nothing; training reads the prepared copy
    before = (out / "test.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "test.json").stat().st_mtime_ns == before
    (out / "test.json").write_text(json.dumps({**prepared, "images": prepared["images"][:2]}))
    assert len(build_dataset(coco_cfg(root, annotations=str(out)), "test", train=False)) == 2


def test_normalize_fills_sizes_and_names_the_file_for_what_it_cannot_fill(trees) -> None:
    root = trees[0]
    source = root / "annotations" / "train.json"
    data = json.loads(source.read_text())
    first = data["images"][0]
    sized = coco.normalize_coco(
        {**data, "images": [{"id": 1, "file_name": first["file_name"]}]}, source, root / "images"
    )
    with Image.open(root / "images" / first["file_name"]) as img:
        assert (sized["images"][0]["width"], sized["images"][0]["height"]) == img.size
    broken = [
        ({**data, "images": [{"id": 1}]}, "file_name"),
        ({**data, "images": data["images"] + data["images"][:1]}, "given twice"),
        ({**data, "annotations": [{"image_id": first["id"], "category_id": 7}]}, "bbox"),
        ({**data, "annotations": [{"image_id": first["id"], "bbox": [0, 0, 1, 1]}]}, "category_id"),
        ({**data, "categories": [{"name": "Tree"}]}, "categories[0]"),
    ]
    for bad, message in broken:
        with pytest.raises(DatasetError, match=re.escape(message)) as info:
            coco.normalize_coco(bad, source)
        assert str(source) in str(info.value)


def _copy_dataset(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(root / "images", copy / "images")
    shutil.copytree(root / "annotations", copy / "annotations")
    return copy


def test_unreadable_image_is_named_before_training(trees, tmp_path, capsys) -> None:
    root, records = _copy_dataset(trees[0], tmp_path), trees[1]
    bad = root / "images" / next(r.file_name for r in records if r.split == "train" and r.objects)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(DatasetError, match="unreadable image") as info:
        validate_dataset(coco_cfg(root), "train")
    assert str(bad) in str(info.value)
    run = {"name": "trees", "data": coco_cfg(root), "model": {"min_size": 64, "max_size": 64},
           "train": {"max_iter": 2, "batch_size": 2, "device": "cpu"}}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    assert main(["data", "check", "--config", str(tmp_path / "run.yaml")]) == 2
    assert str(bad) in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["train", "--config", str(tmp_path / "run.yaml"), "--output-dir",
              str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    assert "unreadable image" in str(stop.value.code) and str(bad) in str(stop.value.code)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_sixteen_bit_and_displayed_orientation_annotations_are_errors(tmp_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    deep = np.full((24, 40), 3000, dtype=np.uint16)
    Image.fromarray(deep).save(images / "deep.png")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8
    Image.new("RGB", (40, 24), (10, 200, 30)).save(images / "phone.png", exif=exif)
    cats = [{"id": 3, "name": "Tree"}]
    for name, size, message in (("deep.png", (40, 24), "more than 8 bits"),
                                ("phone.png", (24, 40), "EXIF orientation 8")):  # fmt: skip
        data = {"images": [{"id": 1, "file_name": name, "width": size[0], "height": size[1]}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 9, 9],
                                 "area": 81, "iscrowd": 0}], "categories": cats}  # fmt: skip
        ann = tmp_path / f"{name}.json"
        ann.write_text(json.dumps(data))
        cfg = {"kind": "coco", "splits": {"train": {"annotations": str(ann),
               "images": str(images)}}, "train_splits": ["train"]}  # fmt: skip
        with pytest.raises(DatasetError, match=message) as info:
            validate_dataset(cfg, "train")
        assert str(images / name) in str(info.value)
    with pytest.raises(DatasetError, match=r"deep\.png"):
        coco.read_image_rgb(images / "deep.png")


# --------------------------------------------------------------------------- VOC format
@pytest.fixture(scope="module")
def voc_folder(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("voc") / "trees"
    return root, make_custom_voc(root)


def _by_name(data: dict) -> dict[str, dict]:
    return {im["voc_name"]: im for im in data["images"]}


def test_voc_folder_classes_auto_names_extensions_and_boxes(voc_folder, tmp_path) -> None:
    root, records = voc_folder
    paths = voc.convert_voc(root, tmp_path, ["train", "test"], classes="auto",
                            classes_from=["train"], progress=False)  # fmt: skip
    train, test = (json.loads(paths[s].read_text()) for s in ("train", "test"))
    assert [c["name"] for c in train["categories"]] == ["Bush", "Tree"]  # sorted names
    assert test["categories"] == train["categories"]
    # ids: 1-based position in the sorted names of every annotation file of the folder
    names = sorted(r.name for r in records)
    for data in (train, test):
        for name, image in _by_name(data).items():
            assert image["id"] == names.index(name) + 1
    found = {**_by_name(train), **_by_name(test)}
    category = {c["name"]: c["id"] for c in train["categories"]}
    for record in records:
        image = found[record.name]
        assert image["file_name"] == record.file_name  # incl. the .PNG the XML called .jpeg
        assert (image["width"], image["height"]) == record.size  # incl. the XML without <size>
        data = train if record.split == "train" else test
        boxes = sorted((a["category_id"], a["bbox"]) for a in data["annotations"]
                       if a["image_id"] == image["id"])  # fmt: skip
        want = sorted((category[CLASSES[o["class"]][0]], o["bbox"]) for o in record.objects)
        assert boxes == want, record.name
    ds = build_dataset({"kind": "voc", "root": str(root), "annotations": str(tmp_path),
                        "classes": "auto", "train_splits": ["train"], "test_split": "test"},
                       "test", train=False)  # fmt: skip
    assert ds.class_names == ["Bush", "Tree"] and len(ds) == len(test["images"])
    image, _ = ds[0]
    assert image.shape[0] == 3


def test_voc_ids_are_stable_under_reconversion(voc_folder, tmp_path) -> None:
    root, _ = voc_folder
    both = voc.convert_voc(root, tmp_path / "a", ["train", "test"], classes=["Tree", "Bush"],
                           progress=False)  # fmt: skip
    alone = voc.convert_voc(root, tmp_path / "b", ["test"], classes=["Tree", "Bush"],
                            progress=False)  # fmt: skip
    again = voc.convert_voc(root, tmp_path / "a", ["test"], classes=["Tree", "Bush"],
                            force=True, progress=False)  # fmt: skip
    first = both["test"].read_bytes()
    assert alone["test"].read_bytes() == first == again["test"].read_bytes()
    data = json.loads(first)
    assert [c["name"] for c in data["categories"]] == ["Tree", "Bush"]  # the order given
    train_ids = {im["id"] for im in json.loads(both["train"].read_bytes())["images"]}
    assert not train_ids & {im["id"] for im in data["images"]}  # unique across splits


def test_voc_class_errors_name_the_file(voc_folder, tmp_path) -> None:
    root, records = voc_folder
    with pytest.raises(DatasetError, match="unknown class name 'Bush'") as info:
        voc.convert_voc(root, tmp_path, ["train"], classes=["Tree"], progress=False)
    assert "Annotations" in str(info.value) and ".xml" in str(info.value)
    with pytest.raises(DatasetError, match=r"unknown class name .* aeroplane, bicycle"):
        voc.convert_voc(root, tmp_path, ["train"], progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    test_xml = copy / "Annotations" / f"{next(r.name for r in records if r.split == 'test')}.xml"
    test_xml.write_text(test_xml.read_text().replace("<name>Tree</name>", "<name>Oak</name>", 1))
    with pytest.raises(DatasetError, match="'Oak'") as info:
        voc.convert_voc(copy, tmp_path / "c", ["train", "test"], classes="auto",
                        classes_from=["train"], progress=False)  # fmt: skip
    assert str(test_xml) in str(info.value)
    (copy / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(DatasetError, match=r"test\.txt"):
        voc.convert_voc(copy, tmp_path / "d", ["test"], classes="auto", classes_from=["train"],
                        progress=False)  # fmt: skip
    image = copy / records[0].file_name
    image.unlink()
    with pytest.raises(DatasetError, match=records[0].name):
        voc.convert_voc(copy, tmp_path / "e", ["train"], classes="auto", progress=False)


def test_voc_cli_classes_auto(voc_folder, tmp_path) -> None:
    root, records = voc_folder
    out = tmp_path / "prepared"
    assert main(["data", "voc", "--root", str(root), "--output-dir", str(out), "--splits",
                 "train", "test", "--classes", "auto", "--classes-from", "train"]) == 0  # fmt: skip
    report = json.loads((out / "train.validation.json").read_text())
    assert report["images"] == sum(r.split == "train" for r in records)
    assert report["empty_images"] == 1 and report["exif_oriented_images"] == 1
    assert json.loads((out / "test.json").read_text())["categories"][1]["name"] == "Tree"
