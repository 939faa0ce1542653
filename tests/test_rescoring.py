"""Rescoring: the candidates of one network pass reproduce `eiou predict` under every method."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from engine_helpers import data_config, run_config

from eiou import report, rescoring, tables
from eiou.config import load_run_config
from eiou.data import build_dataset
from eiou.engines.torchvision import DETECTORS
from eiou.experiments import build_plan, validate_config
from eiou.io import write_json
from eiou.predict import predict
from eiou.scoring import SCORING_METHODS
from eiou.train import train

torch.set_num_threads(1)

IMAGE, SEEN = 64, 80  # the images are 64 px, the network sees them at 80 px: scale 0.8


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = data_config(tmp_path_factory.mktemp("shapes") / "data", num_train=6, size=IMAGE)
    build_dataset(cfg, "train", train=True)
    build_dataset(cfg, "test", train=False)
    return cfg


@pytest.fixture(scope="module", params=DETECTORS)
def trained(request, shapes: dict, tmp_path_factory: pytest.TempPathFactory):
    """(run config, model_final.pth, folder) of a 3-iteration EIoU + IoU-head detector."""
    cfg = run_config(shapes, request.param, "full", size=SEEN)
    cfg["model"]["scoring"]["score_threshold"] = 0.001  # untrained RetinaNet scores ~0.01
    folder = tmp_path_factory.mktemp(request.param)
    return load_run_config(cfg), train(cfg, folder / "run", progress=False), folder


def with_scoring(cfg: dict, **scoring: object) -> dict:
    out = copy.deepcopy(cfg)
    out["model"]["scoring"].update(scoring)
    return out


def test_candidates_are_what_nms_saw(trained, shapes: dict) -> None:
    cfg, final, folder = trained
    preds = predict(cfg, final, folder / "p.json", progress=False, candidates=folder / "c.pt")
    packed = rescoring.load_candidates(folder / "c.pt")
    dataset = build_dataset(shapes, "test", train=False)
    assert packed["image_ids"].tolist() == [int(t["image_id"]) for _, t in dataset]
    total = int(packed["counts"].sum())
    assert packed["boxes"].shape == (total, 4) and packed["boxes"].dtype == torch.float32
    assert packed["labels"].dtype == torch.int32 and packed["labels"].min() >= 1
    assert packed["scores"].min() > 0.001 and packed["scores"].max() <= 1
    assert packed["predicted_iou"].shape == (total,)
    assert ((packed["predicted_iou"] >= 0) & (packed["predicted_iou"] <= 1)).all()
    torch.testing.assert_close(packed["scale"], torch.full((len(dataset), 4), IMAGE / SEEN))
    assert packed["scoring"] == cfg["model"]["scoring"] and packed["run"] == cfg["name"]
    # the network's frame: candidates reach up to the 80 px it sees, not the 64 px image
    assert packed["boxes"].max() > IMAGE + 1
    # every reported box is a candidate box mapped to the image's pixels
    first = packed["image_ids"][0].item()
    n = int(packed["counts"][0])
    mapped = packed["boxes"][:n] * packed["scale"][0]
    for p in (p for p in preds if p["image_id"] == first):
        x, y, w, h = p["bbox"]
        box = torch.tensor([x, y, x + w, y + h])
        assert (mapped - box).abs().max(dim=1).values.min() < 2e-3


def test_rescoring_reproduces_predict_under_every_method(trained) -> None:
    """The run's own method gives exactly `eiou predict`'s predictions; every other method
    gives exactly what `eiou predict` writes with that method configured."""
    cfg, final, folder = trained
    own = predict(cfg, final, folder / "own.json", progress=False, candidates=folder / "c.pt")
    written = rescoring.rescore_run(cfg, folder / "c.pt", folder / "rescored")
    assert list(written) == list(SCORING_METHODS)
    assert json.loads(written[cfg["model"]["scoring"]["method"]].read_text()) == own
    scores = {}
    for method, path in written.items():
        rescored = json.loads(path.read_text())
        expected = predict(
            with_scoring(cfg, method=method), final, folder / "x.json", progress=False
        )
        assert rescored == expected, method
        scores[method] = [p["score"] for p in rescored]
        spec = yaml.safe_load((path.parent / "run.yaml").read_text())
        assert spec == load_run_config(with_scoring(cfg, method=method))
    assert scores["cls"] != scores["sqrt_cls_x_iou"] != scores["iou_guided_nms"]


def test_a_higher_score_threshold_equals_predicting_with_it(trained) -> None:
    cfg, final, folder = trained
    predict(cfg, final, folder / "p.json", progress=False, candidates=folder / "c.pt")
    packed = rescoring.load_candidates(folder / "c.pt")
    threshold = round(float(packed["scores"].quantile(0.95)), 4)  # keeps ~5 % of them
    for method in ("cls", "iou_guided_nms"):
        stricter = with_scoring(cfg, method=method, score_threshold=threshold)
        expected = predict(stricter, final, folder / "x.json", progress=False)
        rescored = rescoring.rescore_candidates(packed, method, stricter["model"]["scoring"])
        assert rescored == expected
        assert len(rescored) < len(rescoring.rescore_candidates(packed, method))
    with pytest.raises(ValueError, match=r"below the 0\.001"):
        rescoring.rescore_candidates(packed, "cls", {"score_threshold": 0.0001})


def test_cli_predict_with_candidates_then_rescore(trained, tmp_path) -> None:
    from eiou.cli import main

    cfg, final, _ = trained
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    pred, cand = tmp_path / "predictions.json", tmp_path / "candidates.pt"
    argv = ["predict", "--config", str(config), "--checkpoint", str(final), "--no-progress"]
    assert main([*argv, "--output", str(pred), "--candidates", str(cand)]) == 0
    out = tmp_path / "rescored"
    argv = ["rescore", "--config", str(config), "--candidates", str(cand), "--output-dir", str(out)]
    assert main([*argv, "--method", "sqrt_cls_x_iou", "--method", "cls", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cls", "sqrt_cls_x_iou"]
    own = json.loads((out / cfg["model"]["scoring"]["method"] / "predictions.json").read_text())
    assert own == json.loads(pred.read_text())
    with pytest.raises(SystemExit, match="not a candidates file"):
        main(["rescore", "--config", str(config), "--candidates", str(pred), "--output-dir", "x"])


def test_candidates_without_iou_or_scale() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [30, 30, 40, 40]])
    image = {
        "boxes": boxes,
        "labels": torch.tensor([1, 1, 2]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
    }
    image["predicted_iou"] = None
    with pytest.raises(ValueError, match="without 'scale'"):
        rescoring.pack_candidates([(5, image)], label_to_category_id={1: 7, 2: 9})
    image["scale"] = torch.tensor([2.0, 3.0, 2.0, 3.0])
    scoring = {"nms_threshold": 0.5, "score_threshold": 0.05, "detections_per_image": 100}
    packed = rescoring.pack_candidates(
        [(5, image)], label_to_category_id={1: 7, 2: 9}, scoring=scoring
    )
    assert packed["predicted_iou"] is None
    with pytest.raises(ValueError, match="needs predicted IoUs"):
        rescoring.rescore_candidates(packed, "sqrt_cls_x_iou")
    # by hand: the second box overlaps the first (IoU 0.68) and is suppressed
    results = rescoring.rescore_candidates(packed, "cls")
    assert [(r["category_id"], r["score"]) for r in results] == [(7, 0.9), (9, 0.7)]
    assert results[1]["bbox"] == [60.0, 90.0, 20.0, 30.0]  # (30, 30, 40, 40) x (2, 3)
    assert rescoring.rescore_candidates(packed, "cls", {"detections_per_image": 1}) == results[:1]


# --------------------------------------------------------------------------- workflow, table
def iou_head_plan() -> dict:
    row = {"detector": "faster_rcnn", "backbone": "tiny", "dataset": "shapes", "schedule": "s"}
    return build_plan(
        validate_config(
            {
                "preset": "unit",
                "datasets": {
                    "shapes": {"kind": "synthetic", "train_splits": ["a"], "test_split": "b"}
                },
                "schedules": {"s": {"max_iter": 1, "base_lr": 0.1, "batch_size": 1}},
                "variants": {
                    "ours_negatives": {
                        "label": "Ours, head trained on negatives",
                        "box_loss": {"name": "eiou", "power": 2, "sot": True},
                        "iou_head": {"enabled": True, "negatives": True},
                        "scoring": {"method": "iou_guided_nms"},
                    }
                },
                "tables": {
                    "t1": {
                        "title": "I",
                        "rows": [{**row, "variant": ["smooth_l1", "ours", "ours_negatives"]}],
                    }
                },
            }
        )
    )


def test_rescored_runs_are_the_iou_head_runs() -> None:
    plan = iou_head_plan()
    ids = {r["variant"]: r["run_ids"][0] for r in plan["tables"][0]["rows"]}
    assert rescoring.rescored_runs(plan) == [ids["ours"], ids["ours_negatives"]]
    assert plan["runs"][ids["ours_negatives"]]["model"]["iou_head"]["negatives"] is True
    assert plan["runs"][ids["ours"]]["model"]["iou_head"]["negatives"] is False
    files = rescoring.rescored_metrics_files(plan)
    assert len(files) == 2 * len(SCORING_METHODS)
    assert f"results/runs/{ids['ours']}/rescored/iou_guided_nms/metrics.json" in files
    assert {"results/tables/scoring.csv", "results/tables/scoring.md"} <= set(
        tables.expected_files(plan)
    )
    without = copy.deepcopy(plan)
    without["runs"] = {ids["smooth_l1"]: plan["runs"][ids["smooth_l1"]]}
    assert rescoring.rescored_runs(without) == []
    assert not any("scoring" in f for f in tables.expected_files(without))


def test_scoring_table_puts_the_methods_side_by_side(tmp_path: Path) -> None:
    plan = iou_head_plan()
    ids = {r["variant"]: r["run_ids"][0] for r in plan["tables"][0]["rows"]}
    values = {}
    for k, method in enumerate(SCORING_METHODS):
        ap = 0.30 + 0.01 * k
        values[method] = ap
        write_json(
            tmp_path / ids["ours"] / "rescored" / method / "metrics.json",
            {"AP": ap, "AP50": 0.6, "AP75": 0.3, "AP90": 0.05 * k},
        )
    frame = tables.scoring_table(plan, tmp_path)
    assert frame["run_id"].tolist() == [ids["ours"], ids["ours_negatives"]]
    ours = frame.iloc[0]
    assert ours["configured"] == "sqrt_cls_x_iou" and not ours["iou_head_negatives"]
    for method, ap in values.items():
        assert ours[f"AP {method}"] == pytest.approx(100 * ap)
    assert frame.iloc[1].isna()["AP cls"] and frame.iloc[1]["iou_head_negatives"]
    written = tables.write_tables(plan, tmp_path, tmp_path / "tables")
    assert tmp_path / "tables" / "scoring.md" in written
    md = (tmp_path / "tables" / "scoring.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Ours (EIoU"))
    assert "| 30.0 | 31.0* | 32.0 |" in row  # AP under cls, sqrt_cls_x_iou (own), iou-guided
    assert "pending*" in next(line for line in md.splitlines() if "negatives" in line)
    assert "NOT the paper's setting" in md
    summary = report.summary_markdown(plan, tmp_path / "tables", tmp_path, tmp_path / "s.md")
    assert md.rstrip() in summary and "[csv](tables/scoring.csv)" in summary
    # a tuned row's candidates that were not chosen are rescored too, labelled as such
    tuned = copy.deepcopy(plan)
    rows = tuned["tables"][0]["rows"]
    rows[1]["candidates"] = [
        {"label": "lr 0.02", "run_ids": rows[1]["run_ids"]},
        {"label": "lr 0.01", "run_ids": rows[2]["run_ids"]},
    ]
    del rows[2]
    labels = tables.scoring_table(tuned, tmp_path)["label"].tolist()
    assert labels == [
        "Ours (EIoU + CT + SOT + IoU head)",
        "Ours (EIoU + CT + SOT + IoU head) (lr 0.01)",
    ]
