"""Run configuration: one YAML file drives ``eiou train``, ``eiou predict`` and ``eiou evaluate``.

A run config has the sections ``name``, ``seed``, ``data``, ``model``, ``train`` and
``predict``. Every key, its meaning, what is allowed and its default are in the package's
JSON Schemas (``eiou/schemas/definitions.schema.yaml``; ``run.schema.yaml`` is the run
config): the one place defaults live. The workflow writes exactly this layout for every run
(``results/runs/<run>/run.yaml``, every default filled in), so a run spec and a hand-written
config are the same thing. In short::

    name, seed
    data        kind, root, annotations, train_splits, test_split, ... (see eiou.data)
    model       engine, detector, backbone, weights, norm, trainable_layers, min_size,
                max_size, anchor_sizes, head_norm, options,
                box_loss: {name, power, sot, gradient, coder, coder_weights, weight, ...},
                rpn_box_loss, iou_head: {enabled, weight, negatives},
                scoring: {method, nms_threshold, score_threshold, detections_per_image}
    train       max_iter, batch_size (images per iteration over all processes), base_lr at
                base_batch_size images (linear scaling), momentum, weight_decay,
                warmup_iters, warmup_factor, steps, gamma, checkpoint_period, log_period,
                amp, num_workers, processes (per node, one per GPU), device
    predict     batch_size, split

A ``null`` default means "the component's own default" (a loss's ``power``, the detector's
loss weight), never a value that overrides it.

:func:`load_run_config` reads a file (or takes a mapping), validates it, fills in the
defaults and checks what a schema cannot (an IoU-aware scoring method needs the IoU head;
with ``deep=True``, the default, the loss options are built once so that e.g. SOT on
smooth-L1 fails here rather than in a queued job). An error names every offending key.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eiou import schemas

__all__ = [
    "RunConfigError",
    "apply_overrides",
    "check_run_config",
    "defaults",
    "load_run_config",
    "read_yaml",
]


class RunConfigError(ValueError):
    """An invalid run config; the message names the offending key."""


def read_yaml(path: str | os.PathLike[str], what: str = "config") -> dict[str, Any]:
    """A YAML file holding a mapping; errors name the file and the problem in one line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RunConfigError(f"{what} {path} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RunConfigError(f"{what} {path}: not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunConfigError(f"{what} {path}: cannot be read: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RunConfigError(f"{what} {path}: expected a mapping at the top level")
    return raw


def defaults() -> dict[str, Any]:
    """A run config holding every default (no data section)."""
    return schemas.validate({}, "run")


def check_run_config(cfg: Mapping[str, Any], *, deep: bool = True) -> list[str]:
    """What the schema cannot say about a filled-in run config, as ``config key ...`` lines.

    ``deep`` also builds each stage's loss (imports torch) so that option combinations the
    core rejects (SOT on smooth-L1, an unknown option of a dotted-path loss) are reported.
    """
    errors: list[str] = []
    model, train = cfg["model"], cfg["train"]
    method = model["scoring"]["method"]
    if method != "cls" and not model["iou_head"]["enabled"]:
        errors.append(
            f"config key model.scoring.method: {method!r} needs model.iou_head.enabled: true"
        )
    if model["rpn_box_loss"] is not None and model["detector"] != "faster_rcnn":
        errors.append("config key model.rpn_box_loss: only Faster R-CNN has an RPN")
    steps = train["steps"]
    if steps != sorted(steps):
        errors.append(f"config key train.steps: {steps!r}; increasing iterations")
    if deep and not errors:
        from eiou.engines.torchvision.box_regression import build_box_regression

        stages = [("model.box_loss", model["box_loss"], model["detector"])]
        if model["rpn_box_loss"] is not None:
            stages.append(("model.rpn_box_loss", model["rpn_box_loss"], "rpn"))
        for key, section, stage in stages:
            try:
                build_box_regression(section, stage)
            except (TypeError, ValueError) as err:
                errors.append(f"config key {key}: {err}")
    return errors


def load_run_config(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    deep: bool = True,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """A validated run config with every default filled in.

    Args:
        source: a YAML file path or a mapping (loading a loaded config again returns an
            equal dict).
        deep: also build the losses once to check their options (see
            :func:`check_run_config`).
        overrides: ``key=value`` assignments applied before validation
            (:func:`apply_overrides`; ``eiou train --set``).

    Raises:
        RunConfigError: naming the file (if any) and every invalid key.
    """
    where = "run config"
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        raw = read_yaml(source, "run config")
        where = f"run config {source}"
    if overrides:
        raw = apply_overrides(raw, overrides)
        where += " with --set " + " ".join(overrides)
    try:
        cfg = schemas.validate(raw, "run", where=where)
    except schemas.SchemaError as err:
        raise RunConfigError(str(err)) from None
    errors = check_run_config(cfg, deep=deep)
    if errors:
        raise RunConfigError(f"invalid {where}:\n  " + "\n  ".join(errors))
    return cfg


def apply_overrides(cfg: Mapping[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """A copy of ``cfg`` with ``key=value`` assignments applied, in order.

    Keys are dotted paths (``train.max_iter``, ``model.box_loss.power``); a missing section
    is created. Values are read as YAML, as typed on a command line: ``2000`` is an int,
    ``1e-3`` a float, ``false`` a bool, ``null`` None, ``[8000, 9000]`` a list and
    anything else a string (:func:`eiou.schemas.typed_value`). Nothing is validated here:
    :func:`load_run_config` does that.

    Raises:
        RunConfigError: an assignment without ``=`` or with an empty key part.
    """
    out = copy.deepcopy(dict(cfg))
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise RunConfigError(
                f"override {assignment!r}: expected KEY=VALUE with a dotted KEY "
                "(e.g. train.max_iter=2000)"
            )
        value = schemas.typed_value(text) if text.strip() else ""
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise RunConfigError(f"override {assignment!r}: {where} is not a section")
            node = child
        node[parts[-1]] = value
    return out
