"""Experiment matrices: presets -> validated config -> unique run specs -> a plan.

A preset (``config/<name>.yaml``, schema ``eiou/schemas/preset.schema.yaml``) names
datasets, schedules, loss variants and tables. Each table is a list of rows; a row is a
small matrix (variant x detector x backbone x dataset x schedule, any field may be a list)
repeated over ``seeds``. Every cell becomes a *run spec*, which is a run config
(:mod:`eiou.config`, ``run.schema.yaml``) with every default filled in: the preset's
``model`` section, the row's detector and backbone, the dataset's data section and image
sizes, the variant's ``box_loss`` / ``iou_head`` / ``scoring`` and the schedule as the
``train`` section. Its id is derived from a hash of its content (the machine-specific
dataset root excluded), so a run that appears in several tables is trained once, and the
same spec gets the same id on every machine.

The paper's Tables I-IV are transcribed in :data:`PAPER_TABLES` (Peng & Yu, IEEE TIP,
Section V) so that every measured table can be printed beside the paper's numbers.

Nothing here imports Snakemake: the Snakefile, ``eiou runs`` and the tests all call
:func:`validate_config` and :func:`build_plan`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from eiou import schemas
from eiou.io import write_json, write_text

__all__ = [
    "BUILTIN_VARIANTS",
    "PAPER_TABLES",
    "PAPER_TABLE_CAPTIONS",
    "SPEC_VERSION",
    "ConfigError",
    "build_plan",
    "data_arguments",
    "load_config",
    "load_run_spec",
    "paper_reference",
    "preset_folder",
    "run_id",
    "run_spec_text",
    "select_candidates",
    "spec_hash",
    "validate_config",
    "validated_runs",
    "variant_candidates",
    "write_plan",
    "write_run_spec",
]

#: Bump when the meaning of a run spec changes: every run id changes with it. Version 3:
#: a run spec is exactly a run config (eiou.config), defaults from the package's schemas.
SPEC_VERSION = 3
#: The calibration rule that resolves ``weight: null`` and the sqrt_area scale
#: (eiou.calibration.RULE, RULE_VERSION; a test keeps them equal). It is hashed into every
#: run id, so a new rule never reuses runs trained under the old one. Kept here as a
#: constant so that planning imports no torch.
CALIBRATION_RULE = ("equal-start-gradient", 1)

#: Metrics of the paper's tables, in the order they are printed.
METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "AP90", "APs", "APm", "APl", "AR100")


class ConfigError(ValueError):
    """A preset that cannot run; the message names the offending key."""


# --------------------------------------------------------------------------- variants
def _variant(
    label: str,
    name: str,
    *,
    iou_head: bool = False,
    scoring: str = "cls",
    **box_loss: Any,
) -> dict[str, Any]:
    """A variant: the run config's ``model.box_loss``, ``model.iou_head`` and
    ``model.scoring`` sections (only what differs from the schema's defaults)."""
    return {
        "label": label,
        "box_loss": {"name": name, **box_loss},
        "iou_head": {"enabled": iou_head},
        "scoring": {"method": scoring},
    }


#: Built-in loss variants (Table I rows 1-8, plus CIoU and "ours" of Tables II-IV).
#: Choices the paper leaves open (see docs): the "standard IoU loss" is UnitBox's -ln(IoU)
#: (registered as ``iou``); EIoU variants use Algorithm 1's sqrt(anchor area) coder; with an
#: IoU head the detection score is sqrt(cls * predicted IoU). Presets may override any of
#: these under ``variants:``.
BUILTIN_VARIANTS: dict[str, dict[str, Any]] = {
    "smooth_l1": _variant("Smooth-L1 (baseline)", "smooth_l1"),
    "iou": _variant("Standard IoU loss (-ln IoU)", "iou"),
    "giou": _variant("GIoU loss", "giou"),
    "diou": _variant("DIoU loss", "diou"),
    "ciou": _variant("CIoU loss", "ciou"),
    "smooth_l1_iou_head": _variant(
        "Smooth-L1 + IoU head", "smooth_l1", iou_head=True, scoring="sqrt_cls_x_iou"
    ),
    "eiou": _variant("EIoU loss", "eiou", power=1, coder="sqrt_area"),
    "eiou_ct": _variant("EIoU + CT", "eiou", power=2, coder="sqrt_area"),
    "eiou_ct_sot": _variant("EIoU + CT + SOT", "eiou", power=2, sot=True, coder="sqrt_area"),
    "eiou_ct_sot_iou_head": _variant(
        "Ours (EIoU + CT + SOT + IoU head)",
        "eiou",
        power=2,
        sot=True,
        coder="sqrt_area",
        iou_head=True,
        scoring="sqrt_cls_x_iou",
    ),
}
BUILTIN_VARIANTS["ours"] = copy.deepcopy(BUILTIN_VARIANTS["eiou_ct_sot_iou_head"])


# --------------------------------------------------------------------------- paper tables
PAPER_TABLE_CAPTIONS: dict[str, str] = {
    "I": "Table I: ablation, Faster R-CNN + FPN, ResNet-50, VOC07+12 trainval -> VOC07 test",
    "II": "Table II: RetinaNet and Faster R-CNN + FPN, ResNet-50, VOC07+12 -> VOC07 test",
    "III": "Table III: RetinaNet and Faster R-CNN + FPN, ResNet-50, COCO train2017 -> val2017",
    "IV": "Table IV: COCO test-dev (scored by the COCO evaluation server), 180k schedule",
}


def _rows(
    keys: tuple[str, ...], rows: Iterable[tuple[Any, ...]], **common: Any
) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        head, values = row[: len(row) - len(keys)], row[len(row) - len(keys) :]
        record = dict(common)
        record.update(dict(zip(("variant", "detector", "backbone"), head, strict=False)))
        record["metrics"] = {k: v for k, v in zip(keys, values, strict=True) if v is not None}
        out.append(record)
    return out


_T23 = ("AP", "AP50", "AP75", "AP90", "APs", "APm", "APl")
_T4 = ("AP", "AP50", "AP75", "APs", "APm", "APl")

#: The paper's numbers (percent), transcribed from Peng & Yu, Section V.
#: Table II's extracted header lost the "AP" column name; its first value column is AP.
#: Table IV does not say which detector "Ours" is; Faster R-CNN + FPN (the paper's best
#: detector in Tables I-III) is assumed. Other methods of Table IV have ``variant: None``.
PAPER_TABLES: dict[str, list[dict[str, Any]]] = {
    # Table I: Faster R-CNN + FPN, ResNet-50, VOC; AP only. Rows 1-8 in the paper's order.
    "I": _rows(
        ("AP",),
        [
            ("smooth_l1", 45.5),
            ("iou", 46.6),
            ("giou", 46.9),
            ("smooth_l1_iou_head", 46.2),
            ("eiou", 47.5),
            ("eiou_ct", 47.9),
            ("eiou_ct_sot", 48.2),
            ("eiou_ct_sot_iou_head", 49.7),
        ],
        detector="faster_rcnn",
        backbone="resnet50",
    ),
    # Table II: VOC07 test, ResNet-50 + FPN.
    "II": _rows(
        _T23,
        [
            ("smooth_l1", "retinanet", 44.2, 70.5, 47.5, 25.0, 9.8, 28.3, 54.3),
            ("giou", "retinanet", 45.2, 70.0, 48.2, 28.8, 9.9, 29.1, 55.5),
            ("ciou", "retinanet", 45.9, 70.3, 50.1, 30.3, 10.1, 30.2, 55.9),
            ("ours", "retinanet", 46.4, 71.1, 49.1, 32.2, 10.5, 31.4, 56.3),
            ("smooth_l1", "faster_rcnn", 45.5, 72.6, 49.8, 25.2, 10.0, 29.5, 55.6),
            ("giou", "faster_rcnn", 46.9, 73.1, 50.8, 28.6, 9.6, 31.0, 57.2),
            ("ciou", "faster_rcnn", 48.0, 73.5, 51.2, 28.8, 9.8, 31.8, 57.9),
            ("ours", "faster_rcnn", 49.7, 73.7, 54.1, 33.4, 11.9, 32.8, 59.8),
        ],
        backbone="resnet50",
    ),
    # Table III: COCO val2017, ResNet-50 + FPN.
    "III": _rows(
        _T23,
        [
            ("smooth_l1", "retinanet", 35.7, 54.7, 38.5, 22.8, 19.5, 39.9, 47.5),
            ("giou", "retinanet", 36.2, 54.5, 38.9, 24.4, 19.6, 40.3, 48.3),
            ("ciou", "retinanet", 36.7, 54.7, 39.3, 25.0, 20.1, 40.9, 48.9),
            ("ours", "retinanet", 37.1, 54.8, 39.6, 25.7, 20.6, 41.3, 49.2),
            ("smooth_l1", "faster_rcnn", 36.7, 58.5, 39.6, 21.2, 21.1, 39.8, 48.1),
            ("giou", "faster_rcnn", 37.8, 58.4, 41.0, 24.8, 21.2, 40.9, 49.8),
            ("ciou", "faster_rcnn", 38.4, 58.3, 41.5, 25.2, 21.2, 41.3, 50.2),
            ("ours", "faster_rcnn", 39.0, 58.7, 42.1, 26.5, 22.3, 41.7, 50.7),
        ],
        backbone="resnet50",
    ),
    # Table IV: COCO test-dev. "Ours" rows first, then the other methods as printed.
    "IV": _rows(
        _T4,
        [
            ("ours", "faster_rcnn", "resnet101", 42.2, 61.8, 46.1, 24.4, 45.2, 55.4),
            ("ours", "faster_rcnn", "resnext101_64x4d", 44.1, 63.7, 47.6, 26.8, 47.6, 57.1),
        ],
    )
    + [
        {
            "variant": None,
            "method": m,
            "backbone_name": b,
            "year": y,
            "metrics": dict(zip(_T4, v, strict=True)),
        }
        for m, b, y, v in [
            ("YOLOv3", "DarkNet-53", 2018, (33.0, 57.9, 34.4, 18.3, 35.4, 41.9)),
            ("SSD513", "ResNet-101", 2016, (31.2, 50.4, 33.3, 10.2, 34.5, 49.8)),
            ("RetinaNet800", "ResNeXt-101", 2017, (39.1, 59.1, 42.3, 21.8, 42.7, 50.2)),
            ("DSSD513", "ResNet-101", 2017, (33.2, 53.3, 35.2, 13.0, 35.4, 51.1)),
            ("RefineDet512", "ResNet-101", 2018, (36.4, 57.5, 39.5, 16.6, 39.9, 51.4)),
            ("CornerNet511", "Hourglass-104", 2018, (40.5, 56.5, 43.1, 19.4, 42.7, 53.9)),
            ("CenterNet", "Hourglass-104", 2019, (42.1, 61.1, 45.9, 24.1, 45.5, 52.8)),
            ("FCOS", "ResNeXt-101", 2019, (43.2, 62.8, 46.6, 26.5, 46.2, 53.3)),
            ("Faster R-CNN+++", "ResNet-101", 2016, (34.9, 55.7, 37.4, 15.6, 38.7, 50.9)),
            ("Faster R-CNN w FPN", "ResNet-101", 2016, (36.2, 59.1, 39.0, 18.2, 39.0, 48.2)),
            ("Mask R-CNN", "ResNeXt-101", 2017, (39.8, 62.3, 43.4, 22.1, 43.2, 51.2)),
            ("DetNet", "DetNet", 2018, (40.3, 62.1, 43.8, 23.6, 42.6, 50.0)),
            ("IoU-Net", "ResNet-101", 2018, (40.6, 59.0, None, None, None, None)),
            ("TridentNet w 2fc", "ResNet-101", 2019, (42.0, 63.5, 45.5, 24.9, 47.0, 56.9)),
            ("Grid R-CNN", "ResNeXt-101", 2019, (43.2, 63.0, 46.6, 25.1, 46.5, 55.2)),
        ]
    ],
}
for _record in PAPER_TABLES["IV"]:
    _record["metrics"] = {k: v for k, v in _record["metrics"].items() if v is not None}


def paper_reference(
    paper_table: str | None, variant: str, detector: str, backbone: str
) -> dict[str, float] | None:
    """The paper's numbers for one row, or ``None`` where the paper has none.

    Rows match on variant and detector; the backbone decides only where the paper's table
    has several (Table IV), so a reduced preset's analogue (``tiny`` backbone) is still
    printed beside the paper's row.
    """
    if paper_table is None:
        return None
    candidates = [
        r
        for r in PAPER_TABLES[paper_table]
        if r["variant"] == variant and r.get("detector") == detector
    ]
    if len(candidates) > 1:
        candidates = [r for r in candidates if r.get("backbone") == backbone]
    return dict(candidates[0]["metrics"]) if len(candidates) == 1 else None


# --------------------------------------------------------------------------- validation
def validate_config(
    config: Mapping[str, Any], base_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Validate a preset against ``eiou/schemas/preset.schema.yaml`` and return a copy with
    the defaults filled in.

    Raises :class:`ConfigError` naming the offending key (``tables.t1.rows[0].detector``)
    and what is allowed there. Also checks what a schema cannot: that every variant,
    dataset and schedule a table names is defined, and that each dataset uses one form.
    Imports no torch.

    ``base_dir``: the preset file's folder. Relative dataset paths (a VOC or COCO ``root``,
    a split's ``annotations`` and ``images``) are made absolute against it; ``~`` is the
    home folder; a path starting with ``$`` is left to the environment
    (:func:`resolve_datasets`). Without ``base_dir`` relative paths stay relative (to the
    working directory). Synthetic roots are outputs and always stay relative to the
    working directory.
    """
    try:
        config = schemas.validate(config, "preset")
    except schemas.SchemaError as err:
        raise ConfigError(str(err)) from None
    _check_datasets(config)
    _check_references(config)
    if base_dir is not None:
        _resolve_relative_paths(config, Path(base_dir))
    return config


#: Keys of a dataset entry by form: any COCO-format dataset / named splits.
_SPLIT_SOURCES = ("train", "val", "test")
_SPLIT_NAMES = ("root", "train_splits", "test_split", "val_split")


def _check_datasets(config: Mapping[str, Any]) -> None:
    """Each dataset uses one form, and ``classes`` only on VOC data."""
    problems = []
    for name, entry in config["datasets"].items():
        where = f"config key datasets.{name}"
        sources = [k for k in _SPLIT_SOURCES if k in entry]
        if sources:
            if entry["kind"] != "coco":
                problems.append(
                    f"{where}.{sources[0]}: an annotation file and image folder per split is "
                    f"the form of kind coco (any COCO-format dataset), not {entry['kind']!r}; "
                    "VOC-format data takes root, train_splits and test_split"
                )
            for key in _SPLIT_NAMES:
                if key in entry:
                    problems.append(
                        f"{where}.{key}: not with train/test (any COCO-format dataset: each "
                        "split is {annotations, images}); use one form or the other"
                    )
        if "classes" in entry and entry["kind"] != "voc":
            problems.append(
                f"{where}.classes: only VOC-format data (kind voc) takes classes; COCO JSON "
                "names its categories"
            )
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _absolute(path: str, base_dir: Path) -> str:
    if path.startswith("$"):
        return path
    expanded = Path(os.path.expanduser(path))
    return str(expanded if expanded.is_absolute() else Path(os.path.normpath(base_dir / expanded)))


def _resolve_relative_paths(config: dict[str, Any], base_dir: Path) -> None:
    base_dir = base_dir.absolute()
    for entry in config["datasets"].values():
        if entry["kind"] != "synthetic" and "root" in entry:
            entry["root"] = _absolute(entry["root"], base_dir)
        for split in _SPLIT_SOURCES:
            if split in entry:
                for key in ("annotations", "images"):
                    entry[split][key] = _absolute(entry[split][key], base_dir)


def preset_folder(
    configfiles: Iterable[str | os.PathLike[str]], default: str | os.PathLike[str]
) -> Path:
    """The folder relative dataset paths of a preset resolve against: that of the last
    config file (Snakemake's ``workflow.configfiles``), else ``default``."""
    files = [Path(f) for f in configfiles]
    return (files[-1].absolute().parent if files else Path(default)).absolute()


def _check_references(config: Mapping[str, Any]) -> None:
    variants = set(BUILTIN_VARIANTS) | set(config.get("variants", {}))
    problems = []
    for tname, table in config["tables"].items():
        inline = {
            _resolve_variant(ref, config)[0]
            for row in table["rows"]
            for ref in _as_list(row["variant"])
            if isinstance(ref, Mapping)
        }
        if table.get("baseline") not in variants | inline:
            problems.append(
                f"config key tables.{tname}.baseline: {table.get('baseline')!r} is not a "
                f"variant; allowed: {sorted(variants | inline)}"
            )
        for i, row in enumerate(table["rows"]):
            where = f"tables.{tname}.rows[{i}]"
            refs = _as_list(row["variant"])
            for j, ref in enumerate(refs):
                if isinstance(ref, str) and ref not in variants:
                    problems.append(
                        f"config key {where}.variant: {ref!r} is not a variant; allowed: "
                        f"{sorted(variants)} or an inline {{box_loss: {{name: ...}}}}"
                    )
                    continue
                at = f"{where}.variant" + (f"[{j}]" if isinstance(row["variant"], list) else "")
                variant = ref if isinstance(ref, Mapping) else config["variants"].get(ref)
                if variant is None:  # built in
                    continue
                if not isinstance(ref, Mapping):
                    at = f"variants.{ref}"
                try:
                    candidates = variant_candidates(variant, {}, at)
                except ConfigError as err:
                    problems += str(err).splitlines()[1:]
                    continue
                if len(candidates) > 1 and not table.get("tuning"):
                    problems.append(
                        f"config key {at}: option lists are candidates for tuning; add a "
                        f"tuning section to tables.{tname}"
                    )
            for field, known in (("dataset", "datasets"), ("schedule", "schedules")):
                for ref in _as_list(row[field]):
                    if ref not in config[known]:
                        problems.append(
                            f"config key {where}.{field}: {ref!r} is not defined under "
                            f"{known}; allowed: {sorted(config[known])}"
                        )
    if problems:
        lines = list(dict.fromkeys(p.strip() for p in problems))
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a preset YAML file and :func:`validate_config` it; relative dataset paths
    resolve against the file's folder."""
    from eiou.config import RunConfigError, read_yaml

    try:
        raw = read_yaml(path, "preset")
    except RunConfigError as err:
        raise ConfigError(str(err)) from None
    return validate_config(raw, base_dir=Path(path).absolute().parent)


# --------------------------------------------------------------------------- datasets
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_env(value: str, key: str) -> str:
    """Replace ``${VAR}`` / ``$VAR`` by the environment's value; unset variables are errors."""

    def repl(match: re.Match[str]) -> str:
        var = match.group(1) or match.group(2)
        if var not in os.environ or not os.environ[var]:
            raise ConfigError(
                f"config key {key}: environment variable {var} is not set "
                f"(export {var}=/path/to/dataset, or write the path into the config)"
            )
        return os.environ[var]

    return _ENV.sub(repl, value)


def resolve_datasets(config: Mapping[str, Any], check_roots: bool | None = None) -> dict[str, dict]:
    """Dataset entries with their paths resolved; missing roots or files raise one ConfigError.

    Only datasets that some table uses are resolved or checked. Synthetic data is generated
    into ``results/data/<name>`` unless ``root`` says otherwise. Any COCO-format dataset
    (``train``/``test``/``val``, each ``{annotations, images}``) becomes ``splits`` of those
    names with ``train_splits: [train]``, ``test_split: test`` (and ``val_split: val``).
    """
    if check_roots is None:
        check_roots = bool(config.get("check_data_roots", True))
    used = {d for t in config["tables"].values() for r in t["rows"] for d in _as_list(r["dataset"])}
    out: dict[str, dict] = {}
    missing = []
    for name in sorted(used):
        entry = copy.deepcopy(config["datasets"][name])
        key = f"datasets.{name}.root"
        if any(split in entry for split in _SPLIT_SOURCES):
            missing += _resolve_split_sources(entry, name, check_roots)
        elif entry["kind"] == "synthetic":
            entry["root"] = expand_env(entry.get("root", f"results/data/{name}"), key)
        else:
            if "root" not in entry:
                raise ConfigError(f"config key {key}: required for kind {entry['kind']!r}")
            try:
                entry["root"] = expand_env(entry["root"], key)
            except ConfigError as err:
                if check_roots:
                    missing.append(str(err))
                    continue
                entry["root"] = entry["root"]
            if check_roots and not Path(entry["root"]).is_dir():
                missing.append(f"config key {key}: folder {entry['root']!r} does not exist")
                continue
        entry["annotations"] = f"results/data/{name}"
        out[name] = entry
    if missing:
        raise ConfigError(
            "dataset roots missing (nothing was scheduled):\n  "
            + "\n  ".join(missing)
            + "\n  (set check_data_roots: false to list jobs without the data)"
        )
    return out


def _resolve_split_sources(entry: dict[str, Any], name: str, check: bool) -> list[str]:
    """Turn ``train``/``val``/``test`` of ``entry`` into ``splits`` (environment variables
    expanded); return the missing files and folders when ``check``."""
    missing: list[str] = []
    entry["splits"] = {}
    for split in _SPLIT_SOURCES:
        if split not in entry:
            continue
        source = entry.pop(split)
        for field, what, exists in (
            ("annotations", "annotation file", os.path.isfile),
            ("images", "image folder", os.path.isdir),
        ):
            key = f"datasets.{name}.{split}.{field}"
            try:
                source[field] = expand_env(source[field], key)
            except ConfigError as err:
                if check:
                    missing.append(str(err))
                continue
            if check and not exists(source[field]):
                missing.append(f"config key {key}: {what} {source[field]!r} does not exist")
        entry["splits"][split] = source
    entry["train_splits"] = ["train"]
    entry["test_split"] = "test"
    if "val" in entry["splits"]:
        entry["val_split"] = "val"
    return missing


def data_arguments(entry: Mapping[str, Any]) -> list[str]:
    """``eiou data <kind>`` arguments for one resolved dataset entry."""
    if entry.get("splits"):
        args = [entry["kind"], "--output-dir", entry["annotations"]]
        for split, source in entry["splits"].items():
            args += ["--split", split, str(source["annotations"]), str(source["images"])]
    else:
        args = [entry["kind"], "--root", str(entry["root"]), "--output-dir", entry["annotations"]]
        splits = [*entry["train_splits"], entry.get("val_split"), entry["test_split"]]
        args += ["--splits", *dict.fromkeys(s for s in splits if s)]
    classes = entry.get("classes")
    if classes is not None:
        args += ["--classes", *(["auto"] if classes == "auto" else classes)]
        args += ["--classes-from", *entry["train_splits"]]
    for key, value in entry.get("options", {}).items():
        args += [f"--{key.replace('_', '-')}", _cli_value(value)]
    return args


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------- run specs
def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _resolve_variant(ref: Any, config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, variant)`` for a variant name or an inline variant mapping."""
    if isinstance(ref, str):
        known = {**BUILTIN_VARIANTS, **config.get("variants", {})}
        variant = copy.deepcopy(known[ref])
        name = ref
    else:
        variant = copy.deepcopy(dict(ref))
        name = variant.pop("name", None) or re.sub(
            r"[^A-Za-z0-9_]", "_", variant["box_loss"]["name"].rsplit(".", 1)[-1]
        )
    variant.setdefault("label", name)
    return name, variant


def spec_hash(spec: Mapping[str, Any]) -> str:
    """SHA-256 of the spec's canonical JSON, without its ``name`` and the dataset's
    location (its root, and the files of its ``splits``: only their names count), with the
    calibration rule (:data:`CALIBRATION_RULE`) added.

    The location is left out so that the same experiment gets the same id wherever the data
    happens to live; the name is the id itself.
    """
    content = copy.deepcopy(dict(spec))
    content.pop("name", None)
    content["calibration"] = list(CALIBRATION_RULE)
    if isinstance(content.get("data"), dict):
        content["data"].pop("root", None)
        if isinstance(content["data"].get("splits"), dict):  # file locations, like the root
            content["data"]["splits"] = sorted(content["data"]["splits"])
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_id(spec: Mapping[str, Any]) -> str:
    """``<dataset>-<detector>-<backbone>-<loss>-s<seed>-<hash10>``: readable, content-derived."""
    model = spec["model"]
    parts = [
        spec["data"]["name"],
        model["detector"],
        model["backbone"],
        model["box_loss"]["name"].rsplit(".", 1)[-1],
        f"s{spec['seed']}",
        spec_hash(spec)[:10],
    ]
    return "-".join(re.sub(r"[^A-Za-z0-9_]", "_", str(p)) for p in parts)


def _merged(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, mapping by mapping."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_run_spec(
    config: Mapping[str, Any],
    dataset: Mapping[str, Any],
    dataset_name: str,
    variant: Mapping[str, Any],
    detector: str,
    backbone: str,
    schedule: Mapping[str, Any],
    seed: int,
    *,
    holdout: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One run spec: a run config with every default filled in, named by its id.

    ``holdout`` (``{fraction, seed}``) carves a validation split out of the training data
    (a tuned table's runs); ``overrides`` sets dotted run-config keys (a tuning grid's
    values) last.

    The model section is the preset's ``model`` with the row's detector and backbone, the
    dataset's image sizes, the variant's ``box_loss`` (replacing the preset's) and its
    ``iou_head`` and ``scoring`` (merged over the preset's); the schedule is the ``train``
    section as given (its ``batch_size`` counts the images of one iteration over all
    processes, so a run means the same on 1 or 8 GPUs).
    """
    data: dict[str, Any] = {"name": dataset_name, "kind": dataset["kind"]}
    for key in ("root", "annotations", "splits", "train_splits", "test_split", "val_split",
                "classes", "has_ground_truth"):  # fmt: skip
        if key in dataset:
            data[key] = copy.deepcopy(dataset[key])
    data.update(copy.deepcopy(dataset.get("options", {})))
    model = _merged(
        config.get("model", {}),
        {
            "detector": detector,
            "backbone": backbone,
            "min_size": dataset["min_size"],
            "max_size": dataset["max_size"],
            "iou_head": variant.get("iou_head", {}),
            "scoring": variant.get("scoring", {}),
        },
    )
    model["box_loss"] = copy.deepcopy(dict(variant["box_loss"]))
    if holdout:
        data["holdout"] = dict(holdout)
    raw = {
        "spec_version": SPEC_VERSION,
        "seed": int(seed),
        "data": data,
        "model": model,
        "train": copy.deepcopy(dict(schedule)),
    }
    for key, value in (overrides or {}).items():
        section, *path = key.split(".")
        target = raw[section]
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = copy.deepcopy(value)
    try:
        spec = schemas.validate(raw, "run", where="run spec")
    except schemas.SchemaError as err:
        raise ConfigError(f"{err} (built from dataset {dataset_name!r})") from None
    spec["name"] = run_id(spec)
    return {"name": spec.pop("name"), **spec}


def _is_value(key: str, value: Any) -> bool:
    """Whether a variant option is one value (not a list of candidate values)."""
    if not isinstance(value, list):
        return True
    return key == "coder_weights" and all(isinstance(v, int | float) for v in value)


def variant_candidates(
    variant: Mapping[str, Any], grid: Mapping[str, list[Any]], where: str
) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """``[(values, variant, overrides)]``: one per candidate of a variant in a tuned table.

    The candidates are the product of the variant's option lists (in ``box_loss`` and
    ``iou_head``) and the table's ``grid`` (dotted run-config keys). ``values`` names what
    the candidate chose (``{"model.box_loss.weight": 5, "train.base_lr": 0.01}``); each
    candidate's box loss is checked as a run config's ``model.box_loss``.
    """
    axes: list[tuple[str, list[Any]]] = []
    for section in ("box_loss", "iou_head"):
        for key, value in (variant.get(section) or {}).items():
            if not _is_value(key, value):
                axes.append((f"model.{section}.{key}", list(value)))
    axes += [(key, list(values)) for key, values in grid.items()]
    out = []
    for combo in itertools.product(*(values for _, values in axes)):
        chosen = dict(zip((key for key, _ in axes), combo, strict=True))
        candidate = copy.deepcopy(dict(variant))
        overrides = {}
        for key, value in chosen.items():
            section, *path = key.split(".")
            if section == "model" and len(path) == 2 and path[0] in ("box_loss", "iou_head"):
                candidate[path[0]][path[1]] = value
            else:
                overrides[key] = value
        try:
            schemas.validate(
                candidate["box_loss"], "definitions#box_loss", prefix=f"{where}.box_loss"
            )
            schemas.validate(
                candidate.get("iou_head") or {}, "definitions#iou_head", prefix=f"{where}.iou_head"
            )
        except schemas.SchemaError as err:
            raise ConfigError(str(err)) from None
        out.append((chosen, candidate, overrides))
    return out


def _candidate_label(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in values.items())


def build_plan(config: Mapping[str, Any], check_roots: bool | None = None) -> dict[str, Any]:
    """Expand a validated config into ``{"runs": {id: spec}, "tables": [...], ...}``.

    Each table row lists its ``candidates`` (one unless the table tunes), each with the run
    ids of its seeds, and the paper's numbers (if any); runs with identical content share
    one id and appear once in ``runs``. An untuned row's ``run_ids`` are its one
    candidate's; a tuned row's are empty until :func:`select_candidates` chose one.

    Raises:
        ConfigError: an option list outside a tuned table, or variants of one tuned table
            with different numbers of candidates (budgets).
    """
    datasets = resolve_datasets(config, check_roots)
    runs: dict[str, dict[str, Any]] = {}
    tables = []
    for tname, table in config["tables"].items():
        seeds = int(table.get("seeds") or config.get("seeds", 1))
        tuning = table.get("tuning")
        holdout = (
            {"fraction": tuning["holdout_fraction"], "seed": tuning["holdout_seed"]}
            if tuning
            else None
        )
        rows: list[dict[str, Any]] = []
        for row in table["rows"]:
            axes = [
                _as_list(row[k]) for k in ("variant", "detector", "backbone", "dataset", "schedule")
            ]
            for vref, detector, backbone, dname, sname in itertools.product(*axes):
                vname, variant = _resolve_variant(vref, config)
                where = f"tables.{tname}.rows[{len(rows)}] variant {vname}"
                if tuning:
                    candidates = variant_candidates(variant, tuning["grid"], where)
                else:
                    listed = variant_candidates(variant, {}, where)
                    if len(listed) > 1:
                        raise ConfigError(
                            f"config key {where}: option lists are candidates for tuning; "
                            f"add a tuning section to tables.{tname}"
                        )
                    candidates = listed
                records = []
                for values, candidate, overrides in candidates:
                    ids = []
                    for i in range(seeds):
                        spec = make_run_spec(
                            config,
                            datasets[dname],
                            dname,
                            candidate,
                            detector,
                            backbone,
                            config["schedules"][sname],
                            config.get("base_seed", 0) + i,
                            # a dataset's own validation split wins over a carved one
                            holdout=None if datasets[dname].get("val_split") else holdout,
                            overrides=overrides,
                        )
                        runs.setdefault(spec["name"], spec)
                        ids.append(spec["name"])
                    records.append(
                        {"values": values, "label": _candidate_label(values), "run_ids": ids}
                    )
                rows.append(
                    {
                        "variant": vname,
                        "label": variant["label"],
                        "detector": detector,
                        "backbone": backbone,
                        "dataset": dname,
                        "schedule": sname,
                        "candidates": records,
                        "run_ids": [] if tuning else records[0]["run_ids"],
                        "has_ground_truth": datasets[dname]["has_ground_truth"],
                        "paper": paper_reference(
                            table.get("paper_table"), vname, detector, backbone
                        ),
                    }
                )
            if tuning:
                budgets = {(r["variant"], len(r["candidates"])) for r in rows}
                if len({n for _, n in budgets}) > 1:
                    raise ConfigError(
                        f"config key tables.{tname}.tuning: every variant of a tuned table "
                        "needs the same number of candidates (the same budget); got "
                        + ", ".join(f"{v}: {n}" for v, n in sorted(budgets))
                    )
        tables.append(
            {
                "name": tname,
                "title": table["title"],
                "paper_table": table.get("paper_table"),
                "baseline": table.get("baseline", "smooth_l1"),
                "metrics": list(table.get("metrics", METRICS[:7])),
                "seeds": seeds,
                "tuning": copy.deepcopy(tuning),
                "rows": rows,
            }
        )
    return {
        "preset": config["preset"],
        "description": config.get("description", ""),
        "paper_setting": bool(config.get("paper_setting", False)),
        "datasets": datasets,
        "runs": runs,
        "tables": tables,
    }


def evaluated_runs(plan: Mapping[str, Any]) -> list[str]:
    """Ids of the runs whose test split has ground truth (scored locally)."""
    return [rid for rid, spec in plan["runs"].items() if spec["data"]["has_ground_truth"]]


def validated_runs(plan: Mapping[str, Any]) -> list[str]:
    """Ids of the candidate runs of tuned tables: scored on their held-out validation split."""
    return sorted(
        {
            rid
            for table in plan["tables"]
            if table.get("tuning")
            for row in table["rows"]
            for candidate in row["candidates"]
            for rid in candidate["run_ids"]
        }
    )


def select_candidates(
    plan: Mapping[str, Any], validation_metrics: Callable[[str], Mapping[str, Any]]
) -> dict[str, Any]:
    """The plan with each tuned row's candidate chosen on the validation split.

    ``validation_metrics(run_id)`` returns a run's metrics on its held-out validation split
    (``metrics_val.json``): this function sees nothing else of a run, in particular never
    its test metrics. Per row, the candidate with the highest mean of the table's
    ``tuning.metric`` over its seeds wins (ties: the first listed); the row's ``run_ids``
    become the chosen candidate's and ``chosen`` records the index, the values and every
    candidate's validation mean.
    """
    resolved = copy.deepcopy(dict(plan))
    for table in resolved["tables"]:
        tuning = table.get("tuning")
        if not tuning:
            continue
        metric = tuning["metric"]
        for row in table["rows"]:
            means = []
            for candidate in row["candidates"]:
                values = [validation_metrics(rid).get(metric) for rid in candidate["run_ids"]]
                values = [float(v) for v in values if v is not None]
                means.append(sum(values) / len(values) if values else float("-inf"))
            best = max(range(len(means)), key=lambda i: (means[i], -i))
            row["run_ids"] = list(row["candidates"][best]["run_ids"])
            row["chosen"] = {
                "index": best,
                "values": row["candidates"][best]["values"],
                "label": row["candidates"][best]["label"],
                "metric": metric,
                "validation": means,
            }
    resolved["selected"] = True
    return resolved


# --------------------------------------------------------------------------- files
def run_spec_text(spec: Mapping[str, Any]) -> str:
    """One run spec as the YAML text of its ``run.yaml``."""
    return yaml.safe_dump(dict(spec), sort_keys=False, default_flow_style=False)


def write_run_spec(path: str | os.PathLike[str], spec: Mapping[str, Any]) -> None:
    """Write one run spec as YAML, atomically."""
    write_text(path, run_spec_text(spec))


def load_run_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a run spec YAML file."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def write_plan(path: str | os.PathLike[str], plan: Mapping[str, Any]) -> None:
    """Write the expanded plan as JSON, atomically."""
    write_json(path, dict(plan))


def load_plan(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a plan written by :func:`write_plan`."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
