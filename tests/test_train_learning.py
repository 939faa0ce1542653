"""A short CPU run of the full method on generated shapes learns to detect them."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import data_config, run_config

from eiou.config import load_run_config
from eiou.data import build_dataset
from eiou.engines.torchvision import build_detector
from eiou.evaluate import evaluate_predictions
from eiou.io import save_torch
from eiou.predict import predict
from eiou.train import train


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_full_method_learns_on_synthetic_shapes(tmp_path) -> None:
    torch.set_num_threads(1)
    data = data_config(tmp_path / "data", num_train=48, num_test=16, size=128)
    cfg = run_config(
        data,
        "faster_rcnn",
        "full",
        size=128,
        max_iter=250,
        batch_size=4,
        base_lr=0.02,
        base_batch_size=4,
        warmup_iters=20,
        steps=[200],
        checkpoint_period=250,
        log_period=25,
    )
    gt = build_dataset(data, "test", train=False).coco

    untrained = tmp_path / "untrained.pth"  # same architecture, initial weights
    torch.manual_seed(cfg["seed"])
    model = build_detector(load_run_config(cfg)["model"], 3)
    save_torch(untrained, {"model": model.state_dict(), "config": cfg, "num_classes": 3})
    before = evaluate_predictions(gt, predict(cfg, untrained, tmp_path / "p0.json", progress=False))

    final = train(cfg, tmp_path / "run", progress=False)
    after = evaluate_predictions(gt, predict(cfg, final, tmp_path / "p1.json", progress=False))
    assert after["AP50"] > 0.2, after
    assert after["AP50"] > before["AP50"] + 0.15, (before["AP50"], after["AP50"])
    assert after["AP"] > before["AP"]
