"""Dataset validation: every bad case is reported (together) or skipped and counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from eiou.cli import main
from eiou.data import DatasetError, build_dataset, validate_coco, validate_dataset
from eiou.data.coco import image_paths_for


def _dataset(folder: Path, n: int = 3, size: tuple[int, int] = (64, 48)) -> dict:
    """n JPEG images, one 10x10 box each."""
    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(1, n + 1):
        Image.new("RGB", size, (i * 40, 90, 30)).save(folder / f"{i}.jpg", quality=90)
        images.append({"id": i, "file_name": f"{i}.jpg", "width": size[0], "height": size[1]})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 10, 10],
                     "area": 100, "iscrowd": 0})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}


def _check(data: dict, folder: Path, **kwargs):
    return validate_coco(data, image_paths_for(data, folder), name="split", **kwargs)


def test_clean_dataset_counts(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    report = _check(data, tmp_path)
    assert (report.images, report.annotations, report.errors) == (3, 3, [])
    assert report.empty_images == report.clipped_boxes == report.degenerate_boxes == 0
    assert report.images_decoded


def test_skipped_and_clipped_are_counted_not_fatal(tmp_path: Path) -> None:
    data = _dataset(tmp_path, n=4)
    anns = data["annotations"]
    anns[0]["bbox"] = [-1.5, 40, 10, 9]  # 1.5 px left and 1 px below a 64x48 image: clipped
    anns[1]["bbox"] = [20, 20, 0, 5]  # zero width: dropped
    anns.append({"id": 10, "image_id": 3, "category_id": 1, "bbox": [1, 1, 60, 40],
                 "area": 2400, "iscrowd": 1})  # fmt: skip
    anns.pop(3)  # image 4 has no box
    report = _check(data, tmp_path)
    assert report.clipped_boxes == 1
    assert report.degenerate_boxes == 1
    assert report.crowd_annotations == 1
    assert report.empty_images == 2  # image 2 (only a zero-size box) and image 4
    # the loader agrees: it clips the box to the image and skips the empty images in training
    from eiou.data import CocoDetection, load_coco

    ds = CocoDetection(
        load_coco(data), image_paths_for(data, tmp_path), train=True, horizontal_flip=False
    )
    assert ds.ids == [1, 3] and ds.stats.skipped_empty_images == 2
    assert ds[0][1]["boxes"].tolist() == [[0.0, 40.0, 8.5, 48.0]]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d, f: (f / "2.jpg").unlink(), "missing image file"),
        (lambda d, f: (f / "2.jpg").write_bytes(b"not an image at all"), "unreadable image"),
        (lambda d, f: (f / "2.jpg").write_bytes((f / "2.jpg").read_bytes()[:200]),
         "unreadable image"),
        (lambda d, f: d["images"][1].update(width=65), "annotation says 65x48"),
        (lambda d, f: d["annotations"][1].update(bbox=[30, 5, -10, 10]), "inverted"),
        (lambda d, f: d["annotations"][1].update(bbox=[60, 5, 30, 10]), "far outside"),
        (lambda d, f: d["annotations"][1].update(bbox=[1, 2, 3]), "not four numbers"),
        (lambda d, f: d["annotations"][1].update(image_id=77), "unknown image id"),
        (lambda d, f: d["annotations"][1].update(category_id=5), "unknown category id"),
        (lambda d, f: d["images"].append(dict(d["images"][0])), "duplicate image id"),
    ],
)  # fmt: skip
def test_each_bad_case_is_an_error(tmp_path: Path, damage, message: str) -> None:
    data = _dataset(tmp_path)
    damage(data, tmp_path)
    with pytest.raises(DatasetError, match=message):
        _check(data, tmp_path)


def test_all_problems_are_listed_in_one_error(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    (tmp_path / "1.jpg").unlink()
    data["annotations"][2]["bbox"] = [10, 10, 5, -5]
    with pytest.raises(DatasetError) as info:
        _check(data, tmp_path)
    text = str(info.value)
    assert "2 problems" in text and "1.jpg" in text and "inverted" in text


def test_missing_folder_and_nothing_to_train_on(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "a")
    with pytest.raises(DatasetError, match="missing image folder"):
        _check(data, tmp_path / "b")
    data["annotations"] = []
    with pytest.raises(DatasetError, match="nothing to train on"):
        _check(data, tmp_path / "a")
    assert _check(data, tmp_path / "a", require_annotations=False).empty_images == 3


def test_header_only_mode_still_checks_sizes(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    data["images"][0]["height"] = 10
    with pytest.raises(DatasetError, match="annotation says 64x10"):
        _check(data, tmp_path, decode_images=False)


def test_validate_dataset_from_a_config(tmp_path: Path) -> None:
    cfg = {"kind": "synthetic", "root": str(tmp_path / "shapes"), "train_splits": ["train"],
           "test_split": "test", "num_train": 6, "num_test": 3, "image_size": 64}  # fmt: skip
    report = validate_dataset(cfg, "train")
    assert report.images == 6 and report.annotations >= 6
    assert len(build_dataset(cfg, "test", train=False)) == 3
    (tmp_path / "shapes" / "train" / "000004.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match=r"000004\.png"):
        validate_dataset(cfg, "train")
    with pytest.raises(DatasetError, match="no VOC devkit"):
        validate_dataset({"kind": "voc", "root": str(tmp_path / "none")}, "voc_2007_test")


def test_cli_check_and_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "shapes"
    assert main(["data", "synthetic", "--root", str(root), "--splits", "train", "test",
                 "--num-train", "5", "--num-test", "2", "--image-size", "64",
                 "--num-classes", "4", "--seed", "2"]) == 0  # fmt: skip
    assert len(json.loads((root / "train.json").read_text())["images"]) == 5
    spec = {"data": {"kind": "synthetic", "root": str(root), "annotations": str(root),
                     "train_splits": ["train"], "test_split": "test", "num_train": 5,
                     "num_test": 2, "image_size": 64, "num_classes": 4, "seed": 2}}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["data", "check", "--config", str(tmp_path / "run.yaml")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["train"]["images"] == 5 and result["test"]["images"] == 2
    (root / "test" / "000001.png").write_bytes(b"truncated")
    assert main(["data", "check", "--config", str(tmp_path / "run.yaml")]) == 2
