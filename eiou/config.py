"""Run configuration: one YAML file drives ``eiou train`` and ``eiou predict``.

:func:`load_run_config` reads a file (or takes a dict), fills in the defaults below and
validates every key; an error names the offending key (``model.box_loss.power``) and what is
allowed there. The result is a plain dict, written into every checkpoint.

Keys (defaults in brackets)::

    name            run name ["run"]
    seed            seed of the weights, the sampler and the augmentations [0]
    data            passed to eiou.data.build_dataset (kind, root, annotations, train_splits,
                    test_split, horizontal_flip and the kind's options; see eiou.data)
    model:
      engine        torchvision (see eiou.engines) [torchvision]
      detector      faster_rcnn | retinanet [faster_rcnn]
      backbone      tiny | resnet50 | resnet101 | resnext101_64x4d [tiny]
      weights       imagenet | none | path of a backbone state-dict file [none]
      norm          frozen_bn | bn | gn [frozen_bn with weights, gn from scratch]
      trainable_layers  ResNet stages trained, 0..5 [3 with weights, 5 from scratch]
      min_size, max_size   short-side resize and long-side cap, pixels [128, 128]
                    (the paper: 500 / 833 on VOC, 800 / 1333 on COCO)
      anchor_sizes  5 base sizes, one per level [32..512; tiny RetinaNet: 16..256 on P2..P6]
      box_loss:     localisation loss of the second stage (Faster R-CNN) / the head
        name        registry name (smooth_l1, iou, giou, diou, ciou, eiou, smooth_eiou) or
                    a dotted import path [smooth_l1]
        power       CT power, 1 = none, 2 = Smooth-EIoU [the loss's default]
        sot         SOT, IoU family only [the loss's default: false]
        gradient    autograd | paper (EIoU family) [autograd]
        coder       standard | sqrt_area (also decodes at inference) [standard]
        coder_weights  standard coder: its weights [(10, 10, 5, 5) Faster R-CNN, 1s
                    RetinaNet]; sqrt_area: the raw-output scale [10s Faster R-CNN, 1s
                    RetinaNet] (see eiou.engines.torchvision.box_regression)
        weight      loss weight [null: 1 for smooth-L1; IoU family 10 Faster R-CNN,
                    2 RetinaNet; see eiou.engines.torchvision.box_regression]
        ...         any other key is an option of the loss (beta, mode, eps, ...)
      rpn_box_loss  same keys, for the RPN [null: torchvision's smooth-L1, beta 1/9]
      iou_head:     {enabled [false], weight [1.0]}
      scoring:      {method: cls | cls_x_iou | sqrt_cls_x_iou | iou_guided_nms [cls],
                     nms_threshold [0.5], score_threshold [0.05], detections_per_image [100]}
      head_norm     RetinaNet head towers: null | none | gn | bn | frozen_bn [null: gn from
                    scratch, none (torchvision's head) with weights]
      options       extra keyword arguments of torchvision's FasterRCNN / RetinaNet [{}]
    train:
      max_iter [1000]; batch_size: images per process per iteration [2]
      global_batch_size: images per iteration over all processes [null]; when set, each
                    of the world_size processes takes global_batch_size / world_size
                    images (it must divide) and batch_size is ignored (the workflow sets
                    this, so a schedule means the same on 1 or 8 GPUs)
      base_lr [0.02] at base_batch_size [16] images: the lr used is
                    base_lr * batch_size * world_size / base_batch_size (linear scaling)
      momentum [0.9]; weight_decay [1e-4]
      warmup_iters [100]; warmup_factor: lr multiplier at iteration 0 [0.001]
      steps: iterations where the lr is multiplied by gamma [[]]; gamma [0.1]
      checkpoint_period [500]; log_period [20]; amp [false]; num_workers [0]
      device: auto | cpu | cuda | cuda:N [auto]
    predict: {batch_size [2], split [test]}

A run spec written by the workflow (top-level ``box_loss``, ``iou_head``, ``scoring``
string, ``model.pretrained``, ``train.seed``, ``run_id``) is accepted and mapped onto these
keys.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULTS", "RunConfigError", "load_run_config"]


class RunConfigError(ValueError):
    """An invalid run config; the message names the offending key."""


DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "data": {},
    "model": {
        "engine": "torchvision",
        "detector": "faster_rcnn",
        "backbone": "tiny",
        "weights": "none",
        "norm": None,
        "trainable_layers": None,
        "min_size": 128,
        "max_size": 128,
        "anchor_sizes": None,
        "box_loss": {
            "name": "smooth_l1",
            "power": None,
            "sot": None,
            "gradient": "autograd",
            "coder": "standard",
            "coder_weights": None,
            "weight": None,
        },
        "rpn_box_loss": None,
        "iou_head": {"enabled": False, "weight": 1.0},
        "scoring": {
            "method": "cls",
            "nms_threshold": 0.5,
            "score_threshold": 0.05,
            "detections_per_image": 100,
        },
        "head_norm": None,
        "options": {},
    },
    "train": {
        "max_iter": 1000,
        "batch_size": 2,
        "global_batch_size": None,
        "base_lr": 0.02,
        "base_batch_size": 16,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "warmup_iters": 100,
        "warmup_factor": 0.001,
        "steps": [],
        "gamma": 0.1,
        "checkpoint_period": 500,
        "log_period": 20,
        "amp": False,
        "num_workers": 0,
        "device": "auto",
    },
    "predict": {"batch_size": 2, "split": "test"},
}

# Keys whose value is an open mapping (not checked key by key here).
_OPEN = {"data", "model.options"}
# Keys that may be absent from DEFAULTS' structure but are allowed (loss options).
_LOSS_SECTIONS = {"model.box_loss", "model.rpn_box_loss"}
_BOX_LOSS_DEFAULTS = DEFAULTS["model"]["box_loss"]
_ACCEPTED_EXTRA_TOP = ("run_id", "spec_version")


def _from_workflow_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Map the workflow's run-spec layout onto the run-config layout (idempotent)."""
    cfg = copy.deepcopy(raw)
    model = cfg.setdefault("model", {})
    if not isinstance(model, dict):
        return cfg
    for key in ("box_loss", "iou_head"):
        if key in cfg:
            model[key] = cfg.pop(key)
    if "scoring" in cfg:
        scoring = cfg.pop("scoring")
        model["scoring"] = {"method": scoring} if isinstance(scoring, str) else scoring
    if "pretrained" in model:
        pretrained = model.pop("pretrained")
        model.setdefault("weights", "imagenet" if pretrained else "none")
    train = cfg.get("train")
    if isinstance(train, dict) and "seed" in train:
        cfg.setdefault("seed", train.pop("seed"))
    if "run_id" in cfg and "name" not in cfg:
        cfg["name"] = cfg["run_id"]
    return cfg


def _merge(defaults: Any, given: Any, where: str, errors: list[str]) -> Any:
    if not isinstance(defaults, dict) or where in _OPEN:
        return copy.deepcopy(given)
    if not isinstance(given, Mapping):
        errors.append(f"config key {where}: expected a mapping, got {given!r}")
        return copy.deepcopy(defaults)
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        path = f"{where}.{key}" if where else str(key)
        if key in defaults:
            if isinstance(defaults[key], dict) and path not in _OPEN:
                out[key] = _merge(defaults[key], value, path, errors)
            else:
                out[key] = copy.deepcopy(value)
        elif where in _LOSS_SECTIONS or (not where and key in _ACCEPTED_EXTRA_TOP):
            out[key] = copy.deepcopy(value)
        else:
            errors.append(f"config key {path}: unknown key; allowed: {sorted(defaults)}")
    return out


def _check(cond: bool, key: str, message: str, errors: list[str]) -> None:
    if not cond:
        errors.append(f"config key {key}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate_box_loss(section: Any, key: str, errors: list[str]) -> None:
    from eiou import losses

    if not isinstance(section, dict):
        errors.append(f"config key {key}: expected a mapping, got {section!r}")
        return
    name = section.get("name")
    _check(
        isinstance(name, str) and (name in losses.available() or "." in name),
        f"{key}.name",
        f"{name!r} is neither a registered loss {losses.available()} nor a dotted import path",
        errors,
    )
    _check(
        section.get("coder") in ("standard", "sqrt_area"),
        f"{key}.coder",
        f"{section.get('coder')!r}; allowed: standard, sqrt_area",
        errors,
    )
    power = section.get("power")
    _check(
        power is None or (_is_number(power) and power >= 1),
        f"{key}.power",
        f"{power!r}; a number >= 1 (1: no CT)",
        errors,
    )
    _check(section.get("sot") in (None, True, False), f"{key}.sot", "true or false", errors)
    _check(
        section.get("gradient") in ("autograd", "paper"),
        f"{key}.gradient",
        f"{section.get('gradient')!r}; allowed: autograd, paper",
        errors,
    )
    weight = section.get("weight")
    _check(
        weight is None or (_is_number(weight) and weight >= 0),
        f"{key}.weight",
        f"{weight!r}; a number >= 0 or null (the detector's default)",
        errors,
    )
    if errors:
        return
    try:  # let the core reject option combinations (e.g. SOT on smooth-L1)
        from eiou.engines.torchvision.box_regression import build_box_regression

        build_box_regression(section, "faster_rcnn")
    except (TypeError, ValueError) as err:
        errors.append(f"config key {key}: {err}")


def _validate(cfg: dict[str, Any], errors: list[str]) -> None:
    from eiou.engines.torchvision.backbones import BACKBONES, NORMS
    from eiou.engines.torchvision.build import DETECTORS
    from eiou.scoring import SCORING_METHODS

    _check(_is_int(cfg["seed"]), "seed", f"{cfg['seed']!r}; an integer", errors)
    _check(isinstance(cfg["data"], dict), "data", "a mapping (see eiou.data)", errors)
    model, train = cfg["model"], cfg["train"]
    from eiou.engines import ENGINES

    _check(
        model["engine"] in ENGINES,
        "model.engine",
        f"{model['engine']!r}; allowed: {sorted(ENGINES)}",
        errors,
    )
    _check(
        model["detector"] in DETECTORS,
        "model.detector",
        f"{model['detector']!r}; allowed: {list(DETECTORS)}",
        errors,
    )
    _check(
        model["backbone"] in BACKBONES,
        "model.backbone",
        f"{model['backbone']!r}; allowed: {sorted(BACKBONES)}",
        errors,
    )
    _check(
        isinstance(model["weights"], str) and bool(model["weights"]),
        "model.weights",
        f"{model['weights']!r}; imagenet, none or a file path",
        errors,
    )
    _check(
        model["norm"] is None or model["norm"] in NORMS,
        "model.norm",
        f"{model['norm']!r}; allowed: {list(NORMS)} or null",
        errors,
    )
    _check(
        model["head_norm"] is None or model["head_norm"] in (*NORMS, "none"),
        "model.head_norm",
        f"{model['head_norm']!r}; allowed: {[*NORMS, 'none']} or null",
        errors,
    )
    for key in ("min_size", "max_size"):
        _check(
            _is_int(model[key]) and model[key] > 0,
            f"model.{key}",
            f"{model[key]!r}; a positive integer",
            errors,
        )
    sizes = model["anchor_sizes"]
    _check(
        sizes is None or (isinstance(sizes, list) and len(sizes) == 5),
        "model.anchor_sizes",
        f"{sizes!r}; 5 sizes (one per pyramid level) or null",
        errors,
    )
    _validate_box_loss(model["box_loss"], "model.box_loss", errors)
    if model["rpn_box_loss"] is not None:
        if model["detector"] != "faster_rcnn":
            errors.append("config key model.rpn_box_loss: only Faster R-CNN has an RPN")
        rpn = _merge(_BOX_LOSS_DEFAULTS, model["rpn_box_loss"], "model.rpn_box_loss", errors)
        model["rpn_box_loss"] = rpn
        _validate_box_loss(rpn, "model.rpn_box_loss", errors)
    head = model["iou_head"]
    _check(isinstance(head["enabled"], bool), "model.iou_head.enabled", "true or false", errors)
    _check(_is_number(head["weight"]), "model.iou_head.weight", "a number", errors)
    scoring = model["scoring"]
    _check(
        scoring["method"] in SCORING_METHODS,
        "model.scoring.method",
        f"{scoring['method']!r}; allowed: {list(SCORING_METHODS)}",
        errors,
    )
    if scoring["method"] != "cls" and not head["enabled"]:
        errors.append(
            f"config key model.scoring.method: {scoring['method']!r} needs "
            "model.iou_head.enabled: true"
        )
    for key in ("nms_threshold", "score_threshold"):
        _check(
            _is_number(scoring[key]) and 0 <= scoring[key] <= 1,
            f"model.scoring.{key}",
            "a number in [0, 1]",
            errors,
        )
    _check(
        _is_int(scoring["detections_per_image"]) and scoring["detections_per_image"] > 0,
        "model.scoring.detections_per_image",
        "a positive integer",
        errors,
    )
    _check(isinstance(model["options"], dict), "model.options", "a mapping", errors)

    for key in ("max_iter", "batch_size", "base_batch_size", "checkpoint_period", "log_period"):
        _check(
            _is_int(train[key]) and train[key] > 0,
            f"train.{key}",
            f"{train[key]!r}; a positive integer",
            errors,
        )
    _check(
        train["global_batch_size"] is None
        or (_is_int(train["global_batch_size"]) and train["global_batch_size"] > 0),
        "train.global_batch_size",
        f"{train['global_batch_size']!r}; a positive integer or null",
        errors,
    )
    for key in ("warmup_iters", "num_workers"):
        _check(
            _is_int(train[key]) and train[key] >= 0,
            f"train.{key}",
            f"{train[key]!r}; an integer >= 0",
            errors,
        )
    for key in ("base_lr", "momentum", "weight_decay", "warmup_factor", "gamma"):
        _check(
            _is_number(train[key]) and train[key] >= 0,
            f"train.{key}",
            f"{train[key]!r}; a number >= 0",
            errors,
        )
    steps = train["steps"]
    _check(
        isinstance(steps, list)
        and all(_is_int(s) and s > 0 for s in steps)
        and steps == sorted(steps),
        "train.steps",
        f"{steps!r}; increasing positive iterations",
        errors,
    )
    _check(isinstance(train["amp"], bool), "train.amp", "true or false", errors)
    device = train["device"]
    _check(
        isinstance(device, str) and (device in ("auto", "cpu") or device.startswith("cuda")),
        "train.device",
        f"{device!r}; auto, cpu, cuda or cuda:N",
        errors,
    )
    predict = cfg["predict"]
    _check(
        _is_int(predict["batch_size"]) and predict["batch_size"] > 0,
        "predict.batch_size",
        "a positive integer",
        errors,
    )
    _check(isinstance(predict["split"], str), "predict.split", "a split name", errors)


def load_run_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A validated run config with every default filled in.

    Args:
        source: a YAML file path or a mapping (a loaded config is returned unchanged in
            content, so loading twice is harmless).

    Raises:
        RunConfigError: listing every invalid key.
    """
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise RunConfigError(f"run config {path} does not exist")
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
        if not isinstance(raw, dict):
            raise RunConfigError(f"run config {path}: expected a mapping at the top level")
    errors: list[str] = []
    cfg = _merge(DEFAULTS, _from_workflow_spec(raw), "", errors)
    if not errors:
        _validate(cfg, errors)
    if errors:
        raise RunConfigError("invalid run config:\n  " + "\n  ".join(errors))
    return cfg
