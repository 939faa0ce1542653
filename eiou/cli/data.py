"""`eiou data`: prepare a dataset as COCO JSON (generate, convert or copy) and check it.

    eiou data synthetic --root DIR [--splits train test] [--seed 0] [--num-train 256] ...
    eiou data voc --root VOC_ROOT --output-dir DIR [--splits voc_2007_trainval ...]
    eiou data voc --root MY_VOC_FOLDER --output-dir DIR --splits train test --classes auto \
        --classes-from train
    eiou data coco --root COCO_ROOT --output-dir DIR [--splits train2017 val2017]
    eiou data coco --output-dir DIR --split train TRAIN.json IMAGES/ --split test TEST.json IMAGES/
    eiou data check --config run.yaml

Each preparing command writes ``<output-dir>/<split>.json`` per split, validates it (see
:mod:`eiou.data.validate`) and writes the counts to ``<output-dir>/<split>.validation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eiou.data import DatasetError, coco, synthetic, validate, voc
from eiou.data.coco import image_paths_for, read_json
from eiou.io import write_json

HELP = "prepare a dataset (synthetic, voc, coco) as COCO JSON, or check a run's dataset"


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _common(parser: argparse.ArgumentParser, splits: list[str], root_required: bool = True) -> None:
    parser.add_argument("--root", type=Path, required=root_required, help="dataset root folder")
    parser.add_argument(
        "--output-dir",
        "--out",
        dest="output_dir",
        type=Path,
        default=None,
        help="where <split>.json go (default: --root)",
    )
    parser.add_argument(
        "--splits", nargs="+", default=splits, help="splits to prepare (default: %(default)s)"
    )
    parser.add_argument("--force", action="store_true", help="redo finished splits")
    parser.add_argument("--no-validate", action="store_true", help="skip the validation")
    parser.add_argument(
        "--horizontal-flip",
        type=_bool,
        default=None,
        help="a training option; accepted here and ignored",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    p = sub.add_parser("synthetic", help="generate the synthetic shapes dataset")
    _common(p, ["train", "val"])
    for key, default in synthetic.DEFAULT_OPTIONS.items():
        p.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=default, help="(default %(default)s)"
        )
    for split in ("train", "val", "test"):
        p.add_argument(
            f"--num-{split}",
            type=int,
            default=None,
            help=f"images in {split} (default {synthetic.default_split_size(split)})",
        )

    p = sub.add_parser(
        "voc", help="convert a PASCAL VOC devkit, or any VOC-format folder, to COCO JSON"
    )
    _common(p, ["voc_2007_trainval", "voc_2012_trainval", "voc_2007_test"])
    p.add_argument(
        "--use-difficult",
        type=_bool,
        default=False,
        help="true: difficult objects are ordinary; false (default): ignore regions",
    )
    p.add_argument(
        "--classes",
        nargs="+",
        default=None,
        metavar="NAME",
        help="class names (category ids 1..K in this order), or auto: the sorted names in the "
        "--classes-from splits (default: the 20 PASCAL VOC classes)",
    )
    p.add_argument(
        "--classes-from",
        nargs="+",
        default=None,
        metavar="SPLIT",
        help="with --classes auto: the training splits the names are read from (default: --splits)",
    )

    p = sub.add_parser(
        "coco",
        help="check a COCO 2017 folder and copy the split JSON files, or copy any "
        "COCO-format dataset's (--split)",
    )
    _common(p, ["train2017", "val2017"], root_required=False)
    p.add_argument(
        "--split",
        dest="custom_splits",
        nargs=3,
        action="append",
        default=None,
        metavar=("NAME", "ANNOTATIONS", "IMAGES"),
        help="a split of any COCO-format dataset: its name, annotation file and image folder "
        "(repeat for each split; replaces --root and --splits)",
    )

    p = sub.add_parser(
        "check", help="validate the dataset of a run spec (train, val if any, and test)"
    )
    p.add_argument("--config", type=Path, required=True, help="run spec YAML (run.yaml)")
    p.add_argument(
        "--decode",
        type=_bool,
        default=None,
        help="fully decode every image (default: up to 20000 images)",
    )


def _validate_prepared(
    kind: str, root: Path | None, out: Path, split: str, image_dir: Path | None = None
) -> dict[str, Any]:
    """Validate one prepared split; ``image_dir`` is its image folder when ``root`` does not
    say (a COCO-format dataset's --split)."""
    data = read_json(out / f"{split}.json")
    if image_dir is None:
        if kind == "synthetic":
            image_dir = Path(root) / split
        elif kind == "voc":
            image_dir = voc.image_root(root)
        else:
            image_dir = coco.coco_split_paths(root, split)[1]
    report = validate.validate_coco(
        data, image_paths_for(data, image_dir), name=split, require_annotations=False
    )
    write_json(out / f"{split}.validation.json", report.as_dict())
    return report.as_dict()


def _check(args: argparse.Namespace) -> int:
    import yaml

    with open(args.config, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle) or {}
    data_cfg = spec.get("data", spec)
    decode = "auto" if args.decode is None else args.decode
    result = {}
    result["train"] = validate.validate_dataset(data_cfg, "train", decode_images=decode).as_dict()
    for split in ("val", "test") if data_cfg.get("val_split") else ("test",):
        result[split] = validate.validate_dataset(
            data_cfg, split, train=False, decode_images=decode
        ).as_dict()
    print(json.dumps(result, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if args.kind == "check":
            return _check(args)
        out = args.output_dir or args.root
        image_dirs: dict[str, Path] = {}
        if args.kind == "coco" and args.custom_splits:
            if args.root is not None:
                raise DatasetError("give either --root (COCO 2017 layout) or --split, not both")
            if out is None:
                raise DatasetError("--split needs --output-dir")
            sources = {name: (Path(ann), Path(images)) for name, ann, images in args.custom_splits}
            image_dirs = {name: images for name, (_, images) in sources.items()}
            args.splits = list(sources)
        elif args.root is None:
            raise DatasetError("--root is required (or --split for any COCO-format dataset)")
        if args.kind == "synthetic":
            options = {key: getattr(args, key) for key in synthetic.DEFAULT_OPTIONS}
            sizes = {
                s: getattr(args, f"num_{s}", None) or synthetic.default_split_size(s)
                for s in args.splits
            }
            synthetic.generate(args.root, sizes, options, out_dir=out, force=args.force)
        elif args.kind == "voc":
            classes = "auto" if args.classes == ["auto"] else args.classes
            voc.convert_voc(
                args.root,
                out,
                args.splits,
                use_difficult=args.use_difficult,
                force=args.force,
                **({} if classes is None else {"classes": classes}),
                classes_from=args.classes_from,
            )
        elif image_dirs:
            coco.prepare_custom_coco(out, sources)
        else:
            coco.prepare_coco(args.root, out, args.splits)
        for split in args.splits:
            if not args.no_validate:
                counts = _validate_prepared(args.kind, args.root, out, split, image_dirs.get(split))
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
