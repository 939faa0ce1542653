"""The jobs' software: envs/eiou.yaml lists exactly pyproject.toml's dependencies, its
`pipeline` and `tensorboard` extras (what jobs need), with the same bounds, and a CUDA build
of PyTorch; envs/eiou.def builds the Apptainer image from that same file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ENV = ROOT / "envs" / "eiou.yaml"
DEFINITION = ROOT / "envs" / "eiou.def"
#: PyPI name -> conda-forge name, where they differ.
CONDA_NAMES = {"torch": "pytorch"}
_PEP508 = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$")


def pep508(requirement: str) -> tuple[str, str]:
    """``("name", "version spec")`` of a PyPI requirement, names normalised."""
    name, spec = _PEP508.match(requirement.split(";")[0]).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def match_spec(item: str) -> tuple[str, str, str]:
    """``(name, version spec, build)`` of a conda match spec: ``name=1.2`` (conda's "1.2.*"
    as ``==1.2``), ``name>=1.2`` or ``name >=1.2 build*``."""
    parts = item.split()
    if len(parts) > 1:  # "name version [build]"
        name, version, build = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
    else:
        name, version = re.match(r"^([\w.-]+)(.*)$", item).groups()
        build = ""
    if re.match(r"^=[^=]", version):
        version = "=" + version
    return name.lower(), version, build


def env_dependencies() -> dict[str, tuple[str, str]]:
    env = yaml.safe_load(ENV.read_text())
    assert env["channels"][0] == "conda-forge" and "defaults" not in env["channels"]
    have = {}
    for dep in env["dependencies"]:
        assert isinstance(dep, str), f"no pip section expected: {dep}"
        name, version, build = match_spec(dep)
        have[name] = (version, build)
    return have


def test_conda_env_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needed = project["dependencies"] + extras["pipeline"] + extras["tensorboard"]
    wanted = {CONDA_NAMES.get(n, n): s for n, s in map(pep508, needed)}
    have = env_dependencies()
    python, _ = have.pop("python")
    assert python == "==" + project["requires-python"].removeprefix(">=")
    have.pop("cuda-version")
    assert {name: version for name, (version, _) in have.items()} == wanted
    assert "snakemake" not in have  # the driver runs Snakemake, not the jobs


def test_conda_env_pins_a_cuda_build_of_pytorch():
    """On a login node without a GPU, conda would resolve a CPU build unless the build
    string asks for CUDA; cuda-version fixes which CUDA (CONDA_OVERRIDE_CUDA stands in for
    the missing __cuda virtual package, see workflow/rules/common.smk)."""
    have = env_dependencies()
    assert have["pytorch"][1] == "cuda*" and have["torchvision"][1] == "cuda*"
    assert re.fullmatch(r"==\d+\.\d+", have["cuda-version"][0])
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert "CONDA_OVERRIDE_CUDA" in common and "cuda-version" in common


def test_container_definition_installs_the_env_file():
    text = DEFINITION.read_text()
    assert re.search(r"^Bootstrap: docker$", text, re.M)
    base = re.search(r"^From: (\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"[\w./-]+:\d+(\.\d+)+", base), f"pin the base image: {base}"
    files = text.split("%files")[1].split("%")[0]
    source, target = files.split()[:2]
    assert source == "envs/eiou.yaml"
    post = text.split("%post")[1].split("%environment")[0]
    assert f"--file {target}" in post
    cuda = re.search(r"CONDA_OVERRIDE_CUDA=(\S+)", post).group(1)
    assert "==" + cuda == env_dependencies()["cuda-version"][0]
    assert "torch.version.cuda" in text.split("%test")[1]


@pytest.mark.parametrize("item, parsed", [
    ("python=3.11", ("python", "==3.11", "")),
    ("numpy>=1.26", ("numpy", ">=1.26", "")),
    ("pytorch >=2.4 cuda*", ("pytorch", ">=2.4", "cuda*")),
])  # fmt: skip
def test_match_spec(item, parsed):
    assert match_spec(item) == parsed


def test_rules_use_the_env():
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = path.read_text()
        assert text.count("shell:") == text.count('"../../envs/eiou.yaml"'), path.name
    assert 'container: config["container"]' in (ROOT / "Snakefile").read_text()
