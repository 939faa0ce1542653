"""README.md: the snippets run, and its test command is the one CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _snippet(name: str, language: str = "python") -> str:
    match = re.search(rf"<!-- snippet: {name}\b.*?-->\s*```{language}\n(.*?)```", README, re.S)
    assert match, f"README has no snippet {name!r}"
    return match.group(1)


def test_own_detector_snippet_runs_and_trains():
    code = _snippet("own-detector")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    offsets = namespace["offsets"]
    assert offsets.grad is not None and offsets.grad.abs().sum() > 0
    assert namespace["features"].grad.abs().sum() > 0


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"^make (\w+)\s+#", README, re.M)
    assert commands[:2] == ["reproduce", "test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M)


def test_new_loss_snippet_is_one_edit_of_a_preset():
    """The README's YAML, merged into the mini preset, adds one variant to Table II."""
    import yaml

    from eiou import experiments

    edit = yaml.safe_load(_snippet("new-loss", "yaml"))
    config = experiments.load_config(ROOT / "config" / "mini.yaml")
    before = experiments.build_plan(config, check_roots=False)
    config["tables"]["table2"]["rows"][0]["variant"] = edit["tables"]["table2"]["rows"][0][
        "variant"
    ]
    config = experiments.validate_config(config)
    after = experiments.build_plan(config, check_roots=False)
    new = [r for t in after["tables"] for r in t["rows"] if r["label"] == "Alpha-IoU"]
    assert len(new) == 2  # the row's two detectors
    assert len(after["runs"]) == len(before["runs"]) + 2
    spec = after["runs"][new[0]["run_ids"][0]]
    loss = spec["model"]["box_loss"]
    assert loss["name"] == "my_pkg.losses.alpha_iou" and loss["power"] == 3


@pytest.mark.parametrize(
    "verb",
    ["toy", "runs", "data", "train", "predict", "rescore", "evaluate", "compare", "tables",
     "figures", "report"],
)  # fmt: skip
def test_cli_help(verb):
    out = subprocess.run(
        [sys.executable, "-m", "eiou.cli", verb, "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert f"usage: eiou {verb}" in out.stdout


def test_every_verb_is_listed_and_described():
    from eiou.cli import VERBS

    out = subprocess.run(
        [sys.executable, "-m", "eiou.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for verb in VERBS:
        assert re.search(rf"^\s+{verb}\s+\S", out, re.M), verb
