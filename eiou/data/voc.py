"""VOC-format annotations (PASCAL VOC or any dataset in its layout) -> COCO JSON, converted
once per split and cached.

Two layouts of ``root``:

- **devkit** (PASCAL VOC itself; ``root`` is the ``VOCdevkit`` folder or a folder holding
  it)::

      VOCdevkit/VOC2007/ImageSets/Main/{trainval,test}.txt
      VOCdevkit/VOC2007/Annotations/<id>.xml
      VOCdevkit/VOC2007/JPEGImages/<id>.jpg
      VOCdevkit/VOC2012/...

  Split names are ``voc_<year>_<imageset>`` (e.g. ``voc_2007_trainval``, ``voc_2012_trainval``,
  ``voc_2007_test``); ``file_name`` is relative to the devkit folder. The paper's training set
  VOC07+12 trainval is the merge of two splits (done by :func:`eiou.data.build_dataset`).
- **folder** (any VOC-format dataset; ``root`` itself holds ``Annotations/``)::

      root/Annotations/<name>.xml   root/JPEGImages/<name>.<ext>   root/ImageSets/Main/<split>.txt

  A split is named after its image-set file, freely (``train``, ``test``, ``site_a``, ...);
  image names need not be numeric; ``file_name`` is relative to ``root``.

Each split becomes ``<out_dir>/<split>.json``.

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
- Classes: the 20 PASCAL VOC classes by default; or the names given (category ids
  ``1..K`` in that order); or ``"auto"``: the sorted names of the objects in the training
  splits' annotations (``classes_from``). A name outside the list is an error naming the file.
- Image file: the annotation's ``<filename>`` when that file exists in ``JPEGImages/``,
  otherwise ``JPEGImages/<name>.<ext>`` with the extension found on disk (any case; ``.jpg``,
  ``.jpeg``, ``.png``, ``.bmp``, ``.tif``, ``.tiff``, ``.webp``, preferred in that order).
- Image size: ``<size>`` when present and positive, else read from the image file (as
  stored: see :mod:`eiou.data.coco` on EXIF orientation).
- Image ids: devkit layout ``<devkit year> * 10**10 + <digits of the name>``
  (``2012_000123`` -> ``2012 * 10**10 + 2012000123``), so ids are unique across VOC2007 and
  VOC2012. Folder layout: the 1-based position of the name in the sorted list of
  ``Annotations/*.xml`` (code-point order), so ids are unique across the folder's splits
  and the same at every conversion, whichever splits are converted; adding or removing
  annotation files renumbers the names after them. Each image record keeps its name
  (``voc_name``).
- Boxes partly outside the image are written as given; the loader clips them and
  :mod:`eiou.data.validate` counts them. ``xmax < xmin`` is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from eiou.data.coco import DatasetError
from eiou.io import write_json

__all__ = [
    "VOC_CLASSES",
    "convert_voc",
    "find_devkit",
    "folder_image_ids",
    "image_root",
    "is_voc_folder",
    "parse_annotation",
    "parse_split",
    "resolve_classes",
    "voc_image_id",
]

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

#: Image extensions looked for beside a name, in order of preference (any case).
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_SPLIT = re.compile(r"^(?:voc_)?(\d{4})_(\w+)$")
_FOLDER_HINT = (
    "for a VOC-format dataset of your own, point root at the folder holding Annotations/, "
    "JPEGImages/ and ImageSets/Main/<split>.txt, and name the splits after those files"
)


def parse_split(split: str) -> tuple[str, str]:
    """``"voc_2007_trainval"`` -> ``("2007", "trainval")``."""
    match = _SPLIT.match(split)
    if not match:
        raise DatasetError(
            f"VOC split {split!r} is not of the form voc_<year>_<imageset> ({_FOLDER_HINT})"
        )
    return match.group(1), match.group(2)


def is_voc_folder(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is one VOC-format folder (the folder layout): it holds
    ``Annotations/``."""
    return (Path(root) / "Annotations").is_dir()


def find_devkit(root: str | os.PathLike[str]) -> Path:
    """The ``VOCdevkit`` folder: ``root`` itself or ``root/VOCdevkit``."""
    root = Path(root)
    if (root / "VOCdevkit").is_dir():
        return root / "VOCdevkit"
    if root.is_dir() and any(p.name.startswith("VOC") for p in root.iterdir()):
        return root
    raise DatasetError(
        f"no VOC devkit at {root} (expected {root}/VOCdevkit/VOC2007 or similar) and no "
        f"{root}/Annotations folder ({_FOLDER_HINT})"
    )


def image_root(root: str | os.PathLike[str]) -> Path:
    """The folder the converted JSON's ``file_name`` are relative to: ``root`` in the
    folder layout, the devkit folder otherwise."""
    return Path(root) if is_voc_folder(root) else find_devkit(root)


def _split_folder(root: Path, split: str) -> tuple[Path, str, str | None]:
    """``(folder holding Annotations/, image set, devkit year or None)`` of ``split``."""
    if is_voc_folder(root):
        if not split or "/" in split or split.startswith("."):
            raise DatasetError(f"VOC split {split!r} is not an image-set name")
        return root, split, None
    devkit = find_devkit(root)
    year, imageset = parse_split(split)
    year_dir = devkit / f"VOC{year}"
    if not year_dir.is_dir():
        raise DatasetError(f"VOC{year} folder not found: {year_dir}")
    return year_dir, imageset, year


def voc_image_id(year: str, name: str) -> int:
    """Integer image id, unique across devkit years (see the module docstring)."""
    digits = name.replace("_", "")
    if not digits.isdigit() or len(digits) > 10:
        raise DatasetError(
            f"VOC{year} image name {name!r} is not numeric; cannot derive an id ({_FOLDER_HINT})"
        )
    return int(year) * 10**10 + int(digits)


def folder_image_ids(folder: str | os.PathLike[str]) -> dict[str, int]:
    """Image ids of the folder layout: name -> 1-based position in the sorted list of
    ``folder/Annotations/*.xml`` names."""
    annotations = Path(folder) / "Annotations"
    names = sorted(p.name[: -len(".xml")] for p in annotations.iterdir() if p.name.endswith(".xml"))
    return {name: i + 1 for i, name in enumerate(names)}


def _image_index(images: Path) -> dict[str, list[Path]]:
    """name -> image files ``images/<name>.<ext>`` on disk, most preferred first."""
    found: dict[str, list[Path]] = {}
    if images.is_dir():
        for entry in os.scandir(images):
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in _IMAGE_EXTENSIONS and entry.is_file():
                found.setdefault(stem, []).append(Path(entry.path))
    for files in found.values():
        files.sort(key=lambda p: (_IMAGE_EXTENSIONS.index(p.suffix.lower()), p.suffix, p.name))
    return found


def _text(node: ET.Element, tag: str, xml_path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{xml_path}: missing <{tag}>")
    return child.text.strip()


def _find_image(
    year_dir: Path, name: str, filename: str | None, index: dict[str, list[Path]] | None
) -> Path:
    images = year_dir / "JPEGImages"
    if filename and (images / filename).is_file():
        return images / filename
    candidates = (index if index is not None else _image_index(images)).get(name)
    if candidates:
        return candidates[0]
    raise DatasetError(
        f"image for {year_dir / 'Annotations' / (name + '.xml')} not found "
        f"(tried {filename or name} and {name} with the extensions "
        f"{'/'.join(_IMAGE_EXTENSIONS)} in any case in {images})"
    )


def parse_annotation(
    xml_path: Path,
    year_dir: Path,
    class_to_id: dict[str, int],
    *,
    images: dict[str, list[Path]] | None = None,
    relative_to: Path | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One VOC XML file -> (COCO image record without id, list of objects).

    ``year_dir`` holds ``JPEGImages/``; ``images`` is its index (name -> files, built here
    when not given); ``file_name`` is relative to ``relative_to`` (default:
    ``year_dir``'s parent, the devkit). Objects are ``{"category_id", "bbox" [x, y, w, h],
    "difficult"}`` (see the module docstring for the coordinate conversion).
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
    image_path = _find_image(year_dir, name, filename, images)
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
            known = ", ".join(class_to_id) if len(class_to_id) <= 30 else f"{len(class_to_id)}"
            raise DatasetError(
                f"{xml_path}: unknown class name {cls!r} (classes: {known}; set the dataset's "
                "classes: to a list of names, or auto for the names in the training splits)"
            )
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
    base = relative_to if relative_to is not None else year_dir.parent
    file_name = image_path.relative_to(base).as_posix()
    return {"file_name": file_name, "width": int(width), "height": int(height)}, objects


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _read_image_set(year_dir: Path, imageset: str) -> list[str]:
    path = year_dir / "ImageSets" / "Main" / f"{imageset}.txt"
    if not path.is_file():
        raise DatasetError(f"VOC image set file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split()[0] for line in lines if line.strip()]


def _object_names(xml_path: Path) -> list[str]:
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DatasetError(f"cannot read annotation {xml_path}: {err}") from err
    return [_text(obj, "name", xml_path) for obj in root.findall("object")]


def resolve_classes(
    root: str | os.PathLike[str],
    classes: Sequence[str] | str | None,
    classes_from: Sequence[str] = (),
) -> tuple[str, ...]:
    """The class names, in category-id order: ``None`` -> the 20 VOC classes; a list as
    given; ``"auto"`` -> the sorted names of every object in the annotations of the splits
    ``classes_from`` (the training splits)."""
    if classes is None:
        return VOC_CLASSES
    if isinstance(classes, str):
        if classes != "auto":
            raise DatasetError(f"classes must be a list of names or 'auto', got {classes!r}")
        if not classes_from:
            raise DatasetError("classes: auto needs the training splits to read the names from")
        names: set[str] = set()
        for split in classes_from:
            folder, imageset, _ = _split_folder(Path(root), split)
            for name in _read_image_set(folder, imageset):
                xml_path = folder / "Annotations" / f"{name}.xml"
                if not xml_path.is_file():
                    raise DatasetError(
                        f"annotation file not found: {xml_path} (listed in {imageset}.txt)"
                    )
                names.update(_object_names(xml_path))
        if not names:
            raise DatasetError(
                f"classes: auto found no object in the splits {', '.join(classes_from)}"
            )
        return tuple(sorted(names))
    resolved = tuple(str(c) for c in classes)
    if not resolved or any(not c for c in resolved) or len(set(resolved)) != len(resolved):
        raise DatasetError(f"classes must be distinct non-empty names, got {list(classes)}")
    return resolved


def _parameters(
    split: str,
    use_difficult: bool,
    classes: Sequence[str] | str,
    classes_from: Sequence[str],
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "converter_version": CONVERTER_VERSION,
        "split": split,
        "use_difficult": bool(use_difficult),
        "classes": classes if isinstance(classes, str) else list(classes),
    }
    if classes == "auto":
        params["classes_from"] = list(classes_from)
    return params


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
    classes: Sequence[str] | str = VOC_CLASSES,
    classes_from: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Convert each VOC split to ``<out_dir>/<split>.json``; return split -> JSON path.

    ``classes``: names (category ids ``1..len(classes)`` in this order) or ``"auto"``: the
    sorted names found in the splits ``classes_from`` (default: ``splits``). A split already
    converted with the same parameters (recorded in ``<split>.complete.json``, written last)
    is not converted again unless ``force``.
    """
    root = Path(root)
    folder_layout = is_voc_folder(root)
    if not folder_layout:
        find_devkit(root)  # a clear error for a wrong root
    classes_from = list(splits if classes_from is None else classes_from)
    out = Path(out_dir)
    class_names: tuple[str, ...] | None = None
    paths: dict[str, Path] = {}
    for split in splits:
        year_dir, imageset, year = _split_folder(root, split)
        params = _parameters(split, use_difficult, classes, classes_from)
        json_path = out / f"{split}.json"
        paths[split] = json_path
        if not force and _is_complete(out, split, params):
            log.info("VOC split %s already converted", split)
            continue
        _marker(out, split).unlink(missing_ok=True)
        if class_names is None:
            class_names = resolve_classes(root, classes, classes_from)
        class_to_id = {name: i + 1 for i, name in enumerate(class_names)}
        names = _read_image_set(year_dir, imageset)
        ids = folder_image_ids(year_dir) if folder_layout else None
        index = _image_index(year_dir / "JPEGImages")
        relative_to = year_dir if folder_layout else year_dir.parent
        images, annotations = [], []
        for name in tqdm(names, desc=f"convert {split}", unit="image", disable=not progress):
            xml_path = year_dir / "Annotations" / f"{name}.xml"
            if not xml_path.is_file():
                raise DatasetError(
                    f"annotation file not found: {xml_path} (listed in {imageset}.txt)"
                )
            record, objects = parse_annotation(
                xml_path, year_dir, class_to_id, images=index, relative_to=relative_to
            )
            if ids is None:
                image_id = voc_image_id(str(year), name)
                images.append({"id": image_id, **record})
            else:
                image_id = ids[name]
                images.append({"id": image_id, **record, "voc_name": name})
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
        info: dict[str, Any] = {
            "description": f"PASCAL VOC{year} {imageset}, converted by eiou",
            "parameters": params,
            "box_convention": "bbox [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]",
            "difficult": "iscrowd=1 (ignored)" if not use_difficult else "ordinary objects",
            "file_name_relative_to": "VOCdevkit",
        }
        if folder_layout:
            info.update(
                description=f"VOC-format {root.name} {imageset}, converted by eiou",
                file_name_relative_to="the VOC folder (holding Annotations/)",
                image_ids="1-based position of voc_name in the sorted Annotations/*.xml names",
            )
        if classes == "auto":
            info["classes"] = "sorted names in the annotations of " + ", ".join(classes_from)
        data = {
            "info": info,
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
