"""COCO layout, the generic loader, build_dataset, flips and collate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from eiou.cli import main
from eiou.data import DatasetError, build_dataset, coco, collate_fn

# image 1: a red block at pixel columns 3..12, rows 5..9 (W=40, H=30), a crowd region
# image 2: a green block at columns 20..29, rows 0..19 and a blue one (category 90)
# image 3: nothing
BLOCKS = {
    1: [(5, (255, 0, 0), (3, 5, 10, 5))],
    2: [(1, (0, 255, 0), (20, 0, 10, 20)), (90, (0, 0, 255), (0, 10, 6, 8))],
    3: [],
}


def make_coco(root: Path, split: str = "val2017") -> Path:
    ann_file, image_dir = coco.coco_split_paths(root, split)
    image_dir.mkdir(parents=True)
    images, anns = [], []
    for image_id, blocks in BLOCKS.items():
        pixels = np.full((30, 40, 3), 128, dtype=np.uint8)
        for cat, colour, (x, y, w, h) in blocks:
            pixels[y : y + h, x : x + w] = colour
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
        name = f"{image_id:012d}.png"
        Image.fromarray(pixels).save(image_dir / name)
        images.append({"id": image_id, "file_name": name, "width": 40, "height": 30})
    anns.append({"id": 99, "image_id": 1, "category_id": 1, "bbox": [20, 10, 15, 15],
                 "area": 225, "iscrowd": 1})  # fmt: skip
    cats = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"},
            {"id": 5, "name": "airplane"}]  # fmt: skip
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return make_coco(tmp_path / "coco")


def _cfg(root: Path) -> dict:
    return {"kind": "coco", "root": str(root), "train_splits": ["val2017"],
            "test_split": "val2017"}  # fmt: skip


def test_items_labels_and_boxes(coco_root: Path) -> None:
    ds = build_dataset(_cfg(coco_root), "test", train=False)
    assert len(ds) == 3  # evaluation keeps empty images
    assert ds.label_to_category_id == {1: 1, 2: 5, 3: 90}
    assert ds.class_names == ["person", "airplane", "toothbrush"]
    image, target = ds[ds.ids.index(2)]
    assert image.dtype == torch.float32 and image.shape == (3, 30, 40)
    expected = np.asarray(Image.open(coco_root / "val2017" / "000000000002.png"), dtype=np.float32)
    assert torch.allclose(image, torch.from_numpy(expected / 255).permute(2, 0, 1))
    assert target["image_id"] == 2
    assert target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [1, 3]
    assert target["boxes"].tolist() == [[20, 0, 30, 20], [0, 10, 6, 18]]
    _, target1 = ds[ds.ids.index(1)]
    assert target1["labels"].tolist() == [2]  # the crowd region is not a target
    assert ds.coco.getAnnIds(imgIds=[1], iscrowd=None) == [1, 99]


def _tight_xyxy(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_training_flip_moves_boxes_with_pixels_and_is_seeded(coco_root: Path) -> None:
    ds = build_dataset(_cfg(coco_root), "train", train=True)
    assert len(ds) == 2 and ds.stats.skipped_empty_images == 1
    torch.manual_seed(0)
    flips = []
    for _ in range(20):
        image, target = ds[ds.ids.index(2)]
        for box, colour in zip(target["boxes"], ([0, 1, 0], [0, 0, 1]), strict=True):
            mask = (image == torch.tensor(colour, dtype=torch.float32)[:, None, None]).all(0)
            assert _tight_xyxy(mask) == box.tolist()  # the box follows the pixels
        flips.append(target["boxes"][0, 0].item() != 20)
    assert 3 < sum(flips) < 17
    torch.manual_seed(0)
    again = [ds[ds.ids.index(2)][1]["boxes"][0, 0].item() != 20 for _ in range(20)]
    assert again == flips
    off = build_dataset({**_cfg(coco_root), "horizontal_flip": False}, "train", train=True)
    assert all(off[1][1]["boxes"][0, 0].item() == 20 for _ in range(10))


def test_collate_for_a_data_loader(coco_root: Path) -> None:
    ds = build_dataset(_cfg(coco_root), "test", train=False)
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_fn)))
    assert isinstance(images, list) and len(images) == 3
    assert [t["image_id"] for t in targets] == ds.ids
    assert targets[2]["boxes"].shape == (0, 4) and targets[2]["labels"].shape == (0,)


def test_test_dev_without_ground_truth(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    make_coco(root, "test-dev2017")
    ann_file, _ = coco.coco_split_paths(root, "test-dev2017")
    data = json.loads(ann_file.read_text())
    ann_file.write_text(json.dumps({"images": data["images"], "categories": data["categories"]}))
    ds = build_dataset({"kind": "coco", "root": str(root)}, "test-dev2017", train=False)
    assert len(ds) == 3 and ds[0][1]["boxes"].shape == (0, 4)


def test_prepare_copies_json_and_reports_missing_layout(coco_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    rc = main(["data", "coco", "--root", str(coco_root), "--output-dir", str(out),
               "--splits", "val2017"])  # fmt: skip
    assert rc == 0
    assert (out / "val2017.json").read_bytes() == (
        coco_root / "annotations" / "instances_val2017.json"
    ).read_bytes()
    assert json.loads((out / "val2017.validation.json").read_text())["empty_images"] == 1
    # the prepared copy is what build_dataset reads when `annotations` points at it
    ds = build_dataset({**_cfg(coco_root), "annotations": str(out)}, "val2017", train=False)
    assert len(ds) == 3
    with pytest.raises(DatasetError) as info:
        coco.prepare_coco(coco_root, out, ["train2017", "val2017"])
    assert "instances_train2017.json" in str(info.value) and "train2017" in str(info.value)
    with pytest.raises(DatasetError, match="unknown COCO split"):
        coco.prepare_coco(coco_root, out, ["val2014"])


def test_unknown_kind_and_merge_conflicts(coco_root: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        build_dataset({"kind": "kitti", "root": str(coco_root)}, "train", train=True)
    data = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    with pytest.raises(DatasetError, match="image id 1"):
        coco.merge_coco([data, data], ["a", "b"])
    other = {**data, "categories": data["categories"][:1]}
    with pytest.raises(DatasetError, match="different categories"):
        coco.merge_coco([data, other], ["a", "b"])
