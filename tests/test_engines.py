"""Engine dispatch: every engine is registered, optional ones fail early and say how to
install them. Runs without detectron2 (its absence is simulated)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from engine_helpers import data_config, run_config

from eiou import engines
from eiou.config import RunConfigError, load_run_config
from eiou.engines import EngineUnavailableError, WeightsUnavailableError
from eiou.train import train


def test_engines_are_registered_and_validated() -> None:
    assert set(engines.ENGINES) == {"torchvision", "detectron2"}
    assert load_run_config({"model": {"engine": "detectron2"}})["model"]["engine"] == "detectron2"
    with pytest.raises(RunConfigError, match=r"model\.engine"):
        load_run_config({"model": {"engine": "mmdet"}})
    with pytest.raises(ValueError, match=r"model\.engine must be one of"):
        engines.engine_module("mmdet")


def test_importing_eiou_does_not_import_detectron2() -> None:
    code = (
        "import sys, eiou, eiou.config, eiou.engines.detectron2, eiou.train, eiou.predict\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'detectron2'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def without_detectron2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import detectron2...`` fail as if it were not installed."""
    for name in [m for m in sys.modules if m.split(".")[0] == "detectron2"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "detectron2", None)


def test_detectron2_engine_without_detectron2_fails_with_install_hint(
    without_detectron2: None, tmp_path
) -> None:
    from eiou.engines import detectron2 as engine

    assert not engine.available()
    cfg = load_run_config({"model": {"engine": "detectron2"}})
    for call in (
        lambda: engines.check_weights(cfg["model"]),
        lambda: engines.build_detector(cfg["model"], 3),
        lambda: engines.build_detector(cfg["model"], 3, load_weights=False),
    ):
        with pytest.raises(EngineUnavailableError, match="--no-build-isolation") as err:
            call()
        assert "detectron2" in str(err.value) and "model.engine: torchvision" in str(err.value)
    # training stops at start, before the data is generated or read
    run = run_config(data_config(tmp_path / "never_generated"), "retinanet", "giou")
    run["model"]["engine"] = "detectron2"
    with pytest.raises(EngineUnavailableError):
        train(run, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "never_generated").exists()


def test_errors_are_shared_by_the_engines() -> None:
    from eiou.engines import torchvision

    assert torchvision.WeightsUnavailableError is WeightsUnavailableError
    assert issubclass(EngineUnavailableError, ImportError)
