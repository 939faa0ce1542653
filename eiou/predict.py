"""Run a trained detector on a split; write COCO-format results.

``predict(cfg, checkpoint, output)`` loads ``model_final.pth`` (or a training checkpoint),
runs the detector on ``predict.split`` (``"test"``: the data config's ``test_split``) and
writes, atomically, a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}`` (pixels of the original image; category ids through the dataset's
``label_to_category_id``). Scores are those of the configured scoring method
(``model.scoring.method``). The backbone's pretrained weights are not needed: the
checkpoint holds every weight.

``candidates=path`` also writes each image's candidates (the inputs of the detector's NMS,
see :mod:`eiou.rescoring`), so that every other scoring method can be evaluated without
running the network again (``eiou rescore``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from eiou.config import load_run_config
from eiou.data import collate_fn
from eiou.io import write_json

__all__ = ["load_detector", "predict", "to_coco_results"]


def load_detector(
    checkpoint: str | os.PathLike[str], cfg: Mapping[str, Any] | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The detector of ``checkpoint`` in eval mode, and its run config.

    ``cfg`` (optional) overrides the checkpoint's config for inference settings (the
    ``scoring`` section); the architecture always comes from the checkpoint.
    """
    from eiou.engines import build_detector

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (train the run first)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = load_run_config(state["config"])
    model_cfg = dict(saved["model"])
    if cfg is not None:
        model_cfg["scoring"] = dict(cfg["model"]["scoring"])
        if not model_cfg["iou_head"]["enabled"] and model_cfg["scoring"]["method"] != "cls":
            raise ValueError(
                f"model.scoring.method {model_cfg['scoring']['method']!r} needs an IoU head, "
                f"and the model of {path} has none"
            )
    model = build_detector(model_cfg, int(state["num_classes"]), load_weights=False)
    model.load_state_dict(state["model"])
    return model.eval(), {**saved, "model": model_cfg}


def to_coco_results(
    output: Mapping[str, torch.Tensor], image_id: int, label_to_category_id: Mapping[int, int]
) -> list[dict[str, Any]]:
    """One image's detections (``boxes`` xyxy, ``labels``, ``scores``) as COCO results."""
    boxes = output["boxes"].detach().cpu().double()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    return [
        {
            "image_id": int(image_id),
            "category_id": int(label_to_category_id[int(label)]),
            "bbox": [round(v, 3) for v in box],
            "score": round(float(score), 6),
        }
        for box, label, score in zip(
            xywh, output["labels"].tolist(), output["scores"].tolist(), strict=True
        )
    ]


def _on_cpu(candidates: Mapping[str, Any] | None) -> dict[str, Any]:
    """One image's recorded candidates, on the CPU; an engine that recorded none, or no
    ``scale``, is an error (see :func:`eiou.scoring.record_candidates`)."""
    if candidates is None:
        raise RuntimeError(
            "the detector returned no candidates: its engine must select detections with "
            "eiou.scoring.select_detections"
        )
    if candidates.get("scale") is None:
        raise RuntimeError(
            "the detector's candidates have no 'scale': its engine must record the factors "
            "that map its boxes to the image's pixels"
        )
    return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in candidates.items()}


def predict(
    cfg: str | os.PathLike[str] | Mapping[str, Any],
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    split: str | None = None,
    dataset: Dataset | None = None,
    device: str | None = None,
    progress: bool = True,
    candidates: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Predict ``split`` with ``checkpoint``; write and return the COCO results list.

    Args:
        cfg: the run config (file or mapping); its ``data`` and ``model.scoring`` are used.
        checkpoint: ``model_final.pth`` or a training checkpoint.
        output: the JSON file to write (atomically).
        split: overrides ``predict.split``.
        dataset: a dataset to use instead of ``eiou.data.build_dataset(cfg.data, split,
            train=False)``; it must have ``.label_to_category_id``.
        device: overrides ``train.device`` (``auto``: CUDA when available).
        progress: show a tqdm bar.
        candidates: also write the candidates of every image to this file (atomically;
            :mod:`eiou.rescoring` describes it).
    """
    from tqdm import tqdm

    from eiou.scoring import record_candidates

    cfg = load_run_config(cfg)
    model, _ = load_detector(checkpoint, cfg)
    device_name = device or cfg["train"]["device"]
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device_name)
    if dataset is None:
        from eiou.data import build_dataset

        dataset = build_dataset(cfg["data"], split or cfg["predict"]["split"], train=False)
    mapping = dataset.label_to_category_id  # type: ignore[attr-defined]
    loader = DataLoader(
        dataset,
        batch_size=cfg["predict"]["batch_size"],
        shuffle=False,
        num_workers=cfg["train"]["num_workers"],
        collate_fn=collate_fn,
    )
    results: list[dict[str, Any]] = []
    recorded: list[tuple[int, dict[str, Any]]] = []
    recording = record_candidates() if candidates is not None else contextlib.nullcontext()
    with torch.inference_mode(), recording:
        for images, targets in tqdm(loader, desc="predict", disable=not progress):
            outputs = model([img.to(device_name) for img in images])
            for out, target in zip(outputs, targets, strict=True):
                image_candidates = out.pop("candidates", None)
                if candidates is not None:
                    recorded.append((int(target["image_id"]), _on_cpu(image_candidates)))
                results += to_coco_results(out, int(target["image_id"]), mapping)
    if candidates is not None:
        from eiou.rescoring import pack_candidates, save_candidates

        packed = pack_candidates(
            recorded,
            label_to_category_id=mapping,
            scoring=cfg["model"]["scoring"],
            run=cfg["name"],
        )
        save_candidates(candidates, packed)
    write_json(output, results, indent=None)
    return results
