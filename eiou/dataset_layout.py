"""Where PASCAL VOC and COCO 2017 keep their files, checked cheaply before anything runs.

:func:`layout_problems` looks at folders and file sizes only (no annotation is parsed, no
image opened) and imports nothing beyond the standard library, so that planning a workflow
(``eiou.experiments.build_plan``) catches an empty or misplaced dataset root in
milliseconds instead of hours later inside a queued job. The converters
(:mod:`eiou.data.voc`, :mod:`eiou.data.coco`) read the same layout.

- VOC: ``root/VOCdevkit/VOC<year>/`` (or ``root/VOC<year>/``) with ``Annotations/``,
  ``JPEGImages/`` and ``ImageSets/Main/<imageset>.txt`` for each split
  ``voc_<year>_<imageset>``; a VOC-format folder of one's own (``root/Annotations/``):
  ``root/JPEGImages/`` and ``root/ImageSets/Main/<split>.txt`` for any split name.
- COCO: ``root/annotations/<file>`` and ``root/<image folder>/`` per split, as in
  :data:`COCO_SPLITS`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["COCO_SPLITS", "VOC_SPLIT", "layout_problems"]

#: split name -> (annotation file under ``annotations/``, image folder under ``root``).
COCO_SPLITS: dict[str, tuple[str, str]] = {
    "train2017": ("instances_train2017.json", "train2017"),
    "val2017": ("instances_val2017.json", "val2017"),
    "test-dev2017": ("image_info_test-dev2017.json", "test2017"),
    "test2017": ("image_info_test2017.json", "test2017"),
}
#: A VOC split name: ``voc_<year>_<imageset>`` (the ``voc_`` prefix is optional).
VOC_SPLIT = re.compile(r"^(?:voc_)?(\d{4})_(\w+)$")


def _empty_dir(path: Path) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _folder(path: Path, what: str) -> list[str]:
    if not path.is_dir():
        return [f"{what} {path} does not exist"]
    if _empty_dir(path):
        return [f"{what} {path} is empty"]
    return []


def _file(path: Path, what: str) -> list[str]:
    if not path.is_file():
        return [f"{what} {path} does not exist"]
    if path.stat().st_size == 0:
        return [f"{what} {path} is empty"]
    return []


def _voc(root: Path, splits: Iterable[str]) -> list[str]:
    devkit = root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root
    problems: list[str] = []
    for split in splits:
        match = VOC_SPLIT.match(split)
        if not match or (root / "Annotations").is_dir():  # a VOC-format folder of one's own
            problems += _file(root / "ImageSets" / "Main" / f"{split}.txt", "image set")
            problems += _folder(root / "Annotations", "folder")
            problems += _folder(root / "JPEGImages", "folder")
            continue
        year, imageset = match.groups()
        year_dir = devkit / f"VOC{year}"
        if not year_dir.is_dir():
            problems.append(
                f"split {split}: folder {year_dir} does not exist (a VOC devkit year, "
                "holding Annotations/, JPEGImages/ and ImageSets/Main/)"
            )
            continue
        problems += _file(year_dir / "ImageSets" / "Main" / f"{imageset}.txt", "image set")
        problems += _folder(year_dir / "Annotations", "folder")
        problems += _folder(year_dir / "JPEGImages", "folder")
    return list(dict.fromkeys(problems))


def _coco(root: Path, splits: Iterable[str]) -> list[str]:
    problems: list[str] = []
    for split in splits:
        if split not in COCO_SPLITS:
            problems.append(f"unknown COCO split {split!r}; known: {', '.join(COCO_SPLITS)}")
            continue
        annotations, images = COCO_SPLITS[split]
        problems += _file(root / "annotations" / annotations, "annotation file")
        problems += _folder(root / images, "image folder")
    return list(dict.fromkeys(problems))


def layout_problems(kind: str, root: str | os.PathLike[str], splits: Iterable[str]) -> list[str]:
    """What is missing or empty under ``root`` for the ``splits`` of a ``kind`` dataset
    (``voc`` or ``coco``; other kinds have no fixed layout and give ``[]``), one line each,
    naming the file or folder. ``root`` itself must exist."""
    root = Path(root)
    if kind == "voc":
        return _voc(root, splits)
    if kind == "coco":
        return _coco(root, splits)
    return []
