"""Training loop: run config, schedule, data stream, kill-and-resume, NaN stop, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from engine_helpers import (
    KILL_SCRIPT,
    data_config,
    read_train_log,
    run_config,
    state_dicts_equal,
    train_until_killed,
)

from eiou import losses
from eiou.config import RunConfigError, defaults, load_run_config
from eiou.data import build_dataset
from eiou.train import (
    IterationBatchSampler,
    NonFiniteLossError,
    find_last_checkpoint,
    lr_factor,
    per_process_batch_size,
    scaled_lr,
    train,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = data_config(tmp_path_factory.mktemp("shapes") / "data", num_train=6)
    build_dataset(cfg, "train", train=True)
    build_dataset(cfg, "test", train=False)
    return cfg


# --------------------------------------------------------------------------- config
def test_defaults_are_filled_and_loading_is_idempotent(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"box_loss": {"name": "giou", "weight": 12}}}))
    cfg = load_run_config(path)
    assert cfg["model"]["box_loss"]["name"] == "giou" and cfg["model"]["box_loss"]["weight"] == 12
    assert cfg["model"]["box_loss"]["coder"] == "standard"
    assert cfg["train"]["momentum"] == 0.9 and cfg["train"]["weight_decay"] == 1e-4
    assert cfg["train"]["base_lr"] == 0.02 and cfg["train"]["base_batch_size"] == 16
    assert cfg["model"]["scoring"] == defaults()["model"]["scoring"]
    assert load_run_config(cfg) == cfg


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"modle": {}}, "modle"),
        ({"model": {"detector": "yolo"}}, "model.detector"),
        ({"model": {"box_loss": {"name": "l2"}}}, "model.box_loss.name"),
        ({"model": {"box_loss": {"name": "eiou", "power": 0.5}}}, "model.box_loss.power"),
        ({"model": {"box_loss": {"name": "smooth_l1", "sot": True}}}, "model.box_loss"),
        ({"model": {"box_loss": {"name": "eiou", "coder": "polar"}}}, "model.box_loss.coder"),
        ({"model": {"scoring": {"method": "sqrt_cls_x_iou"}}}, "model.scoring.method"),
        (  # ranks as sqrt_cls_x_iou: not a method of its own
            {"model": {"iou_head": {"enabled": True}, "scoring": {"method": "cls_x_iou"}}},
            "model.scoring.method",
        ),
        ({"model": {"iou_head": {"enabled": True, "negatives": 1}}}, "model.iou_head.negatives"),
        ({"model": {"iou_head": {"enabled": True, "wieght": 1}}}, "model.iou_head.wieght"),
        ({"train": {"steps": [8, 4]}}, "train.steps"),
        ({"train": {"max_iter": 0}}, "train.max_iter"),
        ({"train": {"device": "tpu"}}, "train.device"),
        (
            {"model": {"detector": "retinanet", "rpn_box_loss": {"name": "giou"}}},
            "model.rpn_box_loss",
        ),
    ],
)
def test_invalid_keys_are_named(bad: dict, key: str) -> None:
    with pytest.raises(RunConfigError, match=f"config key {key.replace('.', '[.]')}"):
        load_run_config(bad)


def test_workflow_run_specs_are_run_configs() -> None:
    """Every run spec a preset plans is a complete run config: loading it changes nothing."""
    from eiou import experiments

    for preset in ("mini", "paper"):
        config = experiments.load_config(REPO / "config" / f"{preset}.yaml")
        specs = experiments.build_plan(config, check_roots=False)["runs"]
        for run_id, spec in specs.items():
            assert load_run_config(spec) == spec and spec["name"] == run_id


# --------------------------------------------------------------------------- schedule, data
def test_lr_factor_warmup_and_steps() -> None:
    tcfg = {"gamma": 0.1, "steps": [10, 15], "warmup_iters": 4, "warmup_factor": 0.001}
    assert lr_factor(0, tcfg) == pytest.approx(0.001)
    assert lr_factor(2, tcfg) == pytest.approx(0.001 * 0.5 + 0.5)
    assert [lr_factor(i, tcfg) for i in (4, 9)] == [1.0, 1.0]
    assert lr_factor(10, tcfg) == pytest.approx(0.1) and lr_factor(14, tcfg) == pytest.approx(0.1)
    assert lr_factor(15, tcfg) == pytest.approx(0.01)


@pytest.mark.parametrize("world_size", [1, 2, 8])
def test_workflow_schedule_means_the_same_on_any_number_of_processes(world_size: int) -> None:
    """The paper preset's schedule: 16 images an iteration at lr 0.02, on 1, 2 or 8 GPUs."""
    from eiou import experiments

    config = experiments.load_config(REPO / "config" / "paper.yaml")
    plan = experiments.build_plan(config, check_roots=False)
    for spec in plan["runs"].values():
        tcfg = load_run_config(spec)["train"]
        batch = per_process_batch_size(tcfg, world_size)
        assert batch * world_size == 16
        assert scaled_lr(tcfg) == pytest.approx(0.02)


def test_batch_must_divide_over_processes() -> None:
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        per_process_batch_size({"batch_size": 16}, 3)


def test_sampler_stream_is_resumable_and_split_across_ranks() -> None:
    size, batch, seed = 7, 2, 5
    full = list(IterationBatchSampler(size, batch, seed, 0, 12))
    assert list(IterationBatchSampler(size, batch, seed, 5, 12)) == full[5:]
    positions = [p for b in full for p, _ in b]
    assert positions == list(range(24))
    indices = [i for b in full for _, i in b]
    for epoch in range(3):  # each epoch is a permutation, different across epochs
        assert sorted(indices[epoch * size : (epoch + 1) * size]) == list(range(size))
    assert indices[:size] != indices[size : 2 * size]
    ranks = [list(IterationBatchSampler(size, batch, seed, 0, 6, r, 2)) for r in range(2)]
    merged = [b for it in range(6) for b in (ranks[0][it], ranks[1][it])]
    assert merged == full  # two ranks see exactly the single-process stream, interleaved


# --------------------------------------------------------------------------- resume
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]


def _assert_same_run(resumed: Path, reference: Path, max_iter: int) -> None:
    """Bit-identical final weights and the same log (timings aside)."""
    final_a = torch.load(resumed / "model_final.pth", weights_only=True)
    final_b = torch.load(reference / "model_final.pth", weights_only=True)
    assert final_a["iteration"] == final_b["iteration"] == max_iter
    assert state_dicts_equal(final_a["model"], final_b["model"]) == []
    log_a, log_b = read_train_log(resumed), read_train_log(reference)
    assert [r["iteration"] for r in log_a] == list(range(1, max_iter + 1))
    for a, b in zip(log_a, log_b, strict=True):
        a.pop("seconds_per_iteration"), b.pop("seconds_per_iteration")
        assert a == b


@pytest.fixture(scope="module")
def uninterrupted(shapes: dict, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted 7-iteration run per detector (``num_workers=1``: the data stream
    does not depend on it), trained on first use."""
    runs: dict[str, Path] = {}

    def get(detector: str) -> Path:
        if detector not in runs:
            cfg = run_config(shapes, detector, "full", max_iter=7, checkpoint_period=2)
            out = tmp_path_factory.mktemp(f"uninterrupted-{detector}")
            train({**cfg, "train": {**cfg["train"], "num_workers": 1}}, out, progress=False)
            runs[detector] = out
        return runs[detector]

    return get


@pytest.mark.parametrize(
    ("detector", "kill_at"),
    [("faster_rcnn", 5), ("retinanet", 1), ("retinanet", 4), ("retinanet", 5)],
    ids=["faster_rcnn-between-checkpoints", "retinanet-before-any-checkpoint",
         "retinanet-right-after-a-checkpoint", "retinanet-between-checkpoints"],
)  # fmt: skip
def test_killed_and_resumed_run_is_bit_identical(
    shapes: dict, tmp_path, uninterrupted, detector: str, kill_at: int
) -> None:
    """SIGKILL after iteration ``kill_at`` (checkpoints every 2), rerun: the same run."""
    cfg = run_config(shapes, detector, "full", max_iter=7, checkpoint_period=2)
    killed = tmp_path / "killed"
    train_until_killed(cfg, killed, kill_at)
    last = find_last_checkpoint(killed)
    saved = kill_at - kill_at % 2
    assert (last.name if last else None) == (f"model_{saved:07d}.pth" if saved else None)
    assert not (killed / "model_final.pth").exists()
    assert [r["iteration"] for r in read_train_log(killed)] == list(range(1, kill_at + 1))
    train(cfg, killed, progress=False)  # the same call resumes
    _assert_same_run(killed, uninterrupted(detector), 7)
    events = read_train_log(killed, events=True)
    if saved:  # the log says where it resumed and how far the killed attempt had got
        assert [(e["event"], e["iteration"], e["interrupted_after"]) for e in events] == [
            ("resumed", saved, kill_at)
        ]
    else:  # killed before any checkpoint: a fresh start
        assert events == []
    if kill_at == 5 and detector == "faster_rcnn":
        reference = torch.load(uninterrupted(detector) / "model_final.pth", weights_only=True)
        # a finished run reruns as a no-op that rewrites the same final weights
        train(cfg, killed, progress=False)
        again = torch.load(killed / "model_final.pth", weights_only=True)
        assert state_dicts_equal(again["model"], reference["model"]) == []
        # removing the final model (snakemake -R train) retrains from scratch, not from
        # the end, and the log says so
        (killed / "model_final.pth").unlink()
        calls: list[int] = []
        train(cfg, killed, progress=False, callbacks=[calls.append])
        assert calls == list(range(1, 8))
        assert [e["event"] for e in read_train_log(killed, events=True)] == ["restarted"]
        again = torch.load(killed / "model_final.pth", weights_only=True)
        assert state_dicts_equal(again["model"], reference["model"]) == []


def test_resume_across_a_code_change_is_logged(shapes: dict, tmp_path, monkeypatch) -> None:
    import eiou.train as train_module

    cfg = run_config(shapes, "faster_rcnn", "giou", max_iter=4, checkpoint_period=2)
    train_until_killed(cfg, tmp_path, 3)
    monkeypatch.setattr(train_module, "code_digest", lambda: "0123456789abcdef")
    train(cfg, tmp_path, progress=False)
    (event,) = read_train_log(tmp_path, events=True)
    assert event["event"] == "resumed" and event["code_changed"] is True
    assert event["code_now"] == "0123456789abcdef" and event["iteration"] == 2


def test_resume_refuses_a_different_model(shapes: dict, tmp_path) -> None:
    cfg = run_config(shapes, "faster_rcnn", "giou", max_iter=2)
    train(cfg, tmp_path, progress=False)
    other = run_config(shapes, "faster_rcnn", "smooth_l1", max_iter=2)
    with pytest.raises(RunConfigError, match=r"different run config \(model\.box_loss\.name"):
        train(other, tmp_path, progress=False)
    train(other, tmp_path, progress=False, resume=False)  # explicit fresh start works


# --------------------------------------------------------------------------- NaN, inf
class _NonFiniteAfterCalls(losses.GIoULoss):
    """GIoU whose value becomes ``bad`` (NaN or +inf) from the ``nan_at``-th call on."""

    calls = 0
    nan_at = 3
    bad = float("nan")

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        value = super().elementwise(pred, target)
        return value + type(self).bad if type(self).calls >= self.nan_at else value


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_loss_stops_with_iteration_and_term(shapes: dict, tmp_path, bad: str) -> None:
    """A NaN or infinite loss stops the run naming the iteration and the term; the last good
    checkpoint is kept and nothing of the bad iteration is written."""
    _NonFiniteAfterCalls.calls = 0
    _NonFiniteAfterCalls.bad = float(bad)
    cfg = run_config(shapes, "retinanet", "giou", max_iter=6, checkpoint_period=2)
    cfg["model"]["box_loss"]["name"] = f"{__name__}._NonFiniteAfterCalls"  # a user's loss
    cfg["model"]["box_loss"]["weight"] = 1.0  # no calibration: it would call the loss too
    with pytest.raises(NonFiniteLossError, match=rf"iteration 3 \(loss_box_reg={bad}\)") as err:
        train(cfg, tmp_path, progress=False)
    assert "model_0000002.pth" in str(err.value)
    last = find_last_checkpoint(tmp_path)
    assert last is not None and last.name == "model_0000002.pth"
    assert not (tmp_path / "model_final.pth").exists()
    assert [r["iteration"] for r in read_train_log(tmp_path)] == [1, 2]
    state = torch.load(last, weights_only=True)
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


# --------------------------------------------------------------------------- CLI
def test_cli_train_then_predict(shapes: dict, tmp_path) -> None:
    from eiou.cli import main

    cfg = run_config(shapes, "retinanet", "full", max_iter=2)
    cfg["model"]["scoring"]["score_threshold"] = 0.001
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--output-dir", str(out), "--no-progress"]) == 0
    assert (out / "model_final.pth").is_file() and (out / "run_config.yaml").is_file()
    pred = tmp_path / "predictions.json"
    argv = ["predict", "--config", str(path), "--checkpoint", str(out / "model_final.pth")]
    assert main([*argv, "--output", str(pred), "--split", "test", "--no-progress"]) == 0
    results = json.loads(pred.read_text())
    assert results and set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"max_iter": -1}}))
    with pytest.raises(SystemExit, match=r"train\.max_iter"):
        main(["train", "--config", str(bad), "--output-dir", str(tmp_path / "x")])


def test_amp_option_trains_on_cpu(shapes: dict, tmp_path) -> None:
    """``amp: true`` autocasts (bfloat16 on a CPU); losses stay finite, weights float32."""
    cfg = run_config(shapes, "faster_rcnn", "full", max_iter=2, amp=True)
    final = torch.load(train(cfg, tmp_path, progress=False), weights_only=True)
    assert all(v.dtype != torch.bfloat16 for v in final["model"].values())
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in read_train_log(tmp_path))


# --------------------------------------------------------------------------- DDP
@pytest.mark.timeout(300)
def test_torchrun_two_processes_on_cpu(shapes: dict, tmp_path) -> None:
    """``torchrun --nproc_per_node 2`` (gloo on a CPU): the global batch is split over the
    ranks, the lr is the schedule's, rank 0 writes one log, checkpoint and final model."""
    cfg = run_config(shapes, "faster_rcnn", "full", max_iter=3, batch_size=2)
    cfg["train"]["base_batch_size"] = 2
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    result = subprocess.run(
        [*launch, "2", "-m", "eiou.cli", "train", "--config", str(path), "--output-dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1  # rank 0 only
    records = read_train_log(out)
    assert [r["iteration"] for r in records] == [1, 2, 3]
    warmup = lr_factor(2, load_run_config(cfg)["train"])
    assert records[-1]["lr"] == pytest.approx(cfg["train"]["base_lr"] * warmup)
    state = torch.load(out / "checkpoints" / "model_0000002.pth", weights_only=True)
    assert state["sampler"] == {"samples_seen": 4, "world_size": 2}
    assert len(state["rng"]) == 2  # every rank's RNG states, for an exact resume
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 3


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_killed_and_resumed_run_is_bit_identical(shapes: dict, tmp_path) -> None:
    """Under ``torchrun`` with 2 CPU processes: rank 0 killed after iteration 3
    (checkpoints every 2), the same command rerun, the same run as an uninterrupted one.
    Faster R-CNN samples proposals with each rank's torch RNG, so each rank must get its
    own RNG state back."""
    cfg = run_config(shapes, "faster_rcnn", "full", max_iter=5, batch_size=2)
    cfg["train"]["base_batch_size"] = 2
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.run(
        [*TORCHRUN, "2", str(script), json.dumps(cfg), str(killed), "3"],
        capture_output=True, text=True, env=ENV, timeout=280,
    )  # fmt: skip
    assert proc.returncode != 0 and not (killed / "model_final.pth").exists(), proc.stderr[-3000:]
    assert find_last_checkpoint(killed).name == "model_0000002.pth"
    assert [r["iteration"] for r in read_train_log(killed)] == [1, 2, 3]
    for out in (killed, reference):
        command = ["-m", "eiou.cli", "train", "--config", str(path), "--output-dir", str(out)]
        result = subprocess.run(
            [*TORCHRUN, "2", *command], capture_output=True, text=True, env=ENV, timeout=280
        )
        assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_run(killed, reference, 5)
