"""PASCAL VOC devkit -> COCO JSON, converted once per split and cached.

Layout (``devkit`` is the ``VOCdevkit`` folder, or a folder that contains it)::

    VOCdevkit/VOC2007/ImageSets/Main/{trainval,test}.txt
    VOCdevkit/VOC2007/Annotations/<id>.xml
    VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/...

Split names are ``voc_<year>_<imageset>`` (e.g. ``voc_2007_trainval``, ``voc_2012_trainval``,
``voc_2007_test``). Each split becomes ``<out_dir>/<split>.json`` with ``file_name``
relative to the devkit folder; the paper's training set VOC07+12 trainval is the merge of
two splits (done by :func:`eiou.data.build_dataset`).

Choices (each is written into the JSON's ``info``):

- Coordinates: VOC stores 1-based inclusive pixel indices ``xmin..xmax``. Pixel ``xmin``
  (1-based) is column ``xmin - 1`` (0-based), which covers ``[xmin - 1, xmin)`` in continuous
  coordinates, so the box is ``x1 = xmin - 1, x2 = xmax``, i.e. COCO
  ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`` (Detectron's conversion).
  Float coordinates are converted by the same formula, not rounded.
- ``difficult`` objects: with ``use_difficult=False`` (default) they are kept as
  ``iscrowd=1``: never training targets, and pycocotools treats them as ignore regions, so a
  detection on one is neither a true nor a false positive and a missed one is not a miss
  (the COCO-protocol analogue of VOC's ignore flag). Note that pycocotools matches crowd
  regions by intersection over the detection's area. With ``use_difficult=True`` they are
  ordinary objects (trained on and counted).
- Image file: the annotation's ``<filename>`` when that file exists, otherwise
  ``JPEGImages/<id>.{jpg,jpeg,png,...}`` (the extension found on disk).
- Image size: ``<size>`` when present and positive, else read from the image file.
- Image ids: ``<devkit year> * 10**10 + <digits of the name>`` (``2012_000123`` ->
  ``2012 * 10**10 + 2012000123``), so ids are unique across VOC2007 and VOC2012.
- Boxes partly outside the image are written as given; the loader clips them and
  :mod:`eiou.data.validate` counts them. ``xmax < xmin`` is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from eiou.data.coco import DatasetError
from eiou.dataset_layout import VOC_SPLIT
from eiou.io import write_json

__all__ = [
    "VOC_CLASSES",
    "convert_voc",
    "find_devkit",
    "parse_annotation",
    "parse_split",
    "voc_image_id",
]

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def parse_split(split: str) -> tuple[str, str]:
    """``"voc_2007_trainval"`` -> ``("2007", "trainval")``."""
    match = VOC_SPLIT.match(split)
    if not match:
        raise DatasetError(f"VOC split {split!r} is not of the form voc_<year>_<imageset>")
    return match.group(1), match.group(2)


def find_devkit(root: str | os.PathLike[str]) -> Path:
    """The ``VOCdevkit`` folder: ``root`` itself or ``root/VOCdevkit``."""
    root = Path(root)
    if (root / "VOCdevkit").is_dir():
        return root / "VOCdevkit"
    if root.is_dir() and any(p.name.startswith("VOC") for p in root.iterdir()):
        return root
    raise DatasetError(f"no VOC devkit at {root} (expected {root}/VOCdevkit/VOC2007 or similar)")


def voc_image_id(year: str, name: str) -> int:
    """Integer image id, unique across devkit years (see the module docstring)."""
    digits = name.replace("_", "")
    if not digits.isdigit() or len(digits) > 10:
        raise DatasetError(f"VOC{year} image name {name!r} is not numeric; cannot derive an id")
    return int(year) * 10**10 + int(digits)


def _text(node: ET.Element, tag: str, xml_path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{xml_path}: missing <{tag}>")
    return child.text.strip()


def _find_image(year_dir: Path, name: str, filename: str | None) -> Path:
    images = year_dir / "JPEGImages"
    if filename and (images / filename).is_file():
        return images / filename
    for ext in _IMAGE_EXTENSIONS:
        if (images / f"{name}{ext}").is_file():
            return images / f"{name}{ext}"
    raise DatasetError(
        f"image for {year_dir / 'Annotations' / (name + '.xml')} not found "
        f"(tried {filename or name} and {name}.jpg/.jpeg/.png in {images})"
    )


def parse_annotation(
    xml_path: Path, year_dir: Path, class_to_id: dict[str, int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One VOC XML file -> (COCO image record without id, list of objects).

    Objects are ``{"category_id", "bbox" [x, y, w, h], "difficult"}`` (see the module
    docstring for the coordinate conversion).
    """
    try:
        tree = ET.parse(xml_path)
    except (ET.ParseError, OSError) as err:
        raise DatasetError(f"cannot read annotation {xml_path}: {err}") from err
    node = tree.getroot()
    name = xml_path.stem
    filename_node = node.find("filename")
    filename = None
    if filename_node is not None and filename_node.text:
        filename = filename_node.text.strip()
    image_path = _find_image(year_dir, name, filename)
    width = height = 0
    size = node.find("size")
    if size is not None:
        try:
            width = round(float(_text(size, "width", xml_path)))
            height = round(float(_text(size, "height", xml_path)))
        except (DatasetError, ValueError):
            width = height = 0
    if width <= 0 or height <= 0:
        try:
            with Image.open(image_path) as img:
                width, height = img.size
        except OSError as err:
            raise DatasetError(f"cannot read image {image_path}: {err}") from err
    objects = []
    for obj in node.findall("object"):
        cls = _text(obj, "name", xml_path)
        if cls not in class_to_id:
            raise DatasetError(f"{xml_path}: unknown class name {cls!r}")
        difficult_node = obj.find("difficult")
        difficult = bool(
            difficult_node is not None and difficult_node.text and int(float(difficult_node.text))
        )
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{xml_path}: object {cls!r} has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (
                float(_text(bndbox, tag, xml_path)) for tag in ("xmin", "ymin", "xmax", "ymax")
            )
        except ValueError as err:
            raise DatasetError(f"{xml_path}: non-numeric box coordinate: {err}") from err
        if xmax < xmin or ymax < ymin:
            raise DatasetError(
                f"{xml_path}: inverted box for {cls!r}: xmin={xmin} ymin={ymin} "
                f"xmax={xmax} ymax={ymax}"
            )
        x, y = xmin - 1.0, ymin - 1.0
        w, h = xmax - xmin + 1.0, ymax - ymin + 1.0
        objects.append(
            {
                "category_id": class_to_id[cls],
                "bbox": [_num(x), _num(y), _num(w), _num(h)],
                "difficult": difficult,
            }
        )
    file_name = image_path.relative_to(year_dir.parent).as_posix()
    return {"file_name": file_name, "width": int(width), "height": int(height)}, objects


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _read_image_set(year_dir: Path, imageset: str) -> list[str]:
    path = year_dir / "ImageSets" / "Main" / f"{imageset}.txt"
    if not path.is_file():
        raise DatasetError(f"VOC image set file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split()[0] for line in lines if line.strip()]


def _parameters(split: str, use_difficult: bool, classes: Sequence[str]) -> dict[str, Any]:
    return {
        "converter_version": CONVERTER_VERSION,
        "split": split,
        "use_difficult": bool(use_difficult),
        "classes": list(classes),
    }


def _marker(out_dir: Path, split: str) -> Path:
    return out_dir / f"{split}.complete.json"


def _is_complete(out_dir: Path, split: str, params: dict[str, Any]) -> bool:
    marker, json_path = _marker(out_dir, split), out_dir / f"{split}.json"
    if not (marker.is_file() and json_path.is_file()):
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded.get("parameters") == params and recorded.get("json_sha256") == (
        hashlib.sha256(json_path.read_bytes()).hexdigest()
    )


def convert_voc(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    splits: Sequence[str],
    *,
    use_difficult: bool = False,
    classes: Sequence[str] = VOC_CLASSES,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Convert each VOC split to ``<out_dir>/<split>.json``; return split -> JSON path.

    A split already converted with the same parameters (recorded in
    ``<split>.complete.json``, written last) is not converted again unless ``force``.
    Category ids are ``1..len(classes)`` in the order of ``classes``.
    """
    devkit = find_devkit(root)
    out = Path(out_dir)
    class_to_id = {name: i + 1 for i, name in enumerate(classes)}
    paths: dict[str, Path] = {}
    for split in splits:
        year, imageset = parse_split(split)
        year_dir = devkit / f"VOC{year}"
        if not year_dir.is_dir():
            raise DatasetError(f"VOC{year} folder not found: {year_dir}")
        params = _parameters(split, use_difficult, classes)
        json_path = out / f"{split}.json"
        paths[split] = json_path
        if not force and _is_complete(out, split, params):
            log.info("VOC split %s already converted", split)
            continue
        _marker(out, split).unlink(missing_ok=True)
        names = _read_image_set(year_dir, imageset)
        images, annotations = [], []
        for name in tqdm(names, desc=f"convert {split}", unit="image", disable=not progress):
            xml_path = year_dir / "Annotations" / f"{name}.xml"
            if not xml_path.is_file():
                raise DatasetError(
                    f"annotation file not found: {xml_path} (listed in {imageset}.txt)"
                )
            record, objects = parse_annotation(xml_path, year_dir, class_to_id)
            image_id = voc_image_id(year, name)
            images.append({"id": image_id, **record})
            for obj in objects:
                x, y, w, h = obj["bbox"]
                crowd = obj["difficult"] and not use_difficult
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": obj["category_id"],
                        "bbox": [x, y, w, h],
                        "area": _num(w * h),
                        "iscrowd": int(crowd),
                        "difficult": int(obj["difficult"]),
                    }
                )
        data = {
            "info": {
                "description": f"PASCAL VOC{year} {imageset}, converted by eiou",
                "parameters": params,
                "box_convention": "bbox [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]",
                "difficult": "iscrowd=1 (ignored)" if not use_difficult else "ordinary objects",
                "file_name_relative_to": "VOCdevkit",
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [
                {"id": i, "name": name, "supercategory": "voc"} for name, i in class_to_id.items()
            ],
        }
        write_json(json_path, data, indent=None)
        write_json(
            _marker(out, split),
            {
                "parameters": params,
                "json_sha256": hashlib.sha256(json_path.read_bytes()).hexdigest(),
            },
        )
    return paths
