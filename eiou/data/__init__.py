"""Datasets: generated shapes, PASCAL VOC and COCO, all read as COCO JSON plus images.

:func:`build_dataset` is the one entry point. Items are ``(image, target)``: ``image`` float32
``(3, H, W)`` in ``[0, 1]``; ``target`` has ``boxes`` float32 ``(N, 4)`` xyxy pixels,
``labels`` int64 ``(N,)`` in ``1..K`` (0 is the background) and ``image_id`` (int). The
dataset exposes ``.coco`` (``pycocotools.coco.COCO`` of the split's ground truth),
``.label_to_category_id`` and ``.class_names`` (index = label - 1), and ``.stats`` (what
loading skipped or clipped).

Data config keys (``data_cfg``, the ``data`` section of a run spec):

``kind``
    ``synthetic``, ``voc`` or ``coco``.
``root``
    synthetic: folder the images are generated into; voc: the ``VOCdevkit`` folder or its
    parent, or one VOC-format folder holding ``Annotations/`` (any dataset; see
    :mod:`eiou.data.voc`); coco: the folder holding ``annotations/`` and ``train2017/`` etc.
``annotations``
    folder of the prepared ``<split>.json`` files (``eiou data`` writes them); default
    ``root``. Synthetic and VOC splits missing there are generated / converted on first use.
``train_splits``, ``test_split``, ``val_split``
    what the split names ``"train"``, ``"test"`` and ``"val"`` stand for (a list is merged
    into one dataset, e.g. VOC07+12 trainval). Any concrete split name may also be passed.
``horizontal_flip``
    flip training images with probability 0.5 (default true).
``holdout``
    ``{fraction, seed}`` or absent: a validation split carved from the training data. Then
    ``"train"`` is the training splits without the held-out images and ``"val"`` the
    held-out images (:func:`carve_holdout`: a seeded, machine-independent choice of
    ``round(fraction * N)`` images). The test split is never touched.
synthetic: ``seed``, ``num_<split>``, ``image_size``, ``num_classes``, ``max_objects``
    see :mod:`eiou.data.synthetic`.
voc: ``use_difficult``, ``classes``
    ``use_difficult`` default false: difficult objects are ignore regions; ``classes``: a
    list of names, or ``auto`` (the sorted names in the ``train_splits``' annotations),
    default the 20 VOC classes (see :mod:`eiou.data.voc`).
coco: ``splits`` or split names
    ``splits`` maps split names to ``{annotations: <COCO JSON file>, images: <folder>}``
    (any COCO-format dataset: any category ids, images without boxes allowed); other
    names are the 2017 layout under ``root``: ``train2017``, ``val2017``, ``test-dev2017``
    (no ground truth), ``test2017``.

Images are read as 8-bit RGB in their stored orientation (EXIF orientation ignored; see
:mod:`eiou.data.coco`).

Other keys (``name``, ``has_ground_truth``, ...) are ignored here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from eiou.data import coco as _coco
from eiou.data import synthetic as _synthetic
from eiou.data import voc as _voc
from eiou.data.coco import CocoDetection, DatasetError, load_coco, merge_coco
from eiou.data.validate import ValidationReport, validate_coco, validate_dataset

__all__ = [
    "KINDS",
    "CocoDetection",
    "DatasetError",
    "ValidationReport",
    "build_dataset",
    "carve_holdout",
    "collate_fn",
    "resolve_splits",
    "split_sources",
    "validate_coco",
    "validate_dataset",
    "voc_options",
]

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("synthetic", "voc", "coco")


def resolve_splits(data_cfg: Mapping[str, Any], split: str | Sequence[str]) -> list[str]:
    """Concrete split names: ``"train"`` -> ``train_splits``, ``"test"`` -> ``test_split``,
    ``"val"`` -> ``val_split`` when the config defines them; a list is taken as given."""
    if not isinstance(split, str):
        return [str(s) for s in split]
    train_splits = list(data_cfg.get("train_splits") or [])
    if split == "train" and train_splits:
        return [str(s) for s in train_splits]
    for alias in ("test", "val"):
        if split == alias and data_cfg.get(f"{alias}_split"):
            return [str(data_cfg[f"{alias}_split"])]
    return [split]


def _annotations_dir(data_cfg: Mapping[str, Any]) -> Path:
    return Path(data_cfg.get("annotations") or data_cfg["root"])


def split_sources(
    data_cfg: Mapping[str, Any], split: str
) -> tuple[dict[str, Any], dict[int, Path]]:
    """``(COCO dict, image id -> image file)`` of one concrete split, preparing it if needed
    (synthetic: generate; voc: convert)."""
    kind = data_cfg.get("kind")
    custom = dict(data_cfg.get("splits") or {})
    if kind == "coco" and split in custom:
        return _custom_coco_sources(data_cfg, split, custom[split])
    if "root" not in data_cfg:
        known = f" (the data config's splits: {', '.join(custom)})" if custom else ""
        raise DatasetError(f"data config has no 'root' for split {split!r}{known}")
    root = Path(data_cfg["root"])
    ann_dir = _annotations_dir(data_cfg)
    json_path = ann_dir / f"{split}.json"
    if kind == "synthetic":
        num = int(data_cfg.get(f"num_{split}", _synthetic.default_split_size(split)))
        options = {k: data_cfg[k] for k in _synthetic.DEFAULT_OPTIONS if k in data_cfg}
        if not _synthetic.is_complete(root, split, num, options, ann_dir):
            log.info("generating synthetic split %s under %s", split, root)
            _synthetic.generate(root, {split: num}, options, out_dir=ann_dir, progress=False)
        image_dir = root / split
    elif kind == "voc":
        _voc.convert_voc(root, ann_dir, [split], progress=False, **voc_options(data_cfg))
        image_dir = _voc.image_root(root)
    elif kind == "coco":
        raw_json, image_dir = _coco.coco_split_paths(root, split)
        if not json_path.is_file():
            json_path = raw_json
    else:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {', '.join(KINDS)}")
    data = _coco.read_json(json_path)
    return data, _coco.image_paths_for(data, image_dir)


def voc_options(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`eiou.data.voc.convert_voc` options of a VOC data config: ``use_difficult``,
    ``classes`` (default the 20 VOC classes) and, for ``classes: auto``, the training
    splits the names are read from."""
    classes = data_cfg.get("classes")
    options: dict[str, Any] = {"use_difficult": _as_bool(data_cfg.get("use_difficult", False))}
    if classes is not None:
        options["classes"] = classes if isinstance(classes, str) else list(classes)
        options["classes_from"] = list(data_cfg.get("train_splits") or [])
    return options


def _custom_coco_sources(
    data_cfg: Mapping[str, Any], split: str, source: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[int, Path]]:
    """A split of ``splits``: the prepared copy when ``eiou data coco`` wrote one, else the
    annotation file itself, normalised (:func:`eiou.data.coco.normalize_coco`)."""
    image_dir = Path(source["images"])
    prepared = (
        Path(data_cfg["annotations"]) / f"{split}.json" if data_cfg.get("annotations") else None
    )
    if prepared is not None and prepared.is_file():
        data = _coco.read_json(prepared)
    else:
        data = _coco.normalize_coco(
            _coco.read_json(source["annotations"]), source["annotations"], image_dir
        )
    return data, _coco.image_paths_for(data, image_dir)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise DatasetError(f"not a boolean: {value!r}")
    return bool(value)


def carve_holdout(
    data: Mapping[str, Any], fraction: float, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(kept, held_out)``: a COCO dict split by image into two disjoint COCO dicts.

    The held-out images are the ``max(1, round(fraction * N))`` images whose
    ``sha256(f"{seed}:{image_id}")`` is smallest: the same on every machine and in every
    process, independent of the images' order, and stable when images are added (an image
    stays on its side unless the count changes).
    """
    if not 0 < fraction < 1:
        raise DatasetError(f"holdout fraction must be in (0, 1), got {fraction!r}")
    images = list(data["images"])
    if len(images) < 2:
        raise DatasetError("a holdout needs at least 2 training images")

    def key(image: Mapping[str, Any]) -> str:
        return hashlib.sha256(f"{seed}:{image['id']}".encode()).hexdigest()

    count = min(len(images) - 1, max(1, round(fraction * len(images))))
    held = {im["id"] for im in sorted(images, key=key)[:count]}

    def part(keep: bool) -> dict[str, Any]:
        out = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        out["images"] = [im for im in images if (im["id"] in held) != keep]
        out["annotations"] = [
            a for a in data.get("annotations", []) if (a["image_id"] in held) != keep
        ]
        return out

    return part(True), part(False)


def build_dataset(
    data_cfg: Mapping[str, Any], split: str | Sequence[str], train: bool
) -> CocoDetection:
    """The dataset of ``split`` (see the module docstring for ``data_cfg`` and the items).

    ``split`` may be ``"train"``, ``"test"``, ``"val"`` (the held-out part of the training
    data, when ``data_cfg`` has a ``holdout``) or concrete split names. With ``train``:
    images without (non-crowd) boxes are skipped and counted in ``.stats``, and horizontal
    flips are applied when ``horizontal_flip`` is on.
    """
    holdout = data_cfg.get("holdout")
    carve = holdout if split in ("train", "val") else None
    names = resolve_splits(data_cfg, "train" if carve else split)
    parts, image_paths = [], {}
    for name in names:
        data, paths = split_sources(data_cfg, name)
        parts.append(data)
        image_paths.update(paths)
    data = parts[0] if len(parts) == 1 else merge_coco(parts, names)
    if carve:
        kept, held = carve_holdout(data, float(carve["fraction"]), int(carve["seed"]))
        data = kept if split == "train" else held
    dataset = CocoDetection(
        load_coco(data),
        image_paths,
        train=train,
        horizontal_flip=_as_bool(data_cfg.get("horizontal_flip", True)),
    )
    dataset.split_names = names
    return dataset


def collate_fn(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """DataLoader collate: images and targets as two lists (sizes may differ)."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets
