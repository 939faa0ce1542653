"""Iteration-based detector training as in the paper (Sec. V-A), resumable bit for bit.

``train(cfg, output_dir)`` trains the detector of a run config (:mod:`eiou.config`):

- SGD (momentum, weight decay) with ``lr = base_lr * batch_size * world_size /
  base_batch_size`` (linear scaling; the paper: 0.02 at 16 images), where ``batch_size`` is
  the per-process batch (``global_batch_size / world_size`` when that is set), a linear
  warmup from
  ``warmup_factor * lr`` over ``warmup_iters``, and a decay by ``gamma`` at each of ``steps``;
- the data stream is a pure function of ``(seed, position)``: epoch ``e`` visits the
  images in ``randperm(N)`` seeded by ``(seed, e)``, iteration ``i`` of rank ``r`` takes
  positions ``((i * world_size + r) * batch_size + j)``, and each item's augmentation
  (the dataset's horizontal flip) draws from RNGs seeded by ``(seed, position)``. Resuming
  therefore needs only the iteration, and any ``num_workers`` gives the same batches;
- a checkpoint every ``checkpoint_period`` iterations (and at the end) holds the model,
  optimizer, scheduler, AMP scaler, iteration, sampler position and the torch / CUDA /
  numpy / python RNG states of every rank, written atomically into
  ``<output_dir>/checkpoints/``. Rerunning the same command resumes from the newest one; on
  a CPU a killed and resumed run ends with the same weights, bit for bit, as an
  uninterrupted one;
- a non-finite loss stops the run before the optimizer step with
  :class:`NonFiniteLossError`, naming the iteration and the loss term; the checkpoints
  already written are kept;
- ``train_log.jsonl`` gets one JSON record per logged iteration (every loss term, the total,
  the lr, seconds per iteration); ``model_final.pth`` holds the final weights, the config,
  the class names and the iteration.

DDP: launched with ``torchrun`` (``WORLD_SIZE > 1``), each process trains on its share of
each global batch and rank 0 writes the files. Otherwise one process.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from eiou.config import load_run_config
from eiou.data import collate_fn
from eiou.io import atomic_open, save_torch, write_text

__all__ = [
    "IterationBatchSampler",
    "NonFiniteLossError",
    "SeededItems",
    "find_last_checkpoint",
    "lr_factor",
    "per_process_batch_size",
    "scaled_lr",
    "train",
]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last_checkpoint"
FINAL_MODEL = "model_final.pth"
TRAIN_LOG = "train_log.jsonl"
KEEP_CHECKPOINTS = 2
_SEED_STRIDE = 1_000_003


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the iteration and the term."""


# --------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    """Process-group facts: ``rank``, ``world_size``, ``local_rank``; ``world_size == 1``
    means a single process (no ``torch.distributed``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_cfg: str) -> DistInfo:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_cfg != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def _device(device_cfg: str, info: DistInfo) -> torch.device:
    if device_cfg == "auto":
        device_cfg = "cuda" if torch.cuda.is_available() else "cpu"
    if device_cfg == "cuda" and info.distributed:
        return torch.device("cuda", info.local_rank)
    device = torch.device(device_cfg)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {device_cfg!r} but CUDA is not available")
    return device


# --------------------------------------------------------------------------- data
class IterationBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(position, dataset index)`` for iterations ``start_iter..max_iter-1``.

    The global stream visits ``randperm(size)`` seeded by ``(seed, epoch)`` epoch after
    epoch; iteration ``i`` of rank ``r`` takes the stream positions
    ``(i * world_size + r) * batch_size + j`` for ``j < batch_size``.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        start_iter: int,
        max_iter: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if size <= 0:
            raise ValueError("the training dataset is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_iter, self.max_iter = start_iter, max_iter
        self.rank, self.world_size = rank, world_size
        self._perms: dict[int, list[int]] = {}

    def index(self, position: int) -> int:
        """Dataset index at stream ``position``."""
        epoch, offset = divmod(position, self.size)
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
            self._perms[epoch] = torch.randperm(self.size, generator=generator).tolist()
        return self._perms[epoch][offset]

    def positions(self, iteration: int) -> range:
        first = (iteration * self.world_size + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in range(self.start_iter, self.max_iter):
            yield [(p, self.index(p)) for p in self.positions(iteration)]

    def __len__(self) -> int:
        return max(0, self.max_iter - self.start_iter)


class SeededItems(Dataset):
    """``dataset[index]`` with torch / numpy / python RNGs seeded by ``(seed, position)``.

    The global RNG states are restored afterwards, so the item's randomness (e.g. a flip)
    is a pure function of its stream position, in the main process or a worker.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        position, index = item
        item_seed = (self.seed * _SEED_STRIDE + position) % 2**32
        py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002 (the global legacy RNG is what is saved)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(item_seed)
                random.seed(item_seed)
                np.random.seed(item_seed)  # noqa: NPY002 (the global legacy RNG is what is saved)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002 (the global legacy RNG is what is saved)


def _to_device(
    images: list[torch.Tensor], targets: list[dict[str, Any]], device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: v.to(device, non_blocking=True) for k, v in t.items() if isinstance(v, torch.Tensor)}
        for t in targets
    ]
    return images, targets


# --------------------------------------------------------------------------- schedule
def lr_factor(iteration: int, train_cfg: Mapping[str, Any]) -> float:
    """Multiplier of the lr at ``iteration`` (0-based): warmup times step decay."""
    factor = train_cfg["gamma"] ** bisect.bisect_right(train_cfg["steps"], iteration)
    warmup = train_cfg["warmup_iters"]
    if iteration < warmup:
        alpha = iteration / warmup
        factor *= train_cfg["warmup_factor"] * (1 - alpha) + alpha
    return factor


def per_process_batch_size(train_cfg: Mapping[str, Any], world_size: int) -> int:
    """Images per process per iteration: ``global_batch_size / world_size`` if that is set
    (it must divide evenly), else ``batch_size``."""
    total = train_cfg.get("global_batch_size")
    if total is None:
        return int(train_cfg["batch_size"])
    if total % world_size:
        raise ValueError(
            f"train.global_batch_size {total} is not divisible by the {world_size} processes; "
            "launch a number of processes that divides it"
        )
    return total // world_size


def scaled_lr(train_cfg: Mapping[str, Any], batch_size: int, world_size: int) -> float:
    """Linear scaling: ``base_lr`` at ``base_batch_size`` images, times the images of one
    iteration (``batch_size`` per process times ``world_size``) over ``base_batch_size``."""
    return train_cfg["base_lr"] * batch_size * world_size / train_cfg["base_batch_size"]


# --------------------------------------------------------------------------- RNG states
def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain Python values (loadable with ``weights_only``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global legacy RNG is what is saved)
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(name),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": [int(version), list(internal), gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002 (the global legacy RNG is what is saved)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- checkpoints
def find_last_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under ``<output_dir>/checkpoints/``, or ``None``."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    pointer = folder / LAST_CHECKPOINT
    if pointer.is_file():
        path = folder / pointer.read_text(encoding="utf-8").strip()
        if path.is_file():
            return path
    candidates = sorted(folder.glob("model_*.pth"))
    return candidates[-1] if candidates else None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _gather(obj: Any, info: DistInfo) -> list[Any]:
    if not info.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _save_checkpoint(
    output_dir: Path,
    iteration: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    cfg: Mapping[str, Any],
    num_classes: int,
    samples_seen: int,
    info: DistInfo,
) -> Path:
    rng = _gather(_rng_state(), info)
    folder = output_dir / CHECKPOINT_DIR
    path = folder / f"model_{iteration:07d}.pth"
    if info.main:
        save_torch(
            path,
            {
                "model": _unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "iteration": iteration,
                "sampler": {"samples_seen": samples_seen, "world_size": info.world_size},
                "rng": rng,
                "config": dict(cfg),
                "num_classes": num_classes,
            },
        )
        write_text(folder / LAST_CHECKPOINT, path.name + "\n")
        for old in sorted(folder.glob("model_*.pth"))[:-KEEP_CHECKPOINTS]:
            old.unlink(missing_ok=True)
    return path


def _check_compatible(saved: Mapping[str, Any], cfg: Mapping[str, Any], path: Path) -> None:
    for key in ("model", "seed"):
        if saved.get(key) != cfg.get(key):
            raise ValueError(
                f"{path} was written by a run with a different '{key}' config; resume with the "
                "same run config, or start over with --no-resume (or another output dir)"
            )
    for key in (
        "batch_size",
        "global_batch_size",
        "base_lr",
        "base_batch_size",
        "steps",
        "warmup_iters",
    ):
        if saved["train"].get(key) != cfg["train"].get(key):
            log.warning(
                "resuming %s with train.%s changed from %r to %r",
                path,
                key,
                saved["train"].get(key),
                cfg["train"].get(key),
            )


# --------------------------------------------------------------------------- log
def _restart_log(path: Path, start_iter: int) -> None:
    """Keep the records of iterations <= ``start_iter`` (a resumed run rewrites the rest)."""
    kept = []
    if path.is_file() and start_iter > 0:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= start_iter:
                    kept.append(line)
            except json.JSONDecodeError:
                break  # a torn last line of a killed run
    with atomic_open(path, "w") as handle:
        handle.write("".join(line + "\n" for line in kept))


# --------------------------------------------------------------------------- training
def _build_train_dataset(cfg: Mapping[str, Any], info: DistInfo) -> Dataset:
    from eiou import data

    if info.main:
        data.validate_dataset(cfg["data"], "train", train=True)
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()
    return data.build_dataset(cfg["data"], "train", train=True)


def _num_classes(dataset: Dataset) -> int:
    names = getattr(dataset, "class_names", None)
    if names is None:
        raise ValueError("the training dataset has no .class_names")
    return len(names)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global legacy RNG is what is saved)
    torch.manual_seed(seed)


def train(
    cfg: str | os.PathLike[str] | Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    dataset: Dataset | None = None,
    progress: bool = True,
    callbacks: Sequence[Callable[[int], None]] = (),
) -> Path:
    """Train the run config's detector into ``output_dir``; return ``model_final.pth``.

    Args:
        cfg: a run config (file or mapping; see :mod:`eiou.config`).
        output_dir: receives ``checkpoints/``, ``train_log.jsonl``, ``run_config.yaml`` and
            ``model_final.pth``.
        resume: continue from the newest checkpoint in ``output_dir`` if there is one.
        dataset: a training dataset to use instead of ``eiou.data.build_dataset(cfg.data,
            "train", train=True)`` (items and ``.class_names`` as that returns).
        progress: show a tqdm bar (rank 0).
        callbacks: called with the number of completed iterations after each iteration
            (after any checkpoint of that iteration is written).

    Raises:
        NonFiniteLossError: a loss term became NaN / inf (nothing of that iteration is saved).
        WeightsUnavailableError: the backbone weights asked for are not on this machine.
    """
    from tqdm import tqdm

    from eiou.engines import build_detector, check_weights

    cfg = load_run_config(cfg)
    tcfg = cfg["train"]
    output_dir = Path(output_dir)
    check_weights(cfg["model"])  # fail before the data
    info = _init_distributed(tcfg["device"])
    device = _device(tcfg["device"], info)
    if dataset is None:
        dataset = _build_train_dataset(cfg, info)
    num_classes = _num_classes(dataset)

    _seed_all(cfg["seed"] + info.rank)
    model = build_detector(cfg["model"], num_classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    batch_size, max_iter = per_process_batch_size(tcfg, info.world_size), tcfg["max_iter"]
    lr = scaled_lr(tcfg, batch_size, info.world_size)
    optimizer = torch.optim.SGD(
        params, lr=lr, momentum=tcfg["momentum"], weight_decay=tcfg["weight_decay"]
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, tcfg))
    use_amp = bool(tcfg["amp"])
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and device.type == "cuda")
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    start_iter = 0
    checkpoint = find_last_checkpoint(output_dir) if resume else None
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        _check_compatible(state["config"], cfg, checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_iter = int(state["iteration"])
        rng = state["rng"]
        _set_rng_state(rng[info.rank] if len(rng) == info.world_size else rng[0])
        log.info("resumed from %s at iteration %d", checkpoint, start_iter)
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    log_path = output_dir / TRAIN_LOG
    if info.main:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text(output_dir / "run_config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        _restart_log(log_path, start_iter)
    sampler = IterationBatchSampler(
        len(dataset), batch_size, cfg["seed"], start_iter, max_iter, info.rank, info.world_size
    )
    loader = DataLoader(
        SeededItems(dataset, cfg["seed"]),
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=tcfg["num_workers"],
        generator=torch.Generator().manual_seed(cfg["seed"]),
        pin_memory=device.type == "cuda",
    )
    last_good = checkpoint
    model.train()
    bar = tqdm(
        total=max_iter,
        initial=start_iter,
        desc=str(cfg["name"]),
        disable=not (progress and info.main),
        dynamic_ncols=True,
        mininterval=1.0,
    )
    iteration = start_iter
    tic = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") if info.main else _null() as log_file:
        for images, targets in loader:
            images, targets = _to_device(images, targets, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss_dict = model(images, targets)
            names = sorted(loss_dict)
            values = torch.stack([loss_dict[k].detach().float() for k in names])
            if info.distributed:
                import torch.distributed as dist

                dist.all_reduce(values)
                values /= info.world_size
            if not bool(torch.isfinite(values).all()):
                bad = ", ".join(
                    f"{k}={v:g}"
                    for k, v in zip(names, values.tolist(), strict=True)
                    if not np.isfinite(v)
                )
                raise NonFiniteLossError(
                    f"non-finite loss at iteration {iteration + 1} ({bad}); training stopped. "
                    f"Last good checkpoint: {last_good or 'none'}"
                )
            total = sum(loss_dict[k] for k in names)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            current_lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            iteration += 1
            bar.update(1)
            if info.main and (
                iteration % tcfg["log_period"] == 0
                or iteration == max_iter
                or iteration == start_iter + 1
            ):
                toc = time.perf_counter()
                record = {
                    "iteration": iteration,
                    "lr": current_lr,
                    "loss": float(values.sum()),
                    **{k: float(v) for k, v in zip(names, values.tolist(), strict=True)},
                    "seconds_per_iteration": (toc - tic) / max(1, iteration - start_iter),
                }
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{current_lr:.2g}")
            if iteration % tcfg["checkpoint_period"] == 0 or iteration == max_iter:
                last_good = _save_checkpoint(
                    output_dir,
                    iteration,
                    model,
                    optimizer,
                    scheduler,
                    scaler,
                    cfg,
                    num_classes,
                    iteration * batch_size * info.world_size,
                    info,
                )
            for callback in callbacks:
                callback(iteration)
    bar.close()
    final = output_dir / FINAL_MODEL
    if info.main:
        save_torch(
            final,
            {
                "model": _unwrap(model).state_dict(),
                "config": cfg,
                "num_classes": num_classes,
                "class_names": list(getattr(dataset, "class_names", [])),
                "iteration": iteration,
            },
        )
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()
    return final


class _null:
    """A do-nothing context manager standing in for the log file on ranks > 0."""

    def __enter__(self) -> _null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, _: str) -> None:
        return None

    def flush(self) -> None:
        return None
