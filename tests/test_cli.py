"""The `eiou` command line as one tool: option names and help, user errors (one message
naming the file, exit status 2, no traceback), `--set` overrides and the training
launcher that starts one process per GPU from the run config."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from engine_helpers import data_config, run_config

from eiou.cli import EXIT_USER_ERROR, HIDDEN_ALIASES, VERBS, build_parser, main
from eiou.config import RunConfigError, apply_overrides, load_run_config

ROOT = Path(__file__).resolve().parent.parent
#: Verbs that write something, and what.
WRITERS = ("toy", "runs", "data", "train", "predict", "evaluate", "tables", "figures", "report")


def parsers(verb: str) -> list[argparse.ArgumentParser]:
    """The parser of ``verb`` and its sub-parsers (``eiou data synthetic`` ...)."""
    top = build_parser(verb)
    verb_parser = next(
        a for a in top._actions if isinstance(a, argparse._SubParsersAction)
    ).choices[verb]
    found, todo = [], [verb_parser]
    while todo:
        parser = todo.pop()
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += list(action.choices.values())
    return found


@pytest.mark.parametrize("verb", VERBS)
def test_every_option_has_help_and_one_output_name(verb):
    outputs = 0
    for parser in parsers(verb):
        text = parser.format_help()
        for alias in HIDDEN_ALIASES:
            assert not re.search(re.escape(alias) + r"(?![\w-])", text), (verb, alias)
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (verb, action.dest)
            # booleans are flags: no option takes true/false as its value
            assert action.type is not bool and action.metavar not in ("BOOL", "{true,false}")
            if action.dest == "output":
                outputs += 1
                assert action.option_strings[:2] == ["--output", "-o"]
            assert not {"--out-dir", "--output-dir", "--out"} & set(action.option_strings) or (
                action.dest == "output"
            )
    if verb in WRITERS:
        assert outputs >= 1, verb


def test_old_output_spellings_still_work(tmp_path):
    for alias in sorted(HIDDEN_ALIASES):
        args = build_parser("toy").parse_args(["toy", alias, str(tmp_path)])
        assert args.output == tmp_path


def eiou(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "eiou.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_error(result: subprocess.CompletedProcess, verb: str, *needles: str) -> str:
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    message = result.stderr.strip()
    assert message.startswith(f"eiou {verb}: "), message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_user_errors_are_one_message_naming_the_file(tmp_path):
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "broken.json").write_text('{"images": [')
    (tmp_path / "gt.json").write_text(json.dumps({"images": [], "annotations": [{"id": 1}]}))
    (tmp_path / "run.yaml").write_text("train: {max_iter: 2}\n")
    (tmp_path / "model.pth").write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        (["train", "--config", "missing.yaml", "-o", "o"], "train", "missing.yaml does not exist"),
        (["train", "--config", "broken.yaml", "-o", "o"], "train", "broken.yaml: not valid YAML"),
        (["runs", "--config", "broken.yaml"], "runs", "broken.yaml", "not valid YAML"),
        (["evaluate", "--gt", "gt.json", "--predictions", "empty.json", "-o", "m.json"],
         "evaluate", "ground truth gt.json: missing key"),
        (["evaluate", "--gt", "broken.json", "--predictions", "empty.json", "-o", "m.json"],
         "evaluate", "ground truth broken.json:"),
        (["predict", "--config", "run.yaml", "--checkpoint", "model.pth", "-o", "p.json"],
         "predict", "checkpoint model.pth is not a PyTorch checkpoint"),
        (["predict", "--config", "run.yaml", "--checkpoint", "none.pth", "-o", "p.json"],
         "predict", "checkpoint none.pth does not exist"),
        (["tables", "--plan", "broken.json"], "tables", "plan broken.json:"),
        (["figures", "--plan", "empty.json"], "figures", "plan empty.json is empty"),
        (["report", "--plan", "missing.json"], "report", "plan missing.json does not exist"),
        (["data", "check", "--config", "missing.yaml"], "data", "missing.yaml does not exist"),
        (["figures"], "figures", "give --plan, --toy-dir or both"),
    ]  # fmt: skip
    for argv, verb, *needles in cases:
        one_error(eiou(*argv, cwd=tmp_path), verb, *needles)
    # an empty predictions file (predict never finished) against valid ground truth
    gt = {"images": [{"id": 1, "width": 8, "height": 8}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4],
                           "area": 16, "iscrowd": 0}]}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    result = eiou("evaluate", "--gt", "gt.json", "--predictions", "empty.json", "-o", "m.json",
                  cwd=tmp_path)  # fmt: skip
    one_error(result, "evaluate", "predictions empty.json is empty (0 bytes)")
    assert not (tmp_path / "m.json").exists()


def test_main_raises_system_exit_with_the_message(tmp_path):
    """In-process callers (tests, notebooks) get a SystemExit whose code is the exit status
    and whose text is the message."""
    with pytest.raises(SystemExit, match=r"missing\.yaml does not exist") as info:
        main(["train", "--config", str(tmp_path / "missing.yaml"), "-o", str(tmp_path)])
    assert info.value.code == EXIT_USER_ERROR


# --------------------------------------------------------------------------- --set
def test_apply_overrides_types_values_like_yaml():
    cfg = {"train": {"max_iter": 10, "steps": [5]}, "model": {"box_loss": {"name": "giou"}}}
    out = apply_overrides(
        cfg,
        [
            "train.max_iter=2000",
            "train.base_lr=1e-3",
            "train.amp=true",
            "train.steps=[1500, 1800]",
            "model.box_loss.name=eiou",
            "model.box_loss.power=null",
            "model.iou_head.enabled=yes",
            "name=7",
            "data.root=/data/voc 2007",
        ],
    )
    assert out["train"] == {"max_iter": 2000, "steps": [1500, 1800], "base_lr": 1e-3, "amp": True}
    assert out["model"]["box_loss"] == {"name": "eiou", "power": None}
    assert out["model"]["iou_head"] == {"enabled": True}
    assert out["name"] == 7 and out["data"]["root"] == "/data/voc 2007"
    assert cfg["train"]["max_iter"] == 10  # the input is not changed
    for bad in ("train.max_iter", "=3", "train..x=1", "train.max_iter.x=1"):
        with pytest.raises(RunConfigError, match="override"):
            apply_overrides(cfg, [bad])


def test_overrides_are_validated_and_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"train": {"max_iter": 5}}))
    cfg = load_run_config(path, overrides=["train.max_iter=7", "train.steps=[3]"])
    assert cfg["train"]["max_iter"] == 7 and cfg["train"]["steps"] == [3]
    with pytest.raises(RunConfigError) as info:
        load_run_config(path, overrides=["train.max_iter=-1"])
    assert f"run config {path} with --set train.max_iter=-1" in str(info.value)
    assert "config key train.max_iter" in str(info.value)


# --------------------------------------------------------------------------- launcher
def test_torchrun_command_shares_the_cpus():
    from eiou.cli.train import torchrun_command

    argv = ["train", "--config", "r.yaml", "--output", "out"]
    command, env = torchrun_command(8, argv, {"OMP_NUM_THREADS": "32", "X": "1"}, cpus=64)
    assert command[1:] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8",
        "-m", "eiou.cli", *argv,
    ]  # fmt: skip
    assert env["OMP_NUM_THREADS"] == "4" and env["X"] == "1"
    assert torchrun_command(8, argv, {}, cpus=12)[1]["OMP_NUM_THREADS"] == "1"
    assert torchrun_command(2, argv, {}, cpus=12)[1]["OMP_NUM_THREADS"] == "6"


def test_processes_are_not_part_of_the_run_id():
    from eiou import experiments

    config = experiments.load_config(ROOT / "config" / "smoke.yaml")
    before = experiments.build_plan(config)
    config["schedules"]["smoke"]["processes"] = 2
    after = experiments.build_plan(experiments.validate_config(config))
    assert list(before["runs"]) == list(after["runs"])
    assert {s["train"]["processes"] for s in after["runs"].values()} == {2}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_launches_one_process_per_rank(tmp_path):
    """`eiou train` with train.processes: 2 starts torchrun itself (gloo on a CPU): both
    ranks train, rank 0 writes the log and the final model once."""
    data = data_config(tmp_path / "data", num_train=4, num_test=2)
    cfg = run_config(data, "faster_rcnn", "smooth_l1", max_iter=2, checkpoint_period=1)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    result = subprocess.run(
        [sys.executable, "-m", "eiou.cli", "train", "--config", "run.yaml", "-o", "out",
         "--set", "train.processes=2", "--no-progress"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=580,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc_per_node=2" in result.stderr
    assert result.stdout.count("wrote ") == 1
    log = (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in log]
    assert [r["iteration"] for r in records] == [1, 2]
    state = __import__("torch").load(tmp_path / "out" / "model_final.pth", weights_only=True)
    assert state["config"]["train"]["processes"] == 2 and state["iteration"] == 2


def test_tensorboard_events_continue_where_a_resumed_run_left_off(tmp_path):
    """The training log's records as TensorBoard scalars; a run resumed from iteration 2
    replaces what the killed attempt had logged after it."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from eiou.train import TensorBoardLog

    first = TensorBoardLog(tmp_path, 0)
    for it in (1, 2, 3):
        first.add({"iteration": it, "loss": 10.0 * it, "lr": 0.1, "event": "x"}, flush=True)
    resumed = TensorBoardLog(tmp_path, 2)
    for it in (3, 4):
        resumed.add({"iteration": it, "loss": 1.0 * it, "lr": 0.1}, flush=it == 4)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/lr"}
    loss = {e.step: e.value for e in events.Scalars("train/loss")}
    assert loss == {1: 10.0, 2: 20.0, 3: 3.0, 4: 4.0}
