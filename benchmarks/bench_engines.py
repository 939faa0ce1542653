"""Time per training iteration of R-50-FPN Faster R-CNN: torchvision engine vs detectron2 engine.

Usage::

    python benchmarks/bench_engines.py                  # CPU: small images
        [--size 128] [--max-size 128] [--batch-size 2] [--rounds 5] [--iterations 1]
        [--warmup 2] [--threads 1] [--output benchmarks/results/engines_cpu.md]
    python benchmarks/bench_engines.py --device cuda    # GPU: the paper's image size
        (short side 800, long side up to 1333, 2 images; --output engines_cuda.md)

Both engines train ResNet-50 + FPN Faster R-CNN from scratch (``weights: none``: GroupNorm,
every stage trained) with their own defaults (``eiou.engines.torchvision`` /
``eiou.engines.detectron2``), on the same fixed batch (random images with 1-8 random boxes
each, seeded): once with smooth-L1 (the engine's own settings) and once with the full method
(EIoU, power 2, SOT, the ``sqrt_area`` coder, the IoU head, scoring ``sqrt_cls_x_iou``).
One iteration is what ``eiou.train`` does per step: forward with targets, the sum of the
losses, ``backward`` and an SGD step (momentum 0.9, weight decay 1e-4, lr 0.002). Each model
first runs ``--warmup`` untimed iterations; then rounds are interleaved (each round times
``--iterations`` iterations of every model in turn, from the same RNG seed, so the samplers
draw alike), on CUDA synchronised before and after. The table reports the median seconds per
iteration (on a CPU the process's CPU time, one thread by default, so that other work on a
shared machine does not enter the ratios; the wall clock beside it), the ratio to
torchvision's smooth-L1 and, per engine, the full method's ratio to its smooth-L1. Needs
detectron2 (the optional engine; its compiled ``_C`` is not used).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from bench_train_iteration import step  # one training iteration, as eiou.train takes it

from eiou import io
from eiou.config import load_run_config
from eiou.engines import build_detector

ENGINES = ("torchvision", "detectron2")
VARIANTS: dict[str, dict] = {
    "smooth_l1": {"box_loss": {"name": "smooth_l1"}},
    "full": {
        "box_loss": {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"},
        "iou_head": {"enabled": True},
        "scoring": {"method": "sqrt_cls_x_iou"},
    },
}
#: (short side, long side cap, images) per device unless given.
DEVICE_DEFAULTS = {"cpu": (128, 128, 2), "cuda": (800, 1333, 2)}


def make_batch(
    batch_size: int, height: int, width: int, device: torch.device, seed: int = 0
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Fixed random images ``(3, height, width)`` in [0, 1] with 1-8 valid boxes each."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch_size):
        images.append(torch.rand(3, height, width, generator=g).to(device))
        n = int(torch.randint(1, 9, (), generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * 0.7
        wh = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * 0.3 + 8
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([width, height]))], 1)
        labels = torch.randint(1, 4, (n,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def make_model(
    engine: str, variant: dict, min_size: int, max_size: int, device: torch.device
) -> tuple[torch.nn.Module, torch.optim.SGD]:
    model_cfg = {
        "engine": engine,
        "detector": "faster_rcnn",
        "backbone": "resnet50",
        "weights": "none",
        "min_size": min_size,
        "max_size": max_size,
        **variant,
    }
    cfg = load_run_config({"model": model_cfg})
    torch.manual_seed(0)
    model = build_detector(cfg["model"], 3).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=1e-4)


def bench(
    models: dict[str, tuple[torch.nn.Module, torch.optim.SGD]],
    batch: tuple[list, list],
    rounds: int,
    iterations: int,
    warmup: int,
    device: torch.device,
) -> dict[str, tuple[float, float]]:
    """Median wall-clock and process CPU seconds per iteration of each model (interleaved
    rounds, warm-up excluded)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for model, optimizer in models.values():
        for _ in range(warmup):
            step(model, optimizer, batch)
    sync()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for r in range(rounds):
        for name, (model, optimizer) in models.items():
            torch.manual_seed(1000 + r)  # the same RPN / RoI sampling draws for every model
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(iterations):
                step(model, optimizer, batch)
            sync()
            times[name].append(
                (
                    (time.perf_counter() - wall) / iterations,
                    (time.process_time() - cpu) / iterations,
                )
            )
    return {
        name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
        for name, t in times.items()
    }


def _machine(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{platform.processor() or platform.machine()} CPU, {threads} thread(s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--size", type=int, help="short side (default: cpu 128, cuda 800)")
    parser.add_argument("--max-size", type=int, help="long-side cap (cpu 128, cuda 1333)")
    parser.add_argument("--batch-size", type=int, help="images per iteration (default 2)")
    parser.add_argument("--rounds", type=int, help="interleaved timed rounds (cpu 5, cuda 7)")
    parser.add_argument("--iterations", type=int, help="iterations per round (cpu 1, cuda 5)")
    parser.add_argument("--warmup", type=int, help="untimed iterations (cpu 2, cuda 5)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--output", type=Path, help="Markdown file to write")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    kind = device.type
    if kind == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available here")
    size, max_size, batch_size = DEVICE_DEFAULTS[kind]
    size, max_size = args.size or size, args.max_size or max_size
    batch_size = args.batch_size or batch_size
    rounds = args.rounds or (7 if kind == "cuda" else 5)
    iterations = args.iterations or (5 if kind == "cuda" else 1)
    warmup = args.warmup or (5 if kind == "cuda" else 2)
    output = args.output or Path(f"benchmarks/results/engines_{kind}.md")
    torch.set_num_threads(args.threads)

    import detectron2

    compiled = importlib.util.find_spec("detectron2._C") is not None
    # a 4:3 image whose short side is already `size` (neither engine resizes it)
    height, width = size, min(max_size, round(size * 4 / 3))
    batch = make_batch(batch_size, height, width, device)
    models = {
        (engine, name): make_model(engine, variant, size, max_size, device)
        for engine in ENGINES
        for name, variant in VARIANTS.items()
    }
    medians = bench(models, batch, rounds, iterations, warmup, device)
    # on a CPU the process's CPU time (one thread: the compute alone, whatever else runs on
    # the machine); on CUDA the synchronised wall clock
    column = 1 if kind == "cpu" else 0
    timed = {key: value[column] for key, value in medians.items()}
    base = timed[("torchvision", "smooth_l1")]

    command = "python benchmarks/bench_engines.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    clock = "process CPU time" if kind == "cpu" else "wall clock, CUDA synchronised"
    lines = [
        f"# Time per training iteration: torchvision vs detectron2 engine ({kind.upper()})",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {_machine(device, args.threads)}; torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, detectron2 {detectron2.__version__} (compiled `_C` "
        f"{'present, unused' if compiled else 'absent'}). R-50-FPN Faster R-CNN from scratch, "
        f"{batch_size} images of {height}x{width} px (short side {size}, cap {max_size}), "
        f"fp32; {warmup} warm-up iterations per model excluded, then the median of {rounds} "
        f"interleaved rounds of {iterations} iterations (forward + backward + SGD step), "
        f"timed by the {clock}.",
        "",
        "| engine | variant | s / iteration | vs torchvision smooth-L1 | full vs smooth-L1 "
        "| wall s / iteration |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for engine, name in models:
        value = timed[(engine, name)]
        own = value / timed[(engine, "smooth_l1")]
        lines.append(
            f"| {engine} | {name} | {value:.4f} | {value / base:.3f}x | "
            f"{f'{own:.3f}x' if name == 'full' else ''} | {medians[(engine, name)][0]:.4f} |"
        )
        print(f"{engine:12s} {name:10s} {value:.4f} s  {value / base:.3f}x", flush=True)
    ratio = timed[("detectron2", "smooth_l1")] / base
    lines += [
        "",
        f"detectron2 engine / torchvision engine (smooth-L1): {ratio:.3f}x. Each engine runs "
        "its own defaults (proposals, sampled RoIs, RoIAlign flavour; see docs/detectron2.md), "
        "so the ratio compares the engines as configured, not the frameworks alone.",
        "",
    ]
    io.write_text(output, "\n".join(lines))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
