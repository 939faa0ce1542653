"""Iteration-based detector training as in the paper (Sec. V-A), resumable bit for bit.

``train(cfg, output_dir)`` trains the detector of a run config (:mod:`eiou.config`) with
any engine (:mod:`eiou.engines`), in named parts: a :class:`TrainState` (model, optimizer,
lr schedule, AMP scaler, iteration), :func:`resume_training` (from the newest checkpoint),
:func:`train_step` (one SGD step; a non-finite loss stops the run) and the hooks that
log, checkpoint and show progress after each step.

- SGD (momentum, weight decay) with ``lr = base_lr * batch_size / base_batch_size``
  (linear scaling; the paper: 0.02 at 16 images). ``train.batch_size`` counts the images of
  one iteration over all processes: each of ``N`` processes takes ``batch_size / N``, so a
  config means the same on 1 or 8 GPUs. A linear warmup from ``warmup_factor * lr`` over
  ``warmup_iters``, and a decay by ``gamma`` at each of ``steps``.
- The data stream is a pure function of ``(seed, position)``: epoch ``e`` visits the
  images in ``randperm(N)`` seeded by ``(seed, e)``; iteration ``i`` takes the positions
  ``i * batch_size .. (i + 1) * batch_size - 1``, rank ``r`` its ``r``-th share; each item's
  augmentation (the dataset's horizontal flip) draws from RNGs seeded by
  ``(seed, position)``. Resuming therefore needs only the iteration, and any
  ``num_workers`` gives the same batches.
- A checkpoint every ``checkpoint_period`` iterations holds the model, optimizer,
  scheduler, AMP scaler, iteration, the RNG states of every rank, the run config and a
  digest of the ``eiou`` source, written atomically into ``<output_dir>/checkpoints/``.
  Rerunning the same command resumes from the newest one; on a CPU a killed and resumed
  run ends with the same weights, bit for bit, as an uninterrupted one. A checkpoint of a
  different run config is refused; one written by different ``eiou`` code is resumed with
  a warning in the log and a ``resumed`` record in ``train_log.jsonl`` (never silently).
- At the end ``model_final.pth`` (final weights, config, class names, iteration,
  provenance: the training machine's threads, CPU/GPU, torch/CUDA/cuDNN versions and
  determinism flags, the code digest, the calibrated stage settings) is written, then the
  final checkpoint. A complete run whose
  ``model_final.pth`` was removed (``snakemake -R train``, or by hand) trains again from
  scratch instead of re-saving the old weights.
- A non-finite loss stops the run before the optimizer step with
  :class:`NonFiniteLossError`, naming the iteration and the loss term; the checkpoints
  already written are kept.
- ``train_log.jsonl`` gets one JSON record per logged iteration (every loss term, the
  total, the lr, seconds per iteration); a resumed run keeps the records up to the
  checkpoint it resumed from and appends the rest.

DDP: launched with ``torchrun`` (``WORLD_SIZE > 1``), each process trains on its share of
each batch and rank 0 writes the files (:mod:`eiou.distributed`).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from eiou.config import RunConfigError, load_run_config
from eiou.data import collate_fn
from eiou.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    init_distributed,
    mean_over_processes,
    resolve_device,
    unwrap,
)
from eiou.io import atomic_open, save_torch, write_text

__all__ = [
    "IterationBatchSampler",
    "NonFiniteLossError",
    "SeededItems",
    "TrainState",
    "code_digest",
    "find_last_checkpoint",
    "lr_factor",
    "per_process_batch_size",
    "resume_training",
    "scaled_lr",
    "train",
    "train_step",
]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last_checkpoint"
FINAL_MODEL = "model_final.pth"
TRAIN_LOG = "train_log.jsonl"
KEEP_CHECKPOINTS = 2
_SEED_STRIDE = 1_000_003
#: Run-config keys that may differ between a checkpoint and the run resuming it: they
#: change where and how fast a run goes, not what it computes.
RESUMABLE_CHANGES: tuple[str, ...] = (
    "name",
    "spec_version",
    "data.root",
    "data.annotations",
    "data.splits",
    "train.device",
    "train.num_workers",
    "train.processes",
    "train.checkpoint_period",
    "train.log_period",
    "predict",
)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the iteration and the term."""


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
    """Images per process per iteration: ``batch_size / world_size`` (it must divide)."""
    total = int(train_cfg["batch_size"])
    if total % world_size:
        raise ValueError(
            f"train.batch_size {total} is not divisible by the {world_size} processes; "
            "launch a number of processes that divides it"
        )
    return total // world_size


def scaled_lr(train_cfg: Mapping[str, Any]) -> float:
    """Linear scaling: ``base_lr`` at ``base_batch_size`` images, times ``batch_size`` (the
    images of one iteration over all processes) over ``base_batch_size``."""
    return train_cfg["base_lr"] * train_cfg["batch_size"] / train_cfg["base_batch_size"]


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


# --------------------------------------------------------------------------- state
@functools.cache
def code_digest() -> str:
    """SHA-256 (16 hex digits) of the ``eiou`` package's Python sources."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class TrainState:
    """Everything a training step changes, and what it needs to take one."""

    cfg: dict[str, Any]
    info: DistInfo
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    num_classes: int
    batch_size: int  # per process
    iteration: int = 0
    amp_dtype: torch.dtype | None = None  # autocast dtype, None: AMP off
    checkpoint: Path | None = None  # the newest checkpoint written or resumed from
    events: list[dict[str, Any]] = field(default_factory=list)  # for the log

    def checkpoint_payload(self) -> dict[str, Any]:
        """The checkpoint of this state; rank 0 saves it (RNG states of every rank)."""
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "sampler": {
                "samples_seen": self.iteration * self.cfg["train"]["batch_size"],
                "world_size": self.info.world_size,
            },
            "rng": all_gather_objects(_rng_state(), self.info),
            "config": dict(self.cfg),
            "num_classes": self.num_classes,
            "code": code_digest(),
        }


def build_state(cfg: dict[str, Any], num_classes: int, info: DistInfo) -> TrainState:
    """A fresh state: the engine's detector on the device, SGD, the lr schedule, AMP."""
    from eiou.engines import build_detector

    tcfg = cfg["train"]
    device = resolve_device(tcfg["device"], info)
    _seed_all(cfg["seed"] + info.rank)
    model = build_detector(cfg["model"], num_classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params,
        lr=scaled_lr(tcfg),
        momentum=tcfg["momentum"],
        weight_decay=tcfg["weight_decay"],
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, tcfg))
    amp = bool(tcfg["amp"])
    return TrainState(
        cfg=cfg,
        info=info,
        device=device,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda"),
        num_classes=num_classes,
        batch_size=per_process_batch_size(tcfg, info.world_size),
        amp_dtype=(torch.float16 if device.type == "cuda" else torch.bfloat16) if amp else None,
    )


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global legacy RNG is what is saved)
    torch.manual_seed(seed)


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


def save_checkpoint(state: TrainState, output_dir: Path) -> Path:
    """Write the state's checkpoint atomically (rank 0), keep the newest two; every rank
    takes part (the RNG states are gathered)."""
    payload = state.checkpoint_payload()
    folder = output_dir / CHECKPOINT_DIR
    path = folder / f"model_{state.iteration:07d}.pth"
    if state.info.main:
        save_torch(path, payload)
        write_text(folder / LAST_CHECKPOINT, path.name + "\n")
        for old in sorted(folder.glob("model_*.pth"))[:-KEEP_CHECKPOINTS]:
            old.unlink(missing_ok=True)
    state.checkpoint = path
    return path


def _flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and path not in RESUMABLE_CHANGES:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def config_differences(saved: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between two run configs, except
    :data:`RESUMABLE_CHANGES`."""
    a, b = _flatten(saved), _flatten(cfg)
    return sorted(
        key for key in set(a) | set(b) if key not in RESUMABLE_CHANGES and a.get(key) != b.get(key)
    )


def resume_training(state: TrainState, output_dir: Path) -> Path | None:
    """Load the newest checkpoint of ``output_dir`` into ``state``; return it (or None).

    Raises:
        RunConfigError: the checkpoint was written for a different run config.
    """
    checkpoint = find_last_checkpoint(output_dir)
    if checkpoint is None:
        return None
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    iteration = int(saved["iteration"])
    if iteration >= state.cfg["train"]["max_iter"] and not (output_dir / FINAL_MODEL).is_file():
        log.warning(
            "%s finished this run, but %s was removed: training starts over",
            checkpoint,
            FINAL_MODEL,
        )
        state.events.append({"event": "restarted", "reason": f"{FINAL_MODEL} was removed"})
        if state.info.main:
            shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)
        barrier(state.info)
        return None
    changed = config_differences(saved["config"], state.cfg)
    if changed:
        raise RunConfigError(
            f"{checkpoint} was written for a different run config ({', '.join(changed)} "
            "differ); resume with the same config, or start over with --no-resume (or "
            "another output folder)"
        )
    unwrap(state.model).load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    state.iteration = iteration
    rng = saved["rng"]
    _set_rng_state(rng[state.info.rank] if len(rng) == state.info.world_size else rng[0])
    state.checkpoint = checkpoint
    event: dict[str, Any] = {"event": "resumed", "from": checkpoint.name}
    if saved.get("code") != code_digest():
        log.warning(
            "resuming %s, written by other eiou code (%s, now %s)",
            checkpoint,
            saved.get("code"),
            code_digest(),
        )
        event.update(code_changed=True, code_before=saved.get("code"), code_now=code_digest())
    state.events.append(event)
    log.info("resumed from %s at iteration %d", checkpoint, iteration)
    return checkpoint


# --------------------------------------------------------------------------- step
def train_step(
    state: TrainState, images: list[torch.Tensor], targets: list[dict[str, Any]]
) -> dict[str, float]:
    """One SGD step on this process's share of a batch; the loss terms averaged over the
    processes (floats, before the step).

    Raises:
        NonFiniteLossError: a loss term is NaN or infinite (the step is not taken).
    """
    images, targets = _to_device(images, targets, state.device)
    with torch.autocast(
        state.device.type, dtype=state.amp_dtype, enabled=state.amp_dtype is not None
    ):
        loss_dict = state.model(images, targets)
    names = sorted(loss_dict)
    values = mean_over_processes(
        torch.stack([loss_dict[k].detach().float() for k in names]), state.info
    )
    if not bool(torch.isfinite(values).all()):
        bad = ", ".join(
            f"{k}={v:g}" for k, v in zip(names, values.tolist(), strict=True) if not np.isfinite(v)
        )
        raise NonFiniteLossError(
            f"non-finite loss at iteration {state.iteration + 1} ({bad}); training stopped. "
            f"Last good checkpoint: {state.checkpoint or 'none'}"
        )
    total = sum(loss_dict[k] for k in names)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(total).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.iteration += 1
    return dict(zip(names, values.tolist(), strict=True))


# --------------------------------------------------------------------------- hooks
class TrainLog:
    """``train_log.jsonl`` (rank 0): a record every ``log_period`` iterations, the first
    and the last; resuming keeps the records up to the resumed iteration. The same records
    go to TensorBoard event files beside it where ``tensorboard`` is installed
    (:class:`TensorBoardLog`)."""

    def __init__(self, state: TrainState, output_dir: Path) -> None:
        self.period = state.cfg["train"]["log_period"]
        self.max_iter = state.cfg["train"]["max_iter"]
        self.start = state.iteration
        self.enabled = state.info.main
        self.tic = time.perf_counter()
        self.path = output_dir / TRAIN_LOG
        self.board = TensorBoardLog(output_dir, self.start) if self.enabled else None
        if self.enabled:
            interrupted_after = _restart_log(self.path, self.start)
            for event in state.events:
                if interrupted_after is not None:  # only a resumed run keeps a log
                    event = {**event, "interrupted_after": interrupted_after}
                self._write({"iteration": self.start, **event})

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def after_step(self, state: TrainState, losses: Mapping[str, float], lr: float) -> dict | None:
        it = state.iteration
        if not self.enabled or not (
            it % self.period == 0 or it == self.max_iter or it == self.start + 1
        ):
            return None
        record = {
            "iteration": it,
            "lr": lr,
            "loss": float(sum(losses.values())),
            **losses,
            "seconds_per_iteration": (time.perf_counter() - self.tic) / max(1, it - self.start),
        }
        self._write(record)
        if self.board is not None:
            self.board.add(record, flush=it == self.max_iter)
        return record


class TensorBoardLog:
    """TensorBoard event files in ``output_dir`` (beside ``train_log.jsonl``): every
    number of each log record as the scalar ``train/<key>`` at its iteration.

    Off, silently, where the optional ``tensorboard`` package is not installed. A resumed
    run purges the events after the iteration it resumed from, so the curves continue
    where the checkpoint left off (``tensorboard --logdir results/runs``)."""

    def __init__(self, output_dir: Path, start_iter: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            self.writer = None
            return
        self.writer = SummaryWriter(
            log_dir=str(output_dir),
            purge_step=start_iter + 1 if start_iter else None,
            flush_secs=30,
        )

    def add(self, record: Mapping[str, Any], flush: bool = False) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if key != "iteration" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, record["iteration"])
        if flush:
            self.writer.flush()


def _restart_log(path: Path, start_iter: int) -> int | None:
    """Keep the records of iterations <= ``start_iter`` (a resumed run rewrites the rest).

    Returns the last iteration the interrupted attempt logged (None without a log): the
    iterations ``start_iter + 1`` to it are the work lost and redone; with ``log_period``
    above 1 the attempt may have run a few iterations past it."""
    kept = []
    last = None
    if path.is_file() and start_iter > 0:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                iteration = json.loads(line).get("iteration", 0)
            except json.JSONDecodeError:
                break  # a torn last line of a killed run
            last = iteration  # records are appended in iteration order
            if iteration <= start_iter:
                kept.append(line)
    with atomic_open(path, "w") as handle:
        handle.write("".join(line + "\n" for line in kept))
    return last


def _final_payload(state: TrainState, class_names: Sequence[str]) -> dict[str, Any]:
    from eiou.provenance import provenance

    return {
        "model": unwrap(state.model).state_dict(),
        "config": state.cfg,
        "num_classes": state.num_classes,
        "class_names": list(class_names),
        "iteration": state.iteration,
        "provenance": provenance(state.cfg, code=code_digest()),
    }


# --------------------------------------------------------------------------- training
def _build_train_dataset(cfg: Mapping[str, Any], info: DistInfo) -> Dataset:
    from eiou import data

    if "data" not in cfg:
        raise RunConfigError("the run config has no data section: nothing to train on")
    if info.main:
        data.validate_dataset(cfg["data"], "train", train=True)
    barrier(info)
    return data.build_dataset(cfg["data"], "train", train=True)


def _loader(state: TrainState, dataset: Dataset) -> DataLoader:
    seed, tcfg = state.cfg["seed"], state.cfg["train"]
    sampler = IterationBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        state.batch_size,
        seed,
        state.iteration,
        tcfg["max_iter"],
        state.info.rank,
        state.info.world_size,
    )
    return DataLoader(
        SeededItems(dataset, seed),
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=tcfg["num_workers"],
        generator=torch.Generator().manual_seed(seed),
        pin_memory=state.device.type == "cuda",
    )


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
        resume: continue from the newest checkpoint in ``output_dir``.
        dataset: a training dataset to use instead of ``eiou.data.build_dataset(cfg.data,
            "train", train=True)`` (items and ``.class_names`` as that returns).
        progress: show a tqdm bar (rank 0).
        callbacks: called with the number of completed iterations after each iteration
            (after any checkpoint of that iteration is written).

    Raises:
        NonFiniteLossError: a loss term became NaN / inf (nothing of that iteration is saved).
        WeightsUnavailableError: the backbone weights asked for are not on this machine.
        RunConfigError: an invalid config, or a checkpoint of another config.
    """
    from tqdm import tqdm

    from eiou.engines import check_weights

    cfg = load_run_config(cfg)
    check_weights(cfg["model"])  # fail before the data
    output_dir, tcfg = Path(output_dir), cfg["train"]
    info = init_distributed(tcfg["device"])
    dataset = dataset if dataset is not None else _build_train_dataset(cfg, info)
    class_names = list(getattr(dataset, "class_names", None) or [])
    if not class_names:
        raise ValueError("the training dataset has no .class_names")
    state = build_state(cfg, len(class_names), info)
    if resume:
        resume_training(state, output_dir)
    if info.distributed:
        ids = [state.device.index] if state.device.type == "cuda" else None
        state.model = nn.parallel.DistributedDataParallel(state.model, device_ids=ids)
    if info.main:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text(output_dir / "run_config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    train_log = TrainLog(state, output_dir)
    bar = tqdm(
        total=tcfg["max_iter"],
        initial=state.iteration,
        desc=str(cfg["name"]),
        disable=not (progress and info.main),
        dynamic_ncols=True,
        mininterval=1.0,
    )
    state.model.train()
    for images, targets in _loader(state, dataset):
        lr = state.optimizer.param_groups[0]["lr"]
        losses = train_step(state, images, targets)
        bar.update(1)
        if (record := train_log.after_step(state, losses, lr)) is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2g}")
        if state.iteration % tcfg["checkpoint_period"] == 0 and state.iteration < tcfg["max_iter"]:
            save_checkpoint(state, output_dir)
        for callback in callbacks:
            callback(state.iteration)
    bar.close()
    final = output_dir / FINAL_MODEL
    if info.main:
        save_torch(final, _final_payload(state, class_names))
    save_checkpoint(state, output_dir)  # after the final model: see resume_training()
    barrier(info)
    return final
