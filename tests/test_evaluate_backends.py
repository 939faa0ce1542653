"""The faster_coco_eval backend gives the pycocotools backend's numbers (to 1e-12), on
generated cases with about 100 detections per image (more than pycocotools' 100 in one),
several classes, all three area ranges, crowd regions, tied scores, an image without
detections and a class without ground truth.

Not always bit for bit: pycocotools' precision is ``tp / (tp + fp + np.spacing(1))``,
faster_coco_eval's C++ ``tp / (tp + fp)``, so a precision of 1 can be 1 - 2.2e-16 in one and
1.0 in the other, and averages differ in their last bits (seen: up to 3e-17). Matching,
recall and the PR curves' shape are the same."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from coco_cases import CASES, detections_per_image
from coco_cases import coco_case as _case
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from eiou import evaluate
from eiou.cli import main

TOLERANCE = 1e-12  # last-bit differences only (see the module docstring)

#: The backend is an optional extra (``eiou[fast]``, also in ``eiou[test]``). Where it is
#: installed every test here runs; where it is not, the tests that need it skip and say
#: why. CI installs ``eiou[test]``, so there a missing package fails instead of skipping.
FAST_INSTALLED = importlib.util.find_spec("faster_coco_eval") is not None
needs_fast = pytest.mark.skipif(
    not FAST_INSTALLED and os.environ.get("CI") != "true",
    reason="faster-coco-eval is not installed (pip install 'eiou[fast]'): the agreement of "
    "the two evaluation backends is not checked here",
)


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two result trees differ: structure, non-numbers, or numbers by > TOLERANCE."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return [f"{path}: keys {list(a)} != {list(b)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        ok = math.isfinite(a) and math.isfinite(b) and abs(a - b) <= TOLERANCE
        return [] if ok else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} != {b!r}"]


def _both(gt: dict, preds: list[dict]) -> tuple[dict, dict]:
    ref = evaluate.evaluate_predictions(gt, preds)
    fast = evaluate.evaluate_predictions(gt, preds, backend="faster_coco_eval")
    assert ref.pop("evaluator")["name"] == "pycocotools"
    assert fast.pop("evaluator")["name"] == "faster_coco_eval"
    return ref, fast


@needs_fast
@pytest.mark.parametrize("options", list(CASES.values()), ids=list(CASES))
def test_backends_give_identical_metrics(options: dict) -> None:
    gt, preds = _case(**options)
    per_image = detections_per_image(gt, preds)
    assert per_image[-1] == 0  # an image without detections
    areas = [a["area"] for a in gt["annotations"]]
    assert min(areas) < 32**2 < 96**2 < max(areas)
    assert any(a["iscrowd"] for a in gt["annotations"])
    ref, fast = _both(gt, preds)
    assert _differences(ref, fast) == []
    assert (
        0 < ref["AP90"] < ref["AP50"] < 1
        and ref["per_class_AP"][f"class{len(gt['categories'])}"] is None
    )


RECORD_FIELDS = ("image_ids", "category_ids", "iou_thresholds", "num_gt", "det_category",
                 "det_image", "det_score", "det_matched", "det_ignored")  # fmt: skip


@needs_fast
@pytest.mark.parametrize("options", list(CASES.values()), ids=list(CASES))
def test_backends_give_identical_image_records(options: dict) -> None:
    """The per-image records (pycocotools' evalImgs; faster_coco_eval's C++ per-image
    results) are the same arrays, bit for bit, and the metrics beside them are unchanged."""
    gt, preds = _case(**options)
    ref_metrics, ref = evaluate.evaluate_with_records(gt, preds)
    fast_metrics, fast = evaluate.evaluate_with_records(gt, preds, backend="faster_coco_eval")
    for name in RECORD_FIELDS:
        a, b = getattr(ref, name), getattr(fast, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert ref.det_ignored.any() and ref.det_matched.any() and not ref.det_matched.all()
    assert (ref.evaluator, fast.evaluator) == ("pycocotools", "faster_coco_eval")
    for metrics in (ref_metrics, fast_metrics):
        del metrics["evaluator"]
    assert _differences(ref_metrics, fast_metrics) == []
    assert _differences(ref_metrics, _both(gt, preds)[0]) == []


@needs_fast
def test_empty_predictions_and_perfect_predictions_agree() -> None:
    gt, _ = _case(3, num_images=4)
    assert _differences(*_both(gt, [])) == []
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 0.5} for a in gt["annotations"] if not a["iscrowd"]]  # fmt: skip
    ref, fast = _both(gt, perfect)
    assert _differences(ref, fast) == [] and ref["AP"] == pytest.approx(1.0)


@needs_fast
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_images=st.integers(2, 6),
    num_classes=st.integers(2, 4),
    copies=st.integers(0, 5),
    false_positives=st.integers(0, 60),
    crowd_rate=st.sampled_from([0.0, 0.2, 0.5]),
    score_decimals=st.sampled_from([None, 1, 2]),
)
def test_backends_agree_on_random_cases(**options: Any) -> None:
    gt, preds = _case(max_objects=8, **options)
    assume(gt["annotations"])  # nothing to evaluate (an error for both, tested elsewhere)
    assert _differences(*_both(gt, preds)) == []


@needs_fast
def test_result_records_the_evaluator_and_provenance_its_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import faster_coco_eval

    gt, preds = _case(4, num_images=3)
    fast = evaluate.evaluate_predictions(gt, preds, backend="faster_coco_eval")
    assert capsys.readouterr().out == ""  # its prints go to the debug log
    assert fast["evaluator"] == {
        "name": "faster_coco_eval",
        "version": faster_coco_eval.__version__,
    }
    auto = evaluate.evaluate_predictions(gt, preds, backend="auto")
    assert auto["evaluator"]["name"] == "faster_coco_eval"
    ref = evaluate.evaluate_predictions(gt, preds)
    assert ref["evaluator"]["name"] == "pycocotools" and ref["evaluator"]["version"]
    assert evaluate.provenance()["versions"]["faster-coco-eval"] == faster_coco_eval.__version__


def test_missing_package_raises_or_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs with or without the extra: the package is hidden from the import system."""
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes the import fail
    gt, preds = _case(5, num_images=3)
    with pytest.raises(ValueError, match="unknown evaluation backend"):
        evaluate.evaluate_predictions(gt, preds, backend="nope")
    with pytest.raises(ImportError) as err:
        evaluate.evaluate_predictions(gt, preds, backend="faster_coco_eval")
    assert str(err.value) == (
        'backend="faster_coco_eval" needs the faster-coco-eval package: pip install "eiou[fast]"'
    )
    auto = evaluate.evaluate_predictions(gt, preds, backend="auto")
    assert auto["evaluator"]["name"] == "pycocotools"
    monkeypatch.delitem(sys.modules, "faster_coco_eval")
    assert "faster-coco-eval" not in evaluate.provenance()["versions"]  # listed only if used


def test_cli_backend_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--backend {pycocotools,faster_coco_eval,auto}" in help_text
    assert "numbers are identical" in help_text


@needs_fast
def test_cli_backend_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, preds = _case(6, num_images=3)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    outputs = {}
    for backend in ("pycocotools", "faster_coco_eval"):
        out = tmp_path / f"{backend}.json"
        paths = ["--gt", str(tmp_path / "gt.json"), "--predictions", str(tmp_path / "pred.json")]
        rc = main(["evaluate", *paths, "--output", str(out), "--backend", backend])
        assert rc == 0
        outputs[backend] = json.loads(out.read_text())
    capsys.readouterr()
    ref, fast = outputs["pycocotools"], outputs["faster_coco_eval"]
    assert fast["evaluator"]["name"] == "faster_coco_eval"
    assert "faster-coco-eval" in fast["provenance"]["versions"]
    for record in (ref, fast):
        del record["evaluator"], record["provenance"]
    assert _differences(ref, fast) == []
