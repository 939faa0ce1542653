"""Process-group facts and the few collective operations training and prediction use.

Launched with ``torchrun`` (``WORLD_SIZE > 1``) a process joins the default process group
(NCCL on CUDA, gloo on the CPU); otherwise everything here is a no-op over one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "barrier",
    "init_distributed",
    "mean_over_processes",
    "resolve_device",
    "unwrap",
]


@dataclass(frozen=True)
class DistInfo:
    """``rank``, ``world_size``, ``local_rank``; ``world_size == 1`` is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files."""
        return self.rank == 0


def init_distributed(device_cfg: str = "auto") -> DistInfo:
    """Join the process group ``torchrun`` set up (if any) and return this process's facts."""
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


def resolve_device(device_cfg: str, info: DistInfo) -> torch.device:
    """``auto`` -> CUDA where available; each process of a CUDA run takes its local GPU."""
    if device_cfg == "auto":
        device_cfg = "cuda" if torch.cuda.is_available() else "cpu"
    if device_cfg == "cuda" and info.distributed:
        return torch.device("cuda", info.local_rank)
    device = torch.device(device_cfg)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {device_cfg!r} but CUDA is not available")
    return device


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` for one process)."""
    if not info.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_processes(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The element-wise mean of ``values`` over the processes (in place; returned)."""
    if info.distributed:
        import torch.distributed as dist

        dist.all_reduce(values)
        values /= info.world_size
    return values


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op for one)."""
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()
