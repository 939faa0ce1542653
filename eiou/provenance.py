"""Where a result came from: the code, the run and the machine.

- :func:`environment`: the facts of the machine and the numerical library that can move a
  result (thread counts and their environment variables, CPU and GPU models, torch / CUDA /
  cuDNN versions, determinism and TF32 flags). The same config and seed can differ by
  several AP between two machines; this is what to compare first.
- :func:`provenance`: the record written into every ``metrics.json``: git commit (and
  whether the tree had uncommitted changes), package versions, platform, UTC time, the run
  (name, seed, box loss and its gradient mode, IoU head, scoring, dataset) and
  :func:`environment`.

No host name, user name or path of the machine is recorded.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["THREAD_ENV_VARS", "environment", "git_commit", "package_version", "provenance"]

#: Environment variables that set thread counts or the determinism of CUDA libraries.
THREAD_ENV_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
)
_PACKAGES = ("torch", "torchvision", "pycocotools", "numpy", "eiou")


def package_version(package: str) -> str | None:
    """Installed version of ``package`` (its ``__version__`` if not installed as a
    distribution, e.g. a checkout on ``PYTHONPATH``); None if unknown."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(package)
        return getattr(module, "__version__", None) if module else None


def git_commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding this package; (None, None) outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return commit.stdout.strip() or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def _cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _available_cpus() -> int | None:
    """CPUs this process may run on (affinity), or os.cpu_count() where unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _torch_facts() -> dict[str, Any]:
    import torch

    cudnn = torch.backends.cudnn
    with warnings.catch_warnings():  # some versions warn on reading the legacy TF32 flags
        warnings.simplefilter("ignore")
        tf32 = {
            "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                {
                    "name": props.name,
                    "capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1),
                }
            )
    return {
        "threads": {
            "torch_num_threads": torch.get_num_threads(),
            "torch_num_interop_threads": torch.get_num_interop_threads(),
        },
        "torch": {
            "version": str(torch.__version__),
            "cuda": torch.version.cuda,
            "cudnn": cudnn.version() if cudnn.is_available() else None,
            "cuda_available": torch.cuda.is_available(),
        },
        "gpus": gpus,
        "determinism": {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_enabled": bool(cudnn.enabled),
            "cudnn_deterministic": bool(cudnn.deterministic),
            "cudnn_benchmark": bool(cudnn.benchmark),
            **tf32,
        },
    }


def environment() -> dict[str, Any]:
    """The machine's facts that can move a number, as a JSON-ready dict.

    Keys: ``threads`` (torch's intra- and inter-op thread counts and the environment
    variables of :data:`THREAD_ENV_VARS`, None where unset), ``cpu`` (model, logical CPUs,
    CPUs available to this process), ``gpus`` (name, compute capability, memory in GiB;
    empty without CUDA), ``torch`` (version, CUDA and cuDNN versions, whether CUDA is
    available), ``determinism`` (``torch.are_deterministic_algorithms_enabled()``, its
    warn-only mode, cuDNN enabled / deterministic / benchmark, the TF32 flags of matmul and
    cuDNN and ``torch.get_float32_matmul_precision()``) and ``platform``.
    """
    facts = _torch_facts()
    facts["threads"].update({name: os.environ.get(name) for name in THREAD_ENV_VARS})
    return {
        "threads": facts["threads"],
        "cpu": {
            "model": _cpu_model(),
            "logical_cpus": os.cpu_count(),
            "available_cpus": _available_cpus(),
        },
        "gpus": facts["gpus"],
        "torch": facts["torch"],
        "determinism": facts["determinism"],
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "python_implementation": platform.python_implementation(),
        },
    }


def _run_facts(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Name, seed and the modes of a run config (the layout of ``eiou.config``)."""
    model = run_config.get("model") or {}
    box_loss = model.get("box_loss") or {}
    scoring = model.get("scoring") or {}
    return {
        "run_id": run_config.get("run_id", run_config.get("name")),
        "seed": run_config.get("seed"),
        "box_loss": box_loss.get("name"),
        "gradient_mode": box_loss.get("gradient"),
        "iou_head": model.get("iou_head"),
        "scoring": scoring.get("method") if isinstance(scoring, Mapping) else scoring,
        "dataset": (run_config.get("data") or {}).get("name"),
    }


def provenance(run_config: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Where a result came from, as a JSON-ready dict.

    ``timestamp`` (UTC), ``git_commit`` (None outside a checkout) and ``git_dirty``,
    ``versions`` (python and packages; ``faster-coco-eval`` only where it was imported, i.e.
    an evaluation used it), ``platform``, the run's facts from ``run_config`` (a run config
    as :func:`eiou.config.load_run_config` returns it: ``run_id`` (its ``name`` where it has
    no ``run_id``), ``seed``, ``box_loss``, ``gradient_mode``, ``iou_head``, ``scoring``,
    ``dataset``; None where absent), ``calibration`` (the run's resolved stage settings by
    :func:`eiou.calibration.describe`: loss weights, coders, output scales and the rule's
    name and version; only with a ``model`` section) and ``environment``
    (:func:`environment`). ``extra`` keys are added as given (they win).
    """
    packages = _PACKAGES + (("faster-coco-eval",) if "faster_coco_eval" in sys.modules else ())
    commit, dirty = git_commit()
    env = environment()
    record: dict[str, Any] = {
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "versions": {
            "python": platform.python_version(),
            **{name: package_version(name) for name in packages},
        },
        "platform": env["platform"],
        **_run_facts(run_config or {}),
        "environment": env,
    }
    if run_config and isinstance(run_config.get("model"), Mapping):
        from eiou.calibration import describe

        record["calibration"] = describe(run_config["model"])
    record.update(extra)
    return record
