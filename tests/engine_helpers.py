"""Run configs on tiny generated data for the detector / training tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

#: Box-loss variants exercised for every detector.
VARIANTS: dict[str, dict[str, Any]] = {
    "smooth_l1": {"box_loss": {"name": "smooth_l1"}},
    "giou": {"box_loss": {"name": "giou"}},
    "full": {  # EIoU + CT (power 2) + SOT + IoU head, Algorithm 1's coder
        "box_loss": {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"},
        "iou_head": {"enabled": True},
        "scoring": {"method": "sqrt_cls_x_iou"},
    },
}


def data_config(root: Path, num_train: int = 8, num_test: int = 4, size: int = 64) -> dict:
    """A synthetic-shapes data section generated under ``root`` on first use."""
    return {
        "kind": "synthetic",
        "root": str(root),
        "train_splits": ["train"],
        "test_split": "test",
        "seed": 0,
        "num_train": num_train,
        "num_test": num_test,
        "image_size": size,
        "num_classes": 3,
        "max_objects": 3,
    }


def run_config(
    data: dict,
    detector: str = "faster_rcnn",
    variant: str = "full",
    size: int = 64,
    **train: Any,
) -> dict:
    """A tiny-backbone run config; ``train`` overrides the train section."""
    model: dict[str, Any] = {"detector": detector, "min_size": size, "max_size": size}
    model.update(copy.deepcopy(VARIANTS[variant]))
    return {
        "name": f"{detector}-{variant}",
        "seed": 3,
        "data": copy.deepcopy(data),
        "model": model,
        "train": {
            "max_iter": 3,
            "batch_size": 2,
            "base_lr": 0.01,
            "base_batch_size": 2,
            "warmup_iters": 2,
            "checkpoint_period": 2,
            "log_period": 1,
            "device": "cpu",
            **train,
        },
        "predict": {"batch_size": 2},
    }


def state_dicts_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names of the entries that differ (bitwise) between two state dicts."""
    if a.keys() != b.keys():
        return sorted(set(a) ^ set(b))
    return [k for k in a if not torch.equal(a[k], b[k])]
