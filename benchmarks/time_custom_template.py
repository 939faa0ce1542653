"""GPU time and memory of one training iteration of the ``custom`` preset's setting.

Usage (on a machine with a CUDA GPU)::

    python benchmarks/time_custom_template.py

torchvision's Faster R-CNN + FPN on ResNet-50 with frozen batch norm and stages 3-5 trained
(what ``config/custom.yaml`` builds with ImageNet weights; the weights themselves do not
change the time), ``min_size`` 800 and ``max_size`` 1333, SGD with momentum. Each batch holds
4 (then 8) random images of 400-2500 px (long side; aspect 0.6-1), already on the GPU, with 6
boxes each: this is the GPU's share of an iteration, without data loading and without the
box loss's own cost (1.003x smooth-L1's iteration for the full method,
``benchmarks/results/train_iteration_cpu.md``). 10 warm-up iterations, then the mean of 40.
Prints seconds per iteration, the peak of allocated GPU memory, and the prediction time per
image.
"""

import random
import sys
import time

import torch
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import misc

if not torch.cuda.is_available():
    sys.exit("time_custom_template.py measures GPU time: it needs a CUDA GPU (none found)")
torch.manual_seed(0)
random.seed(0)
dev = "cuda"
body = _resnet_fpn_extractor(resnet50(norm_layer=misc.FrozenBatchNorm2d), 3)
model = FasterRCNN(body, num_classes=3, min_size=800, max_size=1333).to(dev).train()
opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)


def batch(n=4):
    ims, tg = [], []
    for _ in range(n):
        long = random.randint(400, 2500)
        ar = random.uniform(0.6, 1.0)
        w, h = (long, int(long * ar)) if random.random() < 0.5 else (int(long * ar), long)
        ims.append(torch.rand(3, h, w, device=dev))
        xy = torch.rand(6, 2, device=dev) * torch.tensor([w * 0.8, h * 0.8], device=dev)
        wh = 8 + torch.rand(6, 2, device=dev) * torch.tensor([w * 0.2, h * 0.2], device=dev)
        labels = torch.randint(1, 3, (6,), device=dev)
        tg.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": labels})
    return ims, tg


def step(ims, tg):
    loss = sum(model(ims, tg).values())
    opt.zero_grad()
    loss.backward()
    opt.step()


for bs in (4, 8):
    data = [batch(bs) for _ in range(8)]
    for i in range(10):
        step(*data[i % 8])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for i in range(40):
        step(*data[i % 8])
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / 40
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"batch {bs}: {dt:.3f} s/iter, peak {peak:.1f} GiB, 6000 iters = {6000 * dt / 60:.0f} min"
    )
model.eval()
with torch.no_grad():
    ims, _ = batch(4)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        model(ims)
    torch.cuda.synchronize()
    print(f"predict: {(time.perf_counter() - t) / 40:.3f} s/image")
print(torch.cuda.get_device_name())
