"""COCO-format ground truth plus an image folder, as a detection dataset; the COCO 2017 layout.

The generic loader (:class:`CocoDetection`) serves all three dataset kinds: the synthetic
shapes and converted VOC are written as COCO JSON first.

Box conventions. COCO boxes are ``[x, y, w, h]`` in continuous pixel coordinates: pixel
column ``i`` covers ``[i, i + 1)``, so a box whose leftmost and rightmost pixels are columns
``a`` and ``b`` is ``x = a, w = b - a + 1``. Targets are ``(x1, y1, x2, y2) = (x, y, x + w,
y + h)`` in the same frame. A horizontal flip of an image ``W`` pixels wide maps
``(x1, x2)`` to ``(W - x2, W - x1)``.

Labels. Category ids (any integers) are mapped to contiguous labels ``1..K`` in increasing id
order; label 0 is the background. ``iscrowd`` annotations (COCO crowds, VOC ``difficult``
objects) are never training targets; the evaluation treats them as ignore regions.

Pixels (:func:`read_image_rgb`). Every image is read as 8-bit RGB **in its stored
orientation**: an EXIF orientation tag is ignored, so boxes, ``width`` and ``height`` refer to
the pixel grid as stored in the file (what PIL, pycocotools and most VOC tools report).
Grayscale is replicated to three channels, palette images are expanded, an alpha channel is
dropped (the colour values are kept as stored). 16-bit and float images are refused with a
message naming the file (convert them to 8-bit first). :mod:`eiou.data.validate` names images
whose annotated size is their EXIF-rotated size, i.e. annotated in the displayed orientation.

COCO 2017 layout under ``root``::

    annotations/instances_train2017.json   train2017/*.jpg
    annotations/instances_val2017.json     val2017/*.jpg
    annotations/image_info_test-dev2017.json   test2017/*.jpg   (no ground truth)

Any other COCO-format dataset: each split is an annotation file and an image folder
(``file_name`` relative to it). :func:`prepare_custom_coco` writes the normalised copy
(:func:`normalize_coco`) that training and evaluation read.
"""

from __future__ import annotations

import contextlib
import copy
import io as _io
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from eiou.io import atomic_open, write_text

__all__ = [
    "COCO_SPLITS",
    "EXIF_ORIENTATION",
    "CocoDetection",
    "DatasetError",
    "LoadStats",
    "coco_split_paths",
    "image_paths_for",
    "load_coco",
    "merge_coco",
    "normalize_coco",
    "pixel_mode_problem",
    "prepare_coco",
    "prepare_custom_coco",
    "read_image_rgb",
    "read_json",
]

log = logging.getLogger(__name__)

#: split name -> (annotation file under ``annotations/``, image folder under ``root``).
COCO_SPLITS: dict[str, tuple[str, str]] = {
    "train2017": ("instances_train2017.json", "train2017"),
    "val2017": ("instances_val2017.json", "val2017"),
    "test-dev2017": ("image_info_test-dev2017.json", "test2017"),
    "test2017": ("image_info_test2017.json", "test2017"),
}


class DatasetError(ValueError):
    """A dataset is missing, unreadable or inconsistent; the message names the files."""


#: The EXIF tag holding the orientation (1 = as stored; 5..8 = displayed transposed).
EXIF_ORIENTATION = 0x0112
#: PIL modes with more than 8 bits a channel: reading them as RGB would clip.
_HIGH_BIT_DEPTH_MODES = ("I", "F")


def pixel_mode_problem(mode: str) -> str | None:
    """Why PIL mode ``mode`` cannot be read as 8-bit RGB, or None when it can."""
    if mode.split(";")[0] in _HIGH_BIT_DEPTH_MODES:
        return (
            f"its pixels are {mode!r} (more than 8 bits a channel), which eiou does not rescale; "
            "convert it to 8-bit RGB or grayscale"
        )
    return None


def read_image_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """The image of ``path`` as an 8-bit RGB PIL image in its stored orientation (see the
    module docstring); anything unreadable raises :class:`DatasetError` naming the file."""
    try:
        with Image.open(path) as img:
            problem = pixel_mode_problem(img.mode)
            if problem is None:
                return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err
    raise DatasetError(f"cannot read image {path}: {problem}")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a JSON file; a missing or malformed file raises :class:`DatasetError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read annotation file {path}: {err}") from err
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise DatasetError(f"{path} is not COCO JSON (needs 'images' and 'categories')")
    return data


def load_coco(source: str | os.PathLike[str] | Mapping[str, Any]) -> COCO:
    """A ``pycocotools.coco.COCO`` from a JSON path or an already parsed dict, without the
    console noise (it goes to this module's logger at DEBUG level)."""
    data = dict(source) if isinstance(source, Mapping) else read_json(source)
    coco = COCO()
    coco.dataset = data
    buffer = _io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco.createIndex()
    if buffer.getvalue().strip():
        log.debug("pycocotools: %s", buffer.getvalue().strip())
    return coco


def merge_coco(parts: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> dict:
    """Concatenate COCO dicts that share one category list; image and annotation ids must
    be unique across parts (annotation ids are renumbered if they clash)."""
    if not parts:
        raise DatasetError("no splits to merge")
    names = list(names) if names is not None else [str(i) for i in range(len(parts))]
    categories = sorted(parts[0]["categories"], key=lambda c: c["id"])
    merged: dict[str, Any] = {
        "info": {"description": "merged splits: " + " + ".join(names)},
        "images": [],
        "annotations": [],
        "categories": copy.deepcopy(categories),
    }
    seen: dict[int, str] = {}
    ann_ids: set[int] = set()
    for name, part in zip(names, parts, strict=True):
        if sorted(part["categories"], key=lambda c: c["id"]) != categories:
            raise DatasetError(f"split {name!r} has different categories from {names[0]!r}")
        for image in part["images"]:
            if image["id"] in seen:
                raise DatasetError(
                    f"image id {image['id']} occurs in splits {seen[image['id']]!r} and {name!r}"
                )
            seen[image["id"]] = name
            merged["images"].append(image)
        for ann in part.get("annotations", []):
            if ann["id"] in ann_ids:
                ann = {**ann, "id": max(ann_ids) + 1}
            ann_ids.add(ann["id"])
            merged["annotations"].append(ann)
    return merged


def coco_split_paths(root: str | os.PathLike[str], split: str) -> tuple[Path, Path]:
    """``(annotation file, image folder)`` of a COCO 2017 split under ``root``."""
    if split not in COCO_SPLITS:
        raise DatasetError(f"unknown COCO split {split!r}; known: {', '.join(COCO_SPLITS)}")
    ann, images = COCO_SPLITS[split]
    return Path(root) / "annotations" / ann, Path(root) / images


def prepare_coco(
    root: str | os.PathLike[str], out_dir: str | os.PathLike[str], splits: Sequence[str]
) -> list[Path]:
    """Check the COCO layout and copy each split's JSON to ``out_dir/<split>.json``.

    The copy freezes the ground truth that evaluation reads next to the results; it is
    written atomically and skipped when an identical-size copy exists.
    """
    missing = []
    for split in splits:
        ann, images = coco_split_paths(root, split)
        for path in (ann, images):
            if not path.exists():
                missing.append(str(path))
    if missing:
        raise DatasetError("COCO layout incomplete, missing:\n  " + "\n  ".join(missing))
    written = []
    for split in splits:
        ann, _ = coco_split_paths(root, split)
        target = Path(out_dir) / f"{split}.json"
        if not (target.is_file() and target.stat().st_size == ann.stat().st_size):
            read_json(ann)  # fail early on a broken file
            with open(ann, "rb") as src, atomic_open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        written.append(target)
    return written


def _image_size(path: Path, where: str) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError) as err:
        raise DatasetError(
            f"{where}: no width/height, and image {path} cannot be read: {err}"
        ) from err


def normalize_coco(
    data: Mapping[str, Any],
    source: str | os.PathLike[str],
    image_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """A copy of a hand-made COCO dict with what the loader and pycocotools need filled in.

    Fills, where missing: an image's ``width`` / ``height`` (read from the file under
    ``image_dir``, as stored), an annotation's ``id`` (after the largest given one),
    ``iscrowd`` (0) and ``area`` (``w * h``, the box area) and a category's ``name`` (its id).
    Ids of images and categories may be any integers. What cannot be filled (an image without
    ``id`` or ``file_name``, an annotation without ``image_id``, ``category_id`` or four-number
    ``bbox``, an id given twice) raises :class:`DatasetError` naming ``source`` and the record.
    The box checks are :mod:`eiou.data.validate`'s.
    """
    out = copy.deepcopy(dict(data))
    images, annotations = out.get("images"), out.get("annotations", [])
    categories = out.get("categories")
    if not isinstance(images, list) or not isinstance(categories, list):
        raise DatasetError(f"{source} is not COCO JSON (needs 'images' and 'categories' lists)")
    if not isinstance(annotations, list):
        raise DatasetError(f"{source}: 'annotations' is not a list")
    filled: list[str] = []

    def need_int(record: Mapping[str, Any], key: str, where: str) -> int:
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DatasetError(f"{source}: {where} has no integer {key!r} (got {value!r})")
        return value

    seen: set[int] = set()
    for i, image in enumerate(images):
        image_id = need_int(image, "id", f"images[{i}]")
        if image_id in seen:
            raise DatasetError(f"{source}: image id {image_id} is given twice")
        seen.add(image_id)
        if not image.get("file_name"):
            raise DatasetError(f"{source}: image {image_id} has no 'file_name'")
        if not (image.get("width") and image.get("height")):
            if image_dir is None:
                raise DatasetError(f"{source}: image {image_id} has no width/height")
            where = f"{source}: image {image_id}"
            image["width"], image["height"] = _image_size(
                Path(image_dir) / image["file_name"], where
            )
            filled.append("width/height")
    cat_ids: set[int] = set()
    for i, category in enumerate(categories):
        cat_id = need_int(category, "id", f"categories[{i}]")
        if cat_id in cat_ids:
            raise DatasetError(f"{source}: category id {cat_id} is given twice")
        cat_ids.add(cat_id)
        if not category.get("name"):
            category["name"] = str(cat_id)
            filled.append("category name")
    given = [a["id"] for a in annotations if isinstance(a.get("id"), int)]
    if len(set(given)) != len(given):
        raise DatasetError(f"{source}: an annotation id is given twice")
    next_id = max(given, default=0) + 1
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        need_int(ann, "image_id", where)
        need_int(ann, "category_id", where)
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise DatasetError(f"{source}: {where} has no bbox [x, y, w, h] (got {bbox!r})")
        if not isinstance(ann.get("id"), int):
            ann["id"], next_id = next_id, next_id + 1
            filled.append("annotation id")
        if "iscrowd" not in ann:
            ann["iscrowd"] = 0
            filled.append("iscrowd")
        if "area" not in ann:
            try:
                ann["area"] = float(bbox[2]) * float(bbox[3])
            except (TypeError, ValueError):
                ann["area"] = 0.0  # validation names the bad box
            filled.append("area")
    if filled:
        info = dict(out.get("info") or {})
        info["filled_by_eiou"] = sorted(set(filled))
        out["info"] = info
    return out


def prepare_custom_coco(
    out_dir: str | os.PathLike[str],
    splits: Mapping[str, tuple[str | os.PathLike[str], str | os.PathLike[str]]],
) -> list[Path]:
    """Write ``out_dir/<split>.json``, the :func:`normalize_coco` copy of each split's
    annotation file (``splits``: split name -> (annotation file, image folder)).

    The copy freezes the ground truth that evaluation reads; it is written atomically and
    only when its content changes.
    """
    missing = []
    for ann_file, image_dir in splits.values():
        if not Path(ann_file).is_file():
            missing.append(f"annotation file {ann_file}")
        if not Path(image_dir).is_dir():
            missing.append(f"image folder {image_dir}")
    if missing:
        raise DatasetError("COCO dataset incomplete, missing:\n  " + "\n  ".join(missing))
    written = []
    for split, (ann_file, image_dir) in splits.items():
        data = normalize_coco(read_json(ann_file), ann_file, image_dir)
        text = json.dumps(data, separators=(",", ":"))
        target = Path(out_dir) / f"{split}.json"
        if not (target.is_file() and target.read_text(encoding="utf-8") == text):
            write_text(target, text)
        written.append(target)
    return written


@dataclass
class LoadStats:
    """What the loader skipped or repaired (counts)."""

    images: int = 0
    skipped_empty_images: int = 0
    boxes: int = 0
    crowd_boxes: int = 0
    clipped_boxes: int = 0
    dropped_degenerate_boxes: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "notes"}


class CocoDetection(Dataset):
    """Detection dataset over COCO ground truth and image files.

    Args:
        coco: the ground truth (``.dataset`` holds images, annotations, categories).
        image_paths: image id -> image file.
        train: training mode: empty images are skipped (counted in ``.stats``) and
            ``horizontal_flip`` is applied with probability 0.5 (drawn from torch's global RNG,
            so seeding torch makes it reproducible; DataLoader workers get derived seeds).
        horizontal_flip: enable the flip in training mode.
        skip_empty: drop images without non-crowd boxes (default: ``train``).

    Items are ``(image, target)``: ``image`` float32 ``(3, H, W)`` in ``[0, 1]``; ``target``
    has ``boxes`` float32 ``(N, 4)`` xyxy pixels (clipped to the image), ``labels`` int64
    ``(N,)`` in ``1..K`` and ``image_id`` (int). Crowd boxes are not in the targets.
    """

    def __init__(
        self,
        coco: COCO,
        image_paths: Mapping[int, Path],
        *,
        train: bool = False,
        horizontal_flip: bool = True,
        skip_empty: bool | None = None,
    ) -> None:
        self.coco = coco
        self.train = bool(train)
        self.horizontal_flip = bool(horizontal_flip)
        categories = sorted(coco.dataset["categories"], key=lambda c: c["id"])
        self.label_to_category_id: dict[int, int] = {
            i + 1: int(c["id"]) for i, c in enumerate(categories)
        }
        self.category_id_to_label = {c: lab for lab, c in self.label_to_category_id.items()}
        self.class_names: list[str] = [str(c["name"]) for c in categories]
        self.image_paths = {int(k): Path(v) for k, v in image_paths.items()}
        self.stats = LoadStats()
        skip_empty = self.train if skip_empty is None else skip_empty
        self._targets: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.ids: list[int] = []
        for image in sorted(coco.dataset["images"], key=lambda im: im["id"]):
            boxes, labels = self._annotations_to_target(image)
            if skip_empty and len(boxes) == 0:
                self.stats.skipped_empty_images += 1
                continue
            self._targets[int(image["id"])] = (boxes, labels)
            self.ids.append(int(image["id"]))
        self.stats.images = len(self.ids)
        if self.stats.skipped_empty_images or self.stats.clipped_boxes:
            log.info("dataset load: %s", self.stats.as_dict())

    def _annotations_to_target(self, image: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        width, height = float(image["width"]), float(image["height"])
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image["id"], []):
            if ann.get("iscrowd", 0):
                self.stats.crowd_boxes += 1
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1, x2, y2 = x, y, x + w, y + h
            cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
            cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
            if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
                self.stats.clipped_boxes += 1
            if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
                self.stats.dropped_degenerate_boxes += 1
                continue
            if ann["category_id"] not in self.category_id_to_label:
                raise DatasetError(
                    f"annotation {ann.get('id')} of image {image['id']} has unknown "
                    f"category_id {ann['category_id']}"
                )
            boxes.append((cx1, cy1, cx2, cy2))
            labels.append(self.category_id_to_label[ann["category_id"]])
            self.stats.boxes += 1
        return (
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(labels, dtype=torch.int64),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: int) -> torch.Tensor:
        """The image as float32 ``(3, H, W)`` in ``[0, 1]``."""
        path = self.image_paths[image_id]
        rgb = read_image_rgb(path)
        info = self.coco.imgs[image_id]
        if rgb.size != (info["width"], info["height"]):
            raise DatasetError(
                f"image {path} is {rgb.size[0]}x{rgb.size[1]} but its annotation says "
                f"{info['width']}x{info['height']}"
            )
        data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        return data.view(rgb.size[1], rgb.size[0], 3).permute(2, 0, 1).float().div_(255.0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        image = self.load_image(image_id)
        boxes, labels = self._targets[image_id]
        boxes = boxes.clone()
        if self.train and self.horizontal_flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
            width = image.shape[-1]
            boxes = torch.stack(
                [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=-1
            )
        return image, {"boxes": boxes, "labels": labels.clone(), "image_id": image_id}


def image_paths_for(data: Mapping[str, Any], image_dir: str | os.PathLike[str]) -> dict[int, Path]:
    """image id -> ``image_dir / file_name`` for every image of a COCO dict."""
    base = Path(image_dir)
    return {int(im["id"]): base / im["file_name"] for im in data["images"]}
