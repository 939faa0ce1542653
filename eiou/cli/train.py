"""`eiou train`: train the detector of a run config, resuming from its last checkpoint."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eiou.cli import UserError, add_output, add_set

HELP = "Train a detector from a run config (resumes from <output>/checkpoints/)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="run config YAML")
    add_output(parser, "folder for checkpoints/, train_log.jsonl and model_final.pth")
    add_set(parser, "--set train.max_iter=2000 model.box_loss.power=3 train.steps='[1500, 1800]'")
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from the newest checkpoint in --output (default: yes)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show a progress bar (default: yes)",
    )


def torchrun_command(
    processes: int, argv: list[str], environ: Mapping[str, str], cpus: int
) -> tuple[list[str], dict[str, str]]:
    """``(argv, environment)`` that run ``eiou <argv>`` as ``processes`` ranks on this node
    (``torchrun --standalone``); each rank gets ``threads // processes`` OpenMP threads
    (at least 1), where ``threads`` is ``OMP_NUM_THREADS`` or else ``cpus``."""
    threads = int(environ.get("OMP_NUM_THREADS") or cpus)
    env = {**environ, "OMP_NUM_THREADS": str(max(1, threads // processes))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={processes}", "-m", "eiou.cli", *argv]
    return command, env


def _argv(args: argparse.Namespace) -> list[str]:
    """The arguments of this command, to run it again under torchrun."""
    argv = ["train", "--config", str(args.config), "--output", str(args.output)]
    if args.set:
        argv += ["--set", *args.set]
    argv.append("--resume" if args.resume else "--no-resume")
    argv.append("--progress" if args.progress else "--no-progress")
    return argv


def _check_gpus(cfg: Mapping[str, Any], processes: int) -> None:
    import torch

    device = cfg["train"]["device"]
    if device == "cpu" or not torch.cuda.is_available():
        if device.startswith("cuda"):
            raise UserError(f"train.device is {device!r} but CUDA is not available here")
        return
    if torch.cuda.device_count() < processes:
        raise UserError(
            f"train.processes is {processes} (one per GPU) but {torch.cuda.device_count()} "
            "GPUs are visible: request as many GPUs, or set train.processes"
        )


def run(args: argparse.Namespace) -> int:
    from eiou.config import load_run_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_run_config(args.config, overrides=args.set)
    processes = cfg["train"]["processes"]
    if processes > 1 and "LOCAL_RANK" not in os.environ:
        _check_gpus(cfg, processes)
        command, env = torchrun_command(
            processes, _argv(args), os.environ, len(os.sched_getaffinity(0))
        )
        logging.getLogger(__name__).info("launching %s", " ".join(command))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(command[0], command, env)

    from eiou.train import train

    final = train(cfg, args.output, resume=args.resume, progress=args.progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"wrote {final}")
    return 0
