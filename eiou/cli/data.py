"""`eiou data`: prepare a dataset as COCO JSON (generate, convert or copy) and check it.

    eiou data synthetic --root DIR [--splits train test] [--seed 0] [--num-train 256] ...
    eiou data voc --root VOC_ROOT --output DIR [--splits voc_2007_trainval ...]
    eiou data coco --root COCO_ROOT --output DIR [--splits train2017 val2017]
    eiou data check --config run.yaml

Each preparing command writes ``<output>/<split>.json`` per split (``--output`` defaults to
``--root``), validates it (see :mod:`eiou.data.validate`) and writes the counts to
``<output>/<split>.validation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eiou.cli import add_output
from eiou.data import DatasetError, coco, synthetic, validate, voc
from eiou.data.coco import image_paths_for, read_json
from eiou.io import write_json

HELP = "prepare a dataset (synthetic, voc, coco) as COCO JSON, or check a run's dataset"


#: What each option of the synthetic generator means (its keys: synthetic.DEFAULT_OPTIONS).
_SYNTHETIC_OPTIONS = {
    "seed": "seed of the generated images",
    "image_size": "side of the square images in pixels",
    "num_classes": "number of shape classes",
    "max_objects": "most objects in one image",
}


def _common(parser: argparse.ArgumentParser, splits: list[str]) -> None:
    parser.add_argument("--root", type=Path, required=True, help="dataset root folder")
    add_output(parser, "folder for <split>.json (default: --root)", required=False)
    parser.add_argument(
        "--splits", nargs="+", default=splits, help="splits to prepare (default: %(default)s)"
    )
    parser.add_argument("--force", action="store_true", help="redo finished splits")
    parser.add_argument(
        "--validate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="validate each prepared split and write <split>.validation.json (default: yes)",
    )
    parser.add_argument(
        "--horizontal-flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a training option of the dataset's runs; accepted here and ignored",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    p = sub.add_parser("synthetic", help="generate the synthetic shapes dataset")
    _common(p, ["train", "val"])
    for key, default in synthetic.DEFAULT_OPTIONS.items():
        p.add_argument(
            f"--{key.replace('_', '-')}",
            type=int,
            default=default,
            help=f"{_SYNTHETIC_OPTIONS[key]} (default %(default)s)",
        )
    for split in ("train", "val", "test"):
        p.add_argument(
            f"--num-{split}",
            type=int,
            default=None,
            help=f"images in {split} (default {synthetic.default_split_size(split)})",
        )

    p = sub.add_parser("voc", help="convert a PASCAL VOC devkit to COCO JSON")
    _common(p, ["voc_2007_trainval", "voc_2012_trainval", "voc_2007_test"])
    p.add_argument(
        "--use-difficult",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="difficult objects are ordinary objects (default: no, they are ignore regions)",
    )

    p = sub.add_parser("coco", help="check a COCO 2017 folder and copy the split JSON files")
    _common(p, ["train2017", "val2017"])

    p = sub.add_parser("check", help="validate the dataset of a run spec (train and test)")
    p.add_argument("--config", type=Path, required=True, help="run spec YAML (run.yaml)")
    p.add_argument(
        "--decode",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fully decode every image (default: when there are at most 20000, else read headers)",
    )


def _validate_prepared(kind: str, root: Path, out: Path, split: str) -> dict[str, Any]:
    data = read_json(out / f"{split}.json")
    if kind == "synthetic":
        image_dir = root / split
    elif kind == "voc":
        image_dir = voc.find_devkit(root)
    else:
        image_dir = coco.coco_split_paths(root, split)[1]
    report = validate.validate_coco(
        data, image_paths_for(data, image_dir), name=split, require_annotations=False
    )
    write_json(out / f"{split}.validation.json", report.as_dict())
    return report.as_dict()


def _check(args: argparse.Namespace) -> int:
    from eiou.config import read_yaml

    spec = read_yaml(args.config, "run config")
    data_cfg = spec.get("data", spec)
    decode = "auto" if args.decode is None else args.decode
    result = {}
    result["train"] = validate.validate_dataset(data_cfg, "train", decode_images=decode).as_dict()
    result["test"] = validate.validate_dataset(
        data_cfg, "test", train=False, decode_images=decode
    ).as_dict()
    print(json.dumps(result, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if args.kind == "check":
            return _check(args)
        out = args.output or args.root
        if args.kind == "synthetic":
            options = {key: getattr(args, key) for key in synthetic.DEFAULT_OPTIONS}
            sizes = {
                s: getattr(args, f"num_{s}", None) or synthetic.default_split_size(s)
                for s in args.splits
            }
            synthetic.generate(args.root, sizes, options, out_dir=out, force=args.force)
        elif args.kind == "voc":
            voc.convert_voc(
                args.root, out, args.splits, use_difficult=args.use_difficult, force=args.force
            )
        else:
            coco.prepare_coco(args.root, out, args.splits)
        for split in args.splits:
            if args.validate:
                counts = _validate_prepared(args.kind, args.root, out, split)
                print(
                    f"{split}: "
                    + ", ".join(
                        f"{k}={v}" for k, v in counts.items() if k not in ("errors", "name")
                    )
                )
            print(f"wrote {out / (split + '.json')}")
    except DatasetError as err:
        print(f"eiou data: {err}", file=sys.stderr)
        return 2
    return 0
