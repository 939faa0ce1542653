"""envs/eiou.yaml lists exactly pyproject.toml's dependencies and its `pipeline` extra (what
jobs need), with the same bounds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
#: PyPI name -> conda-forge name, where they differ.
CONDA_NAMES = {"torch": "pytorch"}
_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$")


def split(requirement: str) -> tuple[str, str]:
    name, spec = _SPEC.match(requirement.split(";")[0]).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def test_conda_env_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = project["dependencies"] + project["optional-dependencies"]["pipeline"]
    wanted = {CONDA_NAMES.get(n, n): s for n, s in map(split, needed)}
    env = yaml.safe_load((ROOT / "envs" / "eiou.yaml").read_text())
    have = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            name, spec = split(
                item.replace("=", "==", 1) if re.match(r"^[\w.-]+=[^=]", item) else item
            )
            have[name] = spec
    python = have.pop("python")
    assert python == "==" + project["requires-python"].removeprefix(">=")
    assert have == wanted


def test_rules_use_the_env():
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = path.read_text()
        assert text.count("shell:") == text.count('"../../envs/eiou.yaml"'), path.name
