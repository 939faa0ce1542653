"""Images far larger than the training size (aerial images of 2.5k px): the detector resizes
each image to ``min_size`` / ``max_size`` before the backbone, so such an image costs memory
for its pixels only, and predictions come back in its own pixels.

Peak memory is measured in fresh processes (``ru_maxrss``), a 2560 x 1600 pair against a
256 x 160 pair of the same content, one training step and one prediction each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, resource, sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eiou.config import load_run_config
from eiou.data import build_dataset, collate_fn
from eiou.engines import build_detector

root, width, height = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
(root / "images").mkdir(parents=True)
images, annotations = [], []
for i in (1, 2):  # a block covering the same fraction of each image
    box = [width * 0.25 * i, height * 0.3, width * 0.2, height * 0.4]
    x, y, w, h = (round(v) for v in box)
    pixels = np.full((height, width, 3), 90, dtype=np.uint8)
    pixels[y : y + h, x : x + w] = (200, 60, 40)
    Image.fromarray(pixels).save(root / "images" / f"TILE_{i}.png")
    images.append({"id": i, "file_name": f"TILE_{i}.png", "width": width, "height": height})
    annotations.append({"id": i, "image_id": i, "category_id": 3, "bbox": [x, y, w, h]})
(root / "train.json").write_text(json.dumps(
    {"images": images, "annotations": annotations, "categories": [{"id": 3, "name": "Roof"}]}
))
cfg = load_run_config({
    "data": {"kind": "coco", "splits": {"train": {"annotations": str(root / "train.json"),
             "images": str(root / "images")}}, "train_splits": ["train"]},
    "model": {"backbone": "tiny", "min_size": 128, "max_size": 192},
}, deep=False)
torch.manual_seed(0)
dataset = build_dataset(cfg["data"], "train", train=True)
model = build_detector(cfg["model"], len(dataset.class_names), load_weights=False)
batch, targets = collate_fn([dataset[0], dataset[1]])
model.train()
sum(model(batch, targets).values()).backward()
model.eval()
with torch.no_grad():
    resized = model.transform(batch)[0].image_sizes
    outputs = model(batch)
print(json.dumps({
    "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "resized": [list(s) for s in resized],
}))
"""


def _measure(tmp_path: Path, width: int, height: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / f"{width}x{height}"), str(width),
         str(height)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_large_images_are_resized_before_the_network(tmp_path):
    small = _measure(tmp_path, 256, 160)
    large = _measure(tmp_path, 2560, 1600)
    # short side 128 unless the long side would pass 192: 2560 x 1600 -> 192 x 120
    assert large["resized"] == small["resized"] == [[120, 192], [120, 192]]
    # the images themselves: 2 x (uint8 + float32 + normalised float32) = 211 MB; features
    # at full size would take gigabytes (one 256-channel map at stride 4: 262 MB an image)
    pixels_mb = 2 * 2560 * 1600 * 3 * (1 + 4 + 4) / 2**20
    assert large["maxrss_mb"] - small["maxrss_mb"] < 3 * pixels_mb, (large, small)
