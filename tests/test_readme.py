"""README.md: the snippets run, and its test command is the one CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _snippet(name: str) -> str:
    match = re.search(rf"<!-- snippet: {name}\b.*?-->\s*```python\n(.*?)```", README, re.S)
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


@pytest.mark.parametrize("verb", ["toy"])
def test_cli_help(verb):
    out = subprocess.run(
        [sys.executable, "-m", "eiou.cli", verb, "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert "usage: eiou" in out.stdout
