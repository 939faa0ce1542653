"""Run configs on tiny generated data for the detector / training tests."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch

from eiou.train import find_last_checkpoint, train

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


#: Trains a run config (argv 1, JSON) into a folder (argv 2) and SIGKILLs itself after the
#: iteration given in argv 3.
KILL_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from eiou.train import train
    cfg, out, kill_at = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    def kill(iteration):
        # under torchrun only rank 0, the writer, dies; the launcher then stops the others
        if iteration == kill_at and os.environ.get("RANK", "0") == "0":
            os.kill(os.getpid(), signal.SIGKILL)
    train(cfg, out, progress=False, callbacks=[kill])
    """
)


def train_until_killed(cfg: dict, out: Path, kill_at: int) -> None:
    """Train ``cfg`` into ``out`` in a subprocess (one thread) that SIGKILLs itself after
    iteration ``kill_at``; assert it died so."""
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, json.dumps(cfg), str(out), str(kill_at)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == -9, proc.stderr[-2000:]


def read_train_log(path: Path, events: bool = False) -> list[dict]:
    """The records of ``<path>/train_log.jsonl``: training steps, or (``events``) the others."""
    records = [json.loads(x) for x in (path / "train_log.jsonl").read_text().splitlines()]
    return [r for r in records if ("event" in r) == events]


def check_kill_and_resume(cfg: dict, tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """Train ``cfg`` (7 iterations, a checkpoint every 2) killed after iteration 5 and
    resumed; assert it ends bit-identical (weights and log) to an uninterrupted run with a
    worker process, that the log records the resume, and that rerunning the finished run
    rewrites the same weights. Returns the killed run's folder and the final weights."""
    assert cfg["train"]["max_iter"] == 7 and cfg["train"]["checkpoint_period"] == 2
    killed = tmp_path / "killed"
    train_until_killed(cfg, killed, 5)
    assert find_last_checkpoint(killed).name == "model_0000004.pth"
    assert not (killed / "model_final.pth").exists()
    assert [r["iteration"] for r in read_train_log(killed)] == [1, 2, 3, 4, 5]
    train(cfg, killed, progress=False)  # the same call resumes

    reference = tmp_path / "uninterrupted"
    train({**cfg, "train": {**cfg["train"], "num_workers": 1}}, reference, progress=False)
    final_a = torch.load(killed / "model_final.pth", weights_only=True)
    final_b = torch.load(reference / "model_final.pth", weights_only=True)
    assert state_dicts_equal(final_a["model"], final_b["model"]) == []
    log_a, log_b = read_train_log(killed), read_train_log(reference)
    assert [r["iteration"] for r in log_a] == list(range(1, 8))
    for a, b in zip(log_a, log_b, strict=True):
        a.pop("seconds_per_iteration"), b.pop("seconds_per_iteration")
        assert a == b
    (event,) = read_train_log(killed, events=True)
    assert event["event"] == "resumed" and event["iteration"] == 4
    assert event["interrupted_after"] == 5  # iteration 5 was lost and redone
    # a finished run reruns as a no-op that rewrites the same final weights
    train(cfg, killed, progress=False)
    again = torch.load(killed / "model_final.pth", weights_only=True)
    assert state_dicts_equal(again["model"], final_b["model"]) == []
    return killed, final_b["model"]
