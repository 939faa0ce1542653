"""Synthetic shapes: exact tight boxes (checked against an independent rendering and the
pixels of the written PNGs), determinism, size coverage, completion marker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from eiou.data import synthetic


def _mask(shape: dict, size: int) -> np.ndarray:
    """The test's own rendering of one annotation's ``shape`` record (PIL, no anti-aliasing)."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape["draw"] == "rectangle":
        draw.rectangle(shape["xy"], fill=255)
    elif shape["draw"] == "ellipse":
        draw.ellipse(shape["xy"], fill=255)
    elif shape["draw"] == "ring":
        draw.ellipse(shape["xy"], outline=255, width=shape["width"])
    else:
        draw.polygon([tuple(p) for p in shape["xy"]], fill=255)
    return np.asarray(canvas) > 0


def _box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("shapes")
    paths = synthetic.generate(
        root, {"train": 48, "val": 8}, {"seed": 3, "num_classes": 8}, progress=False
    )
    return root, json.loads(paths["train"].read_text())


def test_boxes_are_tight_boxes_of_the_drawn_pixels(generated: tuple[Path, dict]) -> None:
    root, data = generated
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    checked = 0
    for image in data["images"]:
        pixels = np.asarray(Image.open(root / "train" / image["file_name"]).convert("RGB"))
        size = image["width"]
        anns = sorted(by_image.get(image["id"], []), key=lambda a: a["id"])  # drawing order
        masks = [_mask(a["shape"], size) for a in anns]
        object_pixels = np.zeros((size, size), dtype=bool)
        for k, (ann, mask) in enumerate(zip(anns, masks, strict=True)):
            later = np.zeros_like(mask)
            for other in masks[k + 1 :]:
                later |= other
            visible = mask & ~later
            object_pixels |= visible
            # the box is the tight box of the full mask and of the visible pixels
            assert ann["bbox"] == _box(mask)
            assert ann["bbox"] == _box(visible)
            assert ann["area"] == ann["bbox"][2] * ann["bbox"][3]
            # the PNG holds exactly the object's colour on its visible pixels
            assert (pixels[visible] == np.array(ann["color"], dtype=np.uint8)).all()
            checked += 1
        # no background pixel has an object colour (background is low-saturation)
        saturation = pixels.max(axis=-1).astype(int) - pixels.min(axis=-1)
        assert saturation[~object_pixels].max() < 60
    assert checked == len(data["annotations"]) > 48


def test_sizes_aspects_classes_and_overlaps_cover_the_protocol(
    generated: tuple[Path, dict],
) -> None:
    _, data = generated
    areas = np.array([a["bbox"][2] * a["bbox"][3] for a in data["annotations"]])
    assert (areas < 32**2).sum() >= 5
    assert ((areas >= 32**2) & (areas <= 96**2)).sum() >= 5
    assert (areas > 96**2).sum() >= 2
    aspect = np.array([a["bbox"][2] / a["bbox"][3] for a in data["annotations"]])
    assert (aspect > 1.8).any() and (aspect < 1 / 1.8).any()
    assert {a["category_id"] for a in data["annotations"]} == set(range(1, 9))
    assert [c["name"] for c in data["categories"]] == [n for n, _ in synthetic.CLASSES]
    overlapping = 0
    for image in data["images"]:
        boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == image["id"]]
        for i, (x, y, w, h) in enumerate(boxes):
            for u, v, s, t in boxes[i + 1 :]:
                if min(x + w, u + s) > max(x, u) and min(y + h, v + t) > max(y, v):
                    overlapping += 1
    assert overlapping >= 3


def test_same_seed_same_bytes_and_pixels(tmp_path: Path, generated: tuple[Path, dict]) -> None:
    root, _ = generated
    again = synthetic.generate(
        tmp_path / "a", {"train": 48}, {"seed": 3, "num_classes": 8}, progress=False
    )
    assert again["train"].read_bytes() == (root / "train.json").read_bytes()
    for name in ("000001.png", "000017.png", "000048.png"):
        first = np.asarray(Image.open(root / "train" / name))
        second = np.asarray(Image.open(tmp_path / "a" / "train" / name))
        assert np.array_equal(first, second)
    other = synthetic.generate(
        tmp_path / "b", {"train": 48}, {"seed": 4, "num_classes": 8}, progress=False
    )
    assert other["train"].read_bytes() != again["train"].read_bytes()


def test_each_split_has_its_own_stream(tmp_path: Path, generated: tuple[Path, dict]) -> None:
    root, _ = generated
    only_val = synthetic.generate(
        tmp_path, {"val": 8}, {"seed": 3, "num_classes": 8}, progress=False
    )
    assert only_val["val"].read_bytes() == (root / "val.json").read_bytes()


def test_finished_split_is_not_regenerated_but_stale_or_partial_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = {"seed": 0, "image_size": 64}
    synthetic.generate(tmp_path, {"train": 4}, opts, progress=False)
    assert synthetic.is_complete(tmp_path, "train", 4, opts)
    calls = []
    real = synthetic._generate_split

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_generate_split", counting)
    synthetic.generate(tmp_path, {"train": 4}, opts, progress=False)
    assert calls == []  # same parameters: skipped
    assert not synthetic.is_complete(tmp_path, "train", 4, {**opts, "seed": 1})
    synthetic.generate(tmp_path, {"train": 4}, {**opts, "seed": 1}, progress=False)
    assert len(calls) == 1  # new parameters: regenerated
    # a damaged JSON or a missing image is not taken for a finished split
    (tmp_path / "train.json").write_text("{}")
    assert not synthetic.is_complete(tmp_path, "train", 4, {**opts, "seed": 1})
    synthetic.generate(tmp_path, {"train": 4}, {**opts, "seed": 1}, progress=False)
    (tmp_path / "train" / "000002.png").unlink()
    assert not synthetic.is_complete(tmp_path, "train", 4, {**opts, "seed": 1})


def test_crash_mid_generation_leaves_no_finished_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = synthetic._render_image

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_render_image", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path, {"train": 5}, {"image_size": 64}, progress=False)
    assert not (tmp_path / "train.json").exists()
    assert not synthetic.is_complete(tmp_path, "train", 5, {"image_size": 64})
    assert not [p for p in (tmp_path / "train").iterdir() if p.suffix == ".tmp"]


def test_bad_parameters_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        synthetic.generate(tmp_path, {"train": 2}, {"num_classes": 9}, progress=False)
    with pytest.raises(ValueError, match="image_size"):
        synthetic.generate(tmp_path, {"train": 2}, {"image_size": 8}, progress=False)
