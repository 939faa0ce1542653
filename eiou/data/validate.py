"""Check a dataset before training: fail at once with every problem listed, never hours in.

Errors (collected, then raised together as one :class:`~eiou.data.coco.DatasetError`):
missing image files or folders, images PIL cannot read or decode, 16-bit or float images,
image sizes that differ from the annotation (an EXIF-rotated image annotated in its displayed
orientation is named as such), duplicate image ids, annotations of unknown images or
categories, non-numeric boxes, inverted boxes (negative width or height) and boxes far outside
the image.

Skipped or repaired and counted (in the returned :class:`ValidationReport`): images without
any non-crowd box (skipped in training), boxes slightly outside the image (clipped by the
loader), zero-size boxes (dropped), crowd / difficult boxes (ignore regions), and images
with an EXIF orientation tag (read as stored, the tag ignored: see :mod:`eiou.data.coco`).

"Slightly outside" means by at most ``outside_tolerance`` times the image side, and at least
2 pixels; beyond that the annotation is taken to be wrong.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from eiou.data.coco import EXIF_ORIENTATION, DatasetError, pixel_mode_problem

__all__ = ["ValidationReport", "validate_coco", "validate_dataset"]

log = logging.getLogger(__name__)

#: Above this many images, ``decode_images="auto"`` only reads headers (and PNG checksums).
AUTO_DECODE_LIMIT = 20_000
_MAX_LISTED = 30


@dataclass
class ValidationReport:
    """Counts from :func:`validate_coco`; ``errors`` is empty when it returned normally."""

    name: str = ""
    images: int = 0
    annotations: int = 0
    crowd_annotations: int = 0
    empty_images: int = 0
    clipped_boxes: int = 0
    degenerate_boxes: int = 0
    exif_oriented_images: int = 0
    images_decoded: bool = False
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merge(self, other: ValidationReport) -> ValidationReport:
        """The sum of two reports (names joined)."""
        out = ValidationReport(name=" + ".join(n for n in (self.name, other.name) if n))
        for key in ("images", "annotations", "crowd_annotations", "empty_images",
                    "clipped_boxes", "degenerate_boxes", "exif_oriented_images"):  # fmt: skip
            setattr(out, key, getattr(self, key) + getattr(other, key))
        out.images_decoded = self.images_decoded and other.images_decoded
        out.errors = self.errors + other.errors
        return out


def _check_image(path: Path, width: int, height: int, decode: bool) -> tuple[str | None, bool]:
    """``(problem or None, whether the image has an EXIF orientation other than 1)``."""
    if not path.is_file():
        return f"missing image file: {path}", False
    try:
        with Image.open(path) as img:
            size, mode = img.size, img.mode
            orientation = int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)
            if decode:
                img.load()
            else:
                img.verify()
    except Exception as err:  # PIL raises many types for broken files
        return f"unreadable image {path}: {type(err).__name__}: {err}", False
    oriented = orientation != 1
    if (problem := pixel_mode_problem(mode)) is not None:
        return f"unusable image {path}: {problem}", oriented
    if size != (width, height):
        message = f"image {path} is {size[0]}x{size[1]}, annotation says {width}x{height}"
        if orientation in (5, 6, 7, 8) and size == (height, width):
            message += (
                f" (its EXIF orientation {orientation} displays it rotated: the annotation is "
                "of the displayed image, but eiou reads pixels as stored; save the image "
                "rotated, e.g. with PIL.ImageOps.exif_transpose, so both agree)"
            )
        return message, oriented
    return None, oriented


def validate_coco(
    data: Mapping[str, Any],
    image_paths: Mapping[int, Path],
    *,
    name: str = "",
    decode_images: bool | Literal["auto"] = "auto",
    outside_tolerance: float = 0.02,
    require_annotations: bool = True,
    raise_errors: bool = True,
) -> ValidationReport:
    """Validate one COCO dict and its image files (image id -> path).

    ``decode_images``: fully decode every image (catches truncated JPEGs); ``"auto"`` does
    so up to :data:`AUTO_DECODE_LIMIT` images. ``require_annotations``: an error if no image
    has a usable box (a training split). Raises :class:`DatasetError` listing every error
    unless ``raise_errors`` is false.
    """
    report = ValidationReport(name=name)
    errors = report.errors
    images = list(data.get("images", []))
    categories = {c["id"] for c in data.get("categories", [])}
    if not images:
        errors.append(f"{name}: no images")
    if not categories:
        errors.append(f"{name}: no categories")
    by_id: dict[int, Mapping[str, Any]] = {}
    for image in images:
        if image["id"] in by_id:
            errors.append(f"{name}: duplicate image id {image['id']}")
        by_id[image["id"]] = image
    report.images = len(by_id)

    decode = len(by_id) <= AUTO_DECODE_LIMIT if decode_images == "auto" else bool(decode_images)
    report.images_decoded = decode
    folders = {p.parent for p in image_paths.values()}
    missing_folders = sorted(str(f) for f in folders if not f.is_dir())
    for folder in missing_folders:
        errors.append(f"missing image folder: {folder}")
    if not missing_folders:
        jobs = []
        for image_id, image in by_id.items():
            path = image_paths.get(image_id)
            if path is None:
                errors.append(f"{name}: no file for image id {image_id}")
                continue
            jobs.append((Path(path), int(image["width"]), int(image["height"])))
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for problem, oriented in pool.map(lambda job: _check_image(*job, decode), jobs):
                if problem:
                    errors.append(problem)
                report.exif_oriented_images += int(oriented)

    usable: dict[int, int] = dict.fromkeys(by_id, 0)
    for ann in data.get("annotations", []):
        report.annotations += 1
        where = f"{name}: annotation {ann.get('id')} (image {ann.get('image_id')})"
        image = by_id.get(ann.get("image_id"))
        if image is None:
            errors.append(f"{where}: unknown image id")
            continue
        if ann.get("category_id") not in categories:
            errors.append(f"{where}: unknown category id {ann.get('category_id')}")
            continue
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            errors.append(f"{where}: bbox {bbox!r} is not four numbers")
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            errors.append(f"{where}: bbox {bbox!r} is not finite")
            continue
        if w < 0 or h < 0:
            errors.append(f"{where}: inverted bbox {bbox!r} (negative width or height)")
            continue
        if ann.get("iscrowd", 0):
            report.crowd_annotations += 1
            continue
        width, height = float(image["width"]), float(image["height"])
        over_x = max(-x, x + w - width, 0.0)
        over_y = max(-y, y + h - height, 0.0)
        if over_x > max(2.0, outside_tolerance * width) or over_y > max(
            2.0, outside_tolerance * height
        ):
            errors.append(f"{where}: bbox {bbox!r} is far outside the {width:g}x{height:g} image")
            continue
        if over_x > 0 or over_y > 0:
            report.clipped_boxes += 1
        cw = min(x + w, width) - max(x, 0.0)
        ch = min(y + h, height) - max(y, 0.0)
        if cw <= 0 or ch <= 0:
            report.degenerate_boxes += 1
            continue
        usable[image["id"]] += 1
    report.empty_images = sum(1 for n in usable.values() if n == 0)
    if require_annotations and by_id and report.empty_images == len(by_id):
        errors.append(f"{name}: no image has a usable box (nothing to train on)")

    if errors and raise_errors:
        raise DatasetError(_format_errors(name, errors))
    return report


def _format_errors(name: str, errors: Sequence[str]) -> str:
    listed = list(errors[:_MAX_LISTED])
    if len(errors) > _MAX_LISTED:
        listed.append(f"... and {len(errors) - _MAX_LISTED} more")
    return f"dataset {name or ''} failed validation ({len(errors)} problems):\n  " + "\n  ".join(
        listed
    )


def validate_dataset(
    data_cfg: Mapping[str, Any],
    split: str | Sequence[str],
    *,
    train: bool = True,
    decode_images: bool | Literal["auto"] = "auto",
    outside_tolerance: float = 0.02,
) -> ValidationReport:
    """Validate every concrete split behind ``split`` (see :func:`eiou.data.build_dataset`);
    raise one :class:`DatasetError` listing all problems, or return the summed counts (also
    logged). Missing synthetic / VOC splits are prepared first, like ``build_dataset`` does.
    """
    from eiou.data import resolve_splits, split_sources

    total: ValidationReport | None = None
    errors: list[str] = []
    for name in resolve_splits(data_cfg, split):
        try:
            data, paths = split_sources(data_cfg, name)
        except DatasetError as err:
            errors.append(str(err))
            continue
        report = validate_coco(
            data,
            paths,
            name=name,
            decode_images=decode_images,
            outside_tolerance=outside_tolerance,
            require_annotations=train,
            raise_errors=False,
        )
        errors += report.errors
        total = report if total is None else total.merge(report)
    if errors or total is None:
        raise DatasetError(_format_errors(str(split), errors or ["no splits"]))
    total.errors = []
    log.info("dataset %s validated: %s", total.name, total.as_dict())
    if total.exif_oriented_images:
        log.warning(
            "%d images of %s carry an EXIF orientation tag: eiou reads them as stored (tag "
            "ignored), so their boxes must be in the stored orientation",
            total.exif_oriented_images,
            total.name,
        )
    return total
