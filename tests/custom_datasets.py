"""Small "own" datasets the tests write: a COCO-format one and a VOC-format folder.

Both are built from :mod:`eiou.data.synthetic` images (whose JSON records every object's
drawing, so boxes can be checked against the pixels) re-saved with what real data of one's
own brings: class names like ``Tree``, non-numeric image names like ``SITE_029``, category
ids that are neither contiguous nor ordered, an image without boxes, a grayscale, an RGBA,
and an EXIF-rotated image (tag 6, pixels and boxes in the stored orientation), mixed image
formats and extensions, and annotation files that leave out what COCO tools usually fill
(``area``, ``iscrowd``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eiou.data import synthetic
from eiou.data.coco import EXIF_ORIENTATION

#: synthetic class index (0-based) -> (class name, COCO category id)
CLASSES: dict[int, tuple[str, int]] = {0: ("Tree", 40), 1: ("Bush", 7)}
#: what the special images of each split are (position in the split)
SPECIAL = {"empty": 1, "gray": 2, "rgba": 3, "exif": 4}


@dataclass
class Record:
    """One image of a custom dataset as the test expects the loader to see it."""

    name: str
    split: str
    file_name: str
    size: tuple[int, int]  # (width, height) as stored
    objects: list[dict[str, Any]] = field(default_factory=list)  # class, bbox xywh, shape, color
    kind: str = "rgb"  # or one of SPECIAL
    exif_orientation: int = 1


def _site_name(split: str, index: int) -> str:
    # not numeric: SITE_029, SITE_032, ... (train), PLOT_029, ... (test)
    return f"{'SITE' if split == 'train' else 'PLOT'}_{29 + 3 * index:03d}"


def make_images(root: Path, num_train: int = 10, num_test: int = 6, size: int = 64) -> list[Record]:
    """Write the images under ``root/images`` and return their records."""
    source = root / "_synthetic"
    paths = synthetic.generate(
        source,
        {"train": num_train, "test": num_test},
        {"seed": 5, "image_size": size, "num_classes": len(CLASSES), "max_objects": 3},
        progress=False,
    )
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for split, json_path in paths.items():
        data = json.loads(Path(json_path).read_text())
        by_image: dict[int, list] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for position, image in enumerate(data["images"]):
            pixels = Image.open(source / split / image["file_name"]).convert("RGB")
            name = _site_name(split, position)
            objects = [
                {
                    "class": ann["category_id"] - 1,
                    "bbox": list(ann["bbox"]),
                    "shape": ann["shape"],
                    "color": ann["color"],
                }
                for ann in by_image.get(image["id"], [])
            ]
            record = Record(name, split, f"{name}.png", pixels.size, objects)
            exif = None
            record.kind = next((k for k, p in SPECIAL.items() if p == position), "rgb")
            if record.kind == "empty":
                noise = np.random.default_rng(position).integers(90, 160, (size, size, 3))
                pixels = Image.fromarray(noise.astype(np.uint8), "RGB")
                record.objects = []
            elif record.kind == "gray":
                pixels = pixels.convert("L")
            elif record.kind == "rgba":
                pixels = pixels.copy()
                pixels.putalpha(Image.new("L", pixels.size, 128))
            elif record.kind == "exif":
                exif = Image.Exif()
                exif[EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
                record.exif_orientation = 6
            if record.kind == "rgb" and position % 3 == 0:
                record.file_name = f"{name}.jpg"
                pixels.save(images_dir / record.file_name, quality=95)
            else:
                pixels.save(images_dir / record.file_name, **({"exif": exif} if exif else {}))
            records.append(record)
    return records


def make_custom_coco(root: Path, **kwargs: Any) -> list[Record]:
    """``root/images/`` and ``root/annotations/{train,test}.json`` as a hand-made COCO
    export: image ids 1000 + 7 k, categories 40 (Tree) and 7 (Bush), no ``area`` or
    ``iscrowd``, no ``info``. Returns the image records."""
    records = make_images(root, **kwargs)
    for split in ("train", "test"):
        images, annotations = [], []
        for k, record in enumerate(r for r in records if r.split == split):
            image_id = 1000 + 7 * k + (0 if split == "train" else 500)
            images.append(
                {
                    "id": image_id,
                    "file_name": record.file_name,
                    "width": record.size[0],
                    "height": record.size[1],
                }
            )
            for obj in record.objects:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": CLASSES[obj["class"]][1],
                        "bbox": obj["bbox"],
                    }
                )
        categories = [{"id": cat, "name": name} for name, cat in CLASSES.values()]
        path = root / "annotations" / f"{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
    return records


def _voc_xml(record: Record, filename: str, with_size: bool) -> str:
    objects = ""
    for obj in record.objects:
        x, y, w, h = obj["bbox"]  # continuous pixels -> VOC 1-based inclusive
        objects += (
            f"<object><name>{CLASSES[obj['class']][0]}</name><difficult>0</difficult>"
            f"<bndbox><xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + w}</xmax>"
            f"<ymax>{y + h}</ymax></bndbox></object>"
        )
    size = (
        f"<size><width>{record.size[0]}</width><height>{record.size[1]}</height>"
        "<depth>3</depth></size>"
        if with_size
        else ""
    )
    body = f"<folder>trees</folder><filename>{filename}</filename>{size}{objects}"
    return f"<annotation>{body}</annotation>"


def make_custom_voc(root: Path, **kwargs: Any) -> list[Record]:
    """A VOC-format folder ``root`` (Annotations/, JPEGImages/, ImageSets/Main/{train,test}.txt)
    of the same images: one XML names a file that does not exist (the image is found by its
    name with the extension on disk, here upper case), one has no ``<size>``."""
    build = root.parent / f"_{root.name}_build"
    records = make_images(build, **kwargs)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    out = []
    for i, record in enumerate(records):
        record = copy.deepcopy(record)
        source = build / "images" / record.file_name
        filename = record.file_name
        if i == 5:  # stored as .PNG; the XML says .jpeg
            record.file_name = f"{record.name}.PNG"
            filename = f"{record.name}.jpeg"
        (root / "JPEGImages" / record.file_name).write_bytes(source.read_bytes())
        record.file_name = f"JPEGImages/{record.file_name}"
        xml = _voc_xml(record, filename, with_size=i != 6)
        (root / "Annotations" / f"{record.name}.xml").write_text(xml)
        out.append(record)
    for split in ("train", "test"):
        names = [r.name for r in out if r.split == split]
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return out


def category_names() -> list[str]:
    """Class names in increasing category id order (the COCO loader's label order)."""
    return [name for name, _ in sorted(CLASSES.values(), key=lambda c: c[1])]
