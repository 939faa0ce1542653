"""One source of truth for configuration: the package's JSON Schemas.

The run config and the preset share their definitions (a preset's schedule is a run
config's train section, a variant's box_loss its model.box_loss), the enums are the
registries' names, the schemas ship inside the package, and the core imports nothing
outside the standard library, torch and itself.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_experiments import minimal as minimal_preset

from eiou import experiments, schemas
from eiou.config import RunConfigError, load_run_config

ROOT = Path(__file__).resolve().parent.parent
DEFS = schemas.load("definitions")["$defs"]


def _registries() -> dict[str, list[str]]:
    """The registries' names, read in a fresh process (tests register losses of their own)."""
    code = """
import json
from eiou import coders, losses, scoring
from eiou.engines import ENGINES
from eiou.engines.torchvision import BACKBONES, DETECTORS
print(json.dumps({
    "loss_name": losses.available(),
    "coder": coders.available(),
    "scoring": list(scoring.SCORING_METHODS),
    "gradient": list(losses.GRADIENT_MODES),
    "detector": list(DETECTORS),
    "backbone": list(BACKBONES),
    "engine": list(ENGINES),
}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_schema_enums_are_the_registries_names() -> None:
    registry = _registries()
    box_loss = DEFS["box_loss"]["properties"]
    found = {
        "loss_name": DEFS["loss_name"]["anyOf"][0]["enum"],
        "coder": box_loss["coder"]["enum"],
        "scoring": DEFS["scoring"]["properties"]["method"]["enum"],
        "gradient": box_loss["gradient"]["enum"],
        "detector": DEFS["detector"]["enum"],
        "backbone": DEFS["backbone"]["enum"],
        "engine": DEFS["engine"]["enum"],
    }
    for key, names in registry.items():
        assert sorted(found[key]) == sorted(names), key


def test_preset_pieces_are_run_config_sections() -> None:
    """A preset's schedule is validated as a run's train section, a variant's box_loss as a
    run's model.box_loss: the same key is rejected the same way in both."""
    bad_schedule = minimal_preset()
    bad_schedule["schedules"]["short"]["warmup_itres"] = 5
    with pytest.raises(experiments.ConfigError, match=r"schedules\.short\.warmup_itres: unknown"):
        experiments.validate_config(bad_schedule)
    with pytest.raises(RunConfigError, match=r"train\.warmup_itres: unknown"):
        load_run_config({"train": {"warmup_itres": 5}})
    bad_variant = minimal_preset()
    bad_variant["tables"]["t1"]["rows"][0]["variant"] = {"box_loss": {"name": "eiou", "weight": 0}}
    with pytest.raises(experiments.ConfigError, match=r"variant\.box_loss\.weight: 0 is less"):
        experiments.validate_config(bad_variant)
    with pytest.raises(RunConfigError, match=r"model\.box_loss\.weight: 0 is less"):
        load_run_config({"model": {"box_loss": {"name": "eiou", "weight": 0}}})
    # a filled schedule holds exactly the run's train keys, with the same defaults
    schedule = experiments.validate_config(minimal_preset())["schedules"]["short"]
    assert schedule == {**load_run_config({})["train"], **minimal_preset()["schedules"]["short"]}


def test_null_defaults_leave_each_component_its_own() -> None:
    """Options whose default depends on the component (a loss's power and SOT, a stage's
    weight and coder weights) default to null in the schema, never to a concrete value."""
    box_loss = DEFS["box_loss"]["properties"]
    for key in ("power", "sot", "weight", "coder_weights"):
        assert box_loss[key]["default"] is None, key


def test_every_default_is_in_the_schema_not_in_code() -> None:
    """Filling an empty run config yields every key: no default is added in Python."""
    cfg = load_run_config({})
    for section in ("model", "train", "predict"):
        assert set(cfg[section]) == set(DEFS[section]["properties"]), section
    assert set(cfg["model"]["box_loss"]) == set(DEFS["box_loss"]["properties"])


# --------------------------------------------------------------------------- light core
CORE = ("metrics", "losses", "coders", "heads", "scoring", "io")
ALLOWED_THIRD_PARTY = {"torch", "torchvision", "numpy"}


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth of the code), as dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "eiou":
                names |= {f"eiou.{alias.name}" for alias in node.names}
            else:
                names.add(node.module)
    return names


def test_core_modules_import_only_stdlib_torch_and_the_core() -> None:
    core = {f"eiou.{name}" for name in CORE} | {"eiou"}
    for name in CORE:
        for module in _imports(ROOT / "eiou" / f"{name}.py"):
            top = module.split(".")[0]
            if top == "eiou":
                assert module in core, f"eiou.{name} imports {module}, outside the core"
            else:
                assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, (
                    f"eiou.{name} imports {module}"
                )


def test_importing_the_core_loads_no_pipeline_package() -> None:
    code = (
        "import json, sys, eiou, eiou.metrics, eiou.losses, eiou.coders, eiou.heads\n"
        "import eiou.scoring\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    # (PIL and tqdm are loaded by torchvision and torch themselves when present)
    pipeline = {"yaml", "jsonschema", "pandas", "pycocotools", "matplotlib", "seaborn"}
    assert not loaded & (pipeline | {"snakemake"})


def test_planning_a_preset_imports_no_torch() -> None:
    code = (
        "import sys\nfrom eiou import experiments\n"
        "config = experiments.load_config('config/mini.yaml')\n"
        "plan = experiments.build_plan(config, check_roots=False)\n"
        "print(len(plan['runs']), 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    runs, torch_loaded = out.stdout.split()
    assert int(runs) > 0 and torch_loaded == "False"


@pytest.mark.slow
def test_a_non_editable_install_validates_and_plans_the_mini_preset(tmp_path) -> None:
    """``pip install .`` ships the schemas: from an installed copy (not the checkout), the
    mini preset validates and plans."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert (target / "eiou" / "schemas" / "preset.schema.yaml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = (
        "import eiou, sys\nfrom eiou import experiments\n"
        f"config = experiments.load_config({str(ROOT / 'config' / 'mini.yaml')!r})\n"
        "plan = experiments.build_plan(config, check_roots=False)\n"
        "print(eiou.__file__, len(plan['runs']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    where, runs = out.stdout.split()
    assert where.startswith(str(target)) and int(runs) > 0
