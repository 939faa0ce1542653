"""Generated shapes: a small detection dataset where localisation matters, from a seed.

Each image (``image_size`` x ``image_size`` RGB PNG) has a noisy low-saturation background
with grey clutter (lines, outlines, specks) and 1..``max_objects`` filled, sharp-edged
(not anti-aliased) shapes. Each class has its own shape AND colour family:

    rectangle/red, ellipse/green, triangle/blue, diamond/yellow, cross/magenta,
    ring/cyan, hexagon/orange, trapezoid/purple            (``num_classes`` <= 8)

Object sizes are drawn from COCO's three area ranges in turn (small < 32², medium,
large > 96² when the image is big enough) with aspect ratios from 1/3 to 3. Objects may
overlap, but a placement is rejected if it would hide more than half of an earlier object or
change the tight box of its visible pixels: every box is therefore both the tight box of the
object's full drawn mask and of its visible pixels.

Boxes: COCO ``[x, y, w, h]`` in continuous pixels (pixel column ``i`` covers ``[i, i+1)``),
i.e. the exact tight box of the drawn mask. ``area`` is the box area ``w * h``. Each
annotation also records how it was drawn (``shape``: PIL call and coordinates, ``color``),
so the boxes can be checked against an independent rendering.

On disk, under ``root`` (images) and ``out_dir`` (JSON, default ``root``)::

    <root>/<split>/000001.png ...      <out_dir>/<split>.json      <out_dir>/<split>.complete.json

Every file is written atomically; ``<split>.complete.json`` (parameters and the JSON's
SHA-256) is written last, so a half-written split is never taken for a finished one.
Generation is deterministic: the same parameters give byte-identical JSON and identical
pixels, and each split has its own random stream (``seed``, split name), so adding a split
changes no other.

Options (data config keys of kind ``synthetic``): ``seed`` (int, default 0),
``num_<split>`` (images in that split; default 256 for ``train``, 64 otherwise),
``image_size`` (pixels, default 128), ``num_classes`` (1..8, default 3),
``max_objects`` (per image, default 5).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from eiou.io import atomic_open, write_json

__all__ = [
    "CLASSES",
    "DEFAULT_OPTIONS",
    "default_split_size",
    "generate",
    "is_complete",
    "render_shape_mask",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1

#: (class name, base RGB colour); colours are saturated, the background never is.
CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("rectangle", (220, 40, 40)),
    ("ellipse", (40, 190, 60)),
    ("triangle", (40, 80, 230)),
    ("diamond", (225, 205, 30)),
    ("cross", (210, 50, 210)),
    ("ring", (30, 200, 215)),
    ("hexagon", (240, 140, 20)),
    ("trapezoid", (130, 40, 200)),
)

DEFAULT_OPTIONS: dict[str, Any] = {
    "seed": 0,
    "image_size": 128,
    "num_classes": 3,
    "max_objects": 5,
}
_MIN_SIDE = 5
_MAX_VISIBLE_LOSS = 0.5
_PLACEMENT_TRIES = 30


def default_split_size(split: str) -> int:
    """Images in ``split`` when ``num_<split>`` is not given: 256 for train, 64 otherwise."""
    return 256 if split == "train" else 64


def render_shape_mask(shape: Mapping[str, Any], image_size: int) -> np.ndarray:
    """Boolean ``(image_size, image_size)`` mask of one annotation's ``shape`` record."""
    mask = Image.new("1", (image_size, image_size), 0)
    draw = ImageDraw.Draw(mask)
    kind, xy = shape["draw"], shape["xy"]
    if kind == "rectangle":
        draw.rectangle(xy, fill=1)
    elif kind == "ellipse":
        draw.ellipse(xy, fill=1)
    elif kind == "ring":
        draw.ellipse(xy, outline=1, width=int(shape["width"]))
    elif kind == "polygon":
        draw.polygon([tuple(p) for p in xy], fill=1)
    else:
        raise ValueError(f"unknown shape drawing {kind!r}")
    return np.array(mask, dtype=bool)


def _shape_record(name: str, x0: int, y0: int, w: int, h: int, rng: np.random.Generator) -> dict:
    """How to draw class ``name`` inside the pixel block ``x0..x0+w-1``, ``y0..y0+h-1``."""
    x1, y1 = x0 + w - 1, y0 + h - 1
    xm, ym = (x0 + x1) / 2.0, (y0 + y1) / 2.0

    def poly(points: Sequence[tuple[float, float]]) -> dict:
        return {"draw": "polygon", "xy": [[round(px), round(py)] for px, py in points]}

    if name == "rectangle":
        return {"draw": "rectangle", "xy": [x0, y0, x1, y1]}
    if name == "ellipse":
        return {"draw": "ellipse", "xy": [x0, y0, x1, y1]}
    if name == "ring":
        width = max(2, round(min(w, h) * float(rng.uniform(0.15, 0.3))))
        return {"draw": "ring", "xy": [x0, y0, x1, y1], "width": width}
    if name == "triangle":
        apex = x0 + float(rng.uniform(0.0, 1.0)) * (x1 - x0)
        if rng.uniform() < 0.5:
            return poly([(apex, y0), (x0, y1), (x1, y1)])
        return poly([(apex, y1), (x0, y0), (x1, y0)])
    if name == "diamond":
        return poly([(xm, y0), (x1, ym), (xm, y1), (x0, ym)])
    if name == "cross":
        tx, ty = (x1 - x0) / 6.0, (y1 - y0) / 6.0
        return poly([
            (xm - tx, y0), (xm + tx, y0), (xm + tx, ym - ty), (x1, ym - ty), (x1, ym + ty),
            (xm + tx, ym + ty), (xm + tx, y1), (xm - tx, y1), (xm - tx, ym + ty), (x0, ym + ty),
            (x0, ym - ty), (xm - tx, ym - ty),
        ])  # fmt: skip
    if name == "hexagon":
        q = (x1 - x0) / 4.0
        return poly([(x0 + q, y0), (x1 - q, y0), (x1, ym), (x1 - q, y1), (x0 + q, y1), (x0, ym)])
    if name == "trapezoid":
        q = (x1 - x0) / 4.0
        return poly([(x0 + q, y0), (x1 - q, y0), (x1, y1), (x0, y1)])
    raise ValueError(f"unknown class {name!r}")


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` of the True pixels, continuous-pixel convention; None if empty."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    return (
        int(cols[0]),
        int(rows[0]),
        int(cols[-1] - cols[0] + 1),
        int(rows[-1] - rows[0] + 1),
    )


def _sample_size(rng: np.random.Generator, size: int, scale: int) -> tuple[int, int]:
    """Box ``(w, h)``: sqrt-area uniform in COCO's small/medium/large range ``scale``."""
    limit = size - 2
    ranges = [(_MIN_SIDE + 1, 30), (34, 94), (98, 0.95 * limit)]
    lo, hi = ranges[scale]
    side = float(rng.uniform(lo, max(lo, hi)))
    max_aspect = 3.0 if scale < 2 else 1.5
    log_aspect = float(rng.uniform(-math.log(max_aspect), math.log(max_aspect)))
    w = round(side * math.exp(log_aspect / 2))
    h = round(side * math.exp(-log_aspect / 2))
    return int(min(max(w, _MIN_SIDE), limit)), int(min(max(h, _MIN_SIDE), limit))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Low-saturation background: a grey gradient with a slight tint, noise and clutter."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1)
    base = rng.uniform(70, 170) + rng.uniform(-40, 40) * xx + rng.uniform(-40, 40) * yy
    tint = rng.uniform(-8, 8, size=3)
    noise = rng.normal(0.0, 8.0, size=(size, size, 1)) + rng.normal(0.0, 3.0, size=(size, size, 3))
    pixels = np.clip(base[..., None] + tint + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        grey = int(rng.integers(30, 226))
        colour = (grey, grey, grey)
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, 4))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 3)))
        elif kind == 1:
            draw.rectangle(
                [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=colour, width=1
            )
        else:
            r = int(rng.integers(1, 3))
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
    return image


def _render_image(
    rng: np.random.Generator, size: int, num_classes: int, max_objects: int
) -> tuple[Image.Image, list[dict]]:
    """One image and its objects (class index, box, shape record, colour), in drawing order."""
    image = _background(rng, size)
    scales = [0, 1, 2] if size >= 104 else [0, 1]
    objects: list[dict] = []
    masks: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(0, num_classes))
        name, base = CLASSES[cls]
        for _try in range(_PLACEMENT_TRIES):
            w, h = _sample_size(rng, size, int(rng.choice(scales)))
            x0 = int(rng.integers(0, size - w + 1))
            y0 = int(rng.integers(0, size - h + 1))
            shape = _shape_record(name, x0, y0, w, h, rng)
            mask = render_shape_mask(shape, size)
            box = _tight_box(mask)
            if box is None or box[2] < 2 or box[3] < 2:
                continue
            if _placement_ok(masks, objects, mask):
                break
        else:
            continue
        colour = [int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in base]
        objects.append({"class": cls, "bbox": list(box), "shape": shape, "color": colour})
        masks.append(mask)
    pixels = np.array(image)
    for obj, mask in zip(objects, masks, strict=True):
        pixels[mask] = obj["color"]
    return Image.fromarray(pixels, "RGB"), objects


def _placement_ok(masks: list[np.ndarray], objects: list[dict], new: np.ndarray) -> bool:
    """Whether drawing ``new`` on top keeps every earlier object's visible box and >= half
    of its pixels."""
    cover = new.copy()
    for mask, obj in zip(reversed(masks), reversed(objects), strict=True):
        visible = mask & ~cover
        if visible.sum() < (1 - _MAX_VISIBLE_LOSS) * mask.sum():
            return False
        if _tight_box(visible) != tuple(obj["bbox"]):
            return False
        cover |= mask
    return True


def _split_seed(seed: int, split: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), zlib.crc32(split.encode("utf-8"))])


def _parameters(split: str, num_images: int, options: Mapping[str, Any]) -> dict[str, Any]:
    opts = {**DEFAULT_OPTIONS, **{k: options[k] for k in DEFAULT_OPTIONS if k in options}}
    if not 1 <= int(opts["num_classes"]) <= len(CLASSES):
        raise ValueError(f"num_classes must be in 1..{len(CLASSES)}, got {opts['num_classes']}")
    if int(opts["image_size"]) < 24:
        raise ValueError(f"image_size must be >= 24, got {opts['image_size']}")
    if int(num_images) < 1 or int(opts["max_objects"]) < 1:
        raise ValueError("num_images and max_objects must be >= 1")
    return {
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "num_images": int(num_images),
        **{k: int(v) for k, v in opts.items()},
    }


def _marker(out_dir: Path, split: str) -> Path:
    return out_dir / f"{split}.complete.json"


def is_complete(
    root: str | os.PathLike[str],
    split: str,
    num_images: int,
    options: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> bool:
    """Whether ``split`` was fully generated with these parameters (marker, JSON checksum and
    every image file present)."""
    import json

    out = Path(out_dir if out_dir is not None else root)
    marker = _marker(out, split)
    json_path = out / f"{split}.json"
    if not (marker.is_file() and json_path.is_file()):
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    params = _parameters(split, num_images, options or {})
    if recorded.get("parameters") != params:
        return False
    if hashlib.sha256(json_path.read_bytes()).hexdigest() != recorded.get("json_sha256"):
        return False
    images = Path(root) / split
    return all((images / f"{i:06d}.png").is_file() for i in range(1, params["num_images"] + 1))


def generate(
    root: str | os.PathLike[str],
    splits: Mapping[str, int],
    options: Mapping[str, Any] | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate each split (name -> number of images); return split -> COCO JSON path.

    ``options``: ``seed``, ``image_size``, ``num_classes``, ``max_objects`` (see the module
    docstring). A split already complete with the same parameters is skipped unless
    ``force``.
    """
    options = dict(options or {})
    out = Path(out_dir if out_dir is not None else root)
    paths: dict[str, Path] = {}
    for split, num_images in splits.items():
        params = _parameters(split, num_images, options)
        json_path = out / f"{split}.json"
        paths[split] = json_path
        if not force and is_complete(root, split, num_images, options, out):
            log.info("synthetic split %s is complete; not regenerated", split)
            continue
        _marker(out, split).unlink(missing_ok=True)
        data = _generate_split(Path(root) / split, params, progress)
        write_json(json_path, data)
        write_json(
            _marker(out, split),
            {
                "parameters": params,
                "json_sha256": hashlib.sha256(json_path.read_bytes()).hexdigest(),
            },
        )
    return paths


def _generate_split(image_dir: Path, params: Mapping[str, Any], progress: bool) -> dict:
    size, split = params["image_size"], params["split"]
    rng = np.random.default_rng(_split_seed(params["seed"], split))
    images, annotations = [], []
    for image_id in tqdm(
        range(1, params["num_images"] + 1),
        desc=f"synthetic {split}",
        unit="image",
        disable=not progress,
    ):
        image, objects = _render_image(rng, size, params["num_classes"], params["max_objects"])
        file_name = f"{image_id:06d}.png"
        with atomic_open(image_dir / file_name, "wb") as handle:
            image.save(handle, format="PNG", optimize=False, compress_level=6)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for obj in objects:
            x, y, w, h = obj["bbox"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["class"] + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "shape": obj["shape"],
                    "color": obj["color"],
                }
            )
    return {
        "info": {
            "description": "eiou synthetic shapes",
            "parameters": dict(params),
            "box_convention": "bbox [x, y, w, h], continuous pixels, tight box of the mask",
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, (name, _) in enumerate(CLASSES[: params["num_classes"]])
        ],
    }
