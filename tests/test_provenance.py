"""Provenance: the machine's facts (threads, CPU, GPU, versions, determinism flags) follow
what torch and the environment say when they change, and every metrics file carries them."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch

from eiou import evaluate, provenance
from eiou.config import load_run_config


@pytest.fixture
def restore_torch_flags():
    """Put back every global torch setting a test changes."""
    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.backends.cuda.matmul.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    yield
    threads, deterministic, warn_only, benchmark, cudnn_det, tf32, precision = saved
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = cudnn_det
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.set_float32_matmul_precision(precision)


def test_flags_follow_torch(restore_torch_flags) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = False
    torch.set_float32_matmul_precision("highest")
    before = provenance.environment()
    assert before["threads"]["torch_num_threads"] == 1
    assert before["determinism"]["deterministic_algorithms"] is False
    assert before["determinism"]["cudnn_benchmark"] is True
    assert before["determinism"]["float32_matmul_precision"] == "highest"

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.set_float32_matmul_precision("high")
    after = provenance.environment()
    assert after["threads"]["torch_num_threads"] == 2
    assert after["threads"]["torch_num_interop_threads"] == torch.get_num_interop_threads()
    d = after["determinism"]
    assert d["deterministic_algorithms"] is True and d["deterministic_warn_only"] is True
    assert d["cudnn_benchmark"] is False and d["cudnn_deterministic"] is True
    assert d["float32_matmul_precision"] == "high"
    assert d["cuda_matmul_allow_tf32"] == torch.backends.cuda.matmul.allow_tf32
    assert d["cudnn_allow_tf32"] == torch.backends.cudnn.allow_tf32


def test_thread_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    threads = provenance.environment()["threads"]
    assert threads["OMP_NUM_THREADS"] == "3" and threads["MKL_NUM_THREADS"] is None
    assert set(provenance.THREAD_ENV_VARS) <= set(threads)


def test_machine_and_versions() -> None:
    env = provenance.environment()
    assert env["torch"]["version"] == torch.__version__
    assert env["torch"]["cuda"] == torch.version.cuda
    cudnn = torch.backends.cudnn
    assert env["torch"]["cudnn"] == (cudnn.version() if cudnn.is_available() else None)
    assert env["cpu"]["logical_cpus"] == os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        assert env["cpu"]["available_cpus"] == len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = {
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            }
    except OSError:
        names = set()
    if names:
        assert env["cpu"]["model"] in names
    if torch.cuda.is_available():
        assert [g["name"] for g in env["gpus"]] == [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    else:
        assert env["gpus"] == [] and env["torch"]["cuda_available"] is False
    text = json.dumps(env)  # JSON-ready as it is
    host = socket.gethostname()
    assert len(host) < 4 or host not in text


def test_provenance_of_a_run_config_and_the_old_import_path() -> None:
    assert evaluate.provenance is provenance.provenance
    spec = {"name": "r9", "seed": 5, "train": {"max_iter": 10},
            "model": {"scoring": {"method": "sqrt_cls_x_iou"}, "iou_head": {"enabled": True},
                      "box_loss": {"name": "smooth_eiou", "gradient": "paper"}},
            "data": {"name": "shapes", "kind": "synthetic"}}  # fmt: skip
    record = provenance.provenance(load_run_config(spec), note="n")
    assert record["run_id"] == "r9" and record["seed"] == 5 and record["dataset"] == "shapes"
    assert record["box_loss"] == "smooth_eiou" and record["gradient_mode"] == "paper"
    assert record["scoring"] == "sqrt_cls_x_iou" and record["iou_head"]["enabled"] is True
    assert record["note"] == "n"
    assert set(record["environment"]) == {"threads", "cpu", "gpus", "torch", "determinism",
                                          "platform"}  # fmt: skip
    empty = provenance.provenance()
    assert empty["run_id"] is None and empty["seed"] is None


def test_provenance_holds_only_plain_values() -> None:
    """It goes into model_final.pth, which is read with ``torch.load(weights_only=True)``:
    plain str/int/float/bool/None/list/dict only (no TorchVersion and the like)."""

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return all(plain(v) for v in value)
        return value is None or type(value) in (str, int, float, bool)

    assert plain(provenance.provenance(load_run_config({})))
