"""The start-of-training gradient measurement (and the calibration rule built on it)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from engine_helpers import data_config, run_config
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou, generalized_box_iou_loss

import eiou
from eiou import calibration
from eiou.config import load_run_config
from eiou.engines.torchvision import build_detector
from eiou.engines.torchvision.box_regression import build_box_regression, reference_regression
from eiou.experiments import BUILTIN_VARIANTS
from eiou.train import NonFiniteLossError, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pairs() -> calibration.ReferencePairs:
    return calibration.reference_pairs(300, seed=5)


# --------------------------------------------------------------------------- reference set
def test_reference_pairs_fill_every_bin_with_realistic_boxes(pairs) -> None:
    n = 300
    assert pairs.anchors.shape == pairs.gt_boxes.shape == (n * len(calibration.IOU_BINS), 4)
    iou = box_iou(pairs.anchors, pairs.gt_boxes).diagonal()  # torchvision as the reference
    torch.testing.assert_close(iou, pairs.iou)
    for b, (low, high) in enumerate(calibration.IOU_BINS):
        inside = pairs.iou[pairs.bin_index == b]
        assert len(inside) == n and inside.min() >= low and inside.max() < high
    w = pairs.gt_boxes[:, 2] - pairs.gt_boxes[:, 0]
    h = pairs.gt_boxes[:, 3] - pairs.gt_boxes[:, 1]
    assert (w * h).sqrt().min() >= 16 - 1e-9 and (w * h).sqrt().max() <= 512 + 1e-9
    assert (h / w).min() >= 1 / 3 - 1e-9 and (h / w).max() <= 3 + 1e-9
    # the aspect ratios are spread, not all square
    assert ((h / w) > 2).any() and ((h / w) < 0.5).any()


def test_reference_pairs_are_seeded() -> None:
    a = calibration.reference_pairs.__wrapped__(50, seed=3)
    b = calibration.reference_pairs.__wrapped__(50, seed=3)
    c = calibration.reference_pairs.__wrapped__(50, seed=4)
    assert torch.equal(a.anchors, b.anchors) and torch.equal(a.gt_boxes, b.gt_boxes)
    assert not torch.equal(a.anchors, c.anchors)


# --------------------------------------------------------------------------- gradients
def test_smooth_l1_gradient_by_hand() -> None:
    """A pure x shift of 0.2 anchor widths: offset dx = 10 * 0.2 = 2 > beta, so the gradient
    is (1, 0, 0, 0) times the weight; a 1/90-width shift stays quadratic: dx / beta."""
    reg = build_box_regression({"name": "smooth_l1", "weight": 3.0}, "faster_rcnn")
    anchors = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 90.0, 45.0]])
    gt = torch.tensor([[20.0, 0.0, 120.0, 100.0], [1.0, 0.0, 91.0, 45.0]])
    norms = calibration.gradient_norms(reg, anchors, gt)
    dx = 10 * 1 / 90
    torch.testing.assert_close(norms, torch.tensor([3.0, 3.0 * dx * 9]).double())


def test_giou_gradient_matches_finite_differences_of_torchvision(pairs) -> None:
    """Faster R-CNN's GIoU stage: autograd through the real module vs float64 central
    differences of torchvision's GIoU loss on torchvision's box coder."""
    reg = build_box_regression({"name": "giou", "weight": 2.5}, "faster_rcnn")
    idx = torch.arange(0, pairs.anchors.shape[0], 97)
    anchors, gt = pairs.anchors[idx], pairs.gt_boxes[idx]
    ours = calibration.gradient_norms(reg, anchors, gt)
    coder = det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))

    def loss(raw: torch.Tensor) -> torch.Tensor:
        boxes = coder.decode_single(raw, anchors)
        return 2.5 * generalized_box_iou_loss(boxes, gt, reduction="none")

    h = 1e-6
    grad = torch.zeros(len(idx), 4, dtype=torch.float64)
    for k in range(4):
        step = torch.zeros(len(idx), 4, dtype=torch.float64)
        step[:, k] = h
        grad[:, k] = (loss(step) - loss(-step)) / (2 * h)
    torch.testing.assert_close(ours, grad.norm(dim=1), rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize(
    "box_loss",
    [
        {"name": "smooth_l1"},
        {"name": "giou"},
        {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"},
    ],
)
def test_gradient_norms_do_not_depend_on_pixel_size(pairs, box_loss) -> None:
    """Coders and losses live in the anchor-normalised frame (SOT's U_e too)."""
    reg = build_box_regression(box_loss, "retinanet")
    small = calibration.gradient_norms(reg, pairs.anchors, pairs.gt_boxes)
    large = calibration.gradient_norms(reg, pairs.anchors * 7 + 3, pairs.gt_boxes * 7 + 3)
    torch.testing.assert_close(small, large, rtol=1e-3, atol=1e-3)  # float32 pixels


def test_gradient_profile_averages_each_bin(pairs) -> None:
    reg = build_box_regression({"name": "diou", "weight": 1.0}, "faster_rcnn")
    norms = calibration.gradient_norms(reg, pairs.anchors, pairs.gt_boxes)
    profile = calibration.gradient_profile(reg, pairs)
    for b, value in enumerate(profile.per_bin):
        assert math.isclose(value, float(norms[pairs.bin_index == b].mean()), rel_tol=1e-12)
    assert math.isclose(profile.mean, sum(profile.per_bin) / len(profile.per_bin), rel_tol=1e-9)
    # the weight multiplies the gradient
    heavier = calibration.gradient_profile(
        build_box_regression({"name": "diou", "weight": 4.0}, "faster_rcnn"), pairs
    )
    assert math.isclose(heavier.mean, 4 * profile.mean, rel_tol=1e-6)


# --------------------------------------------------------------------------- the rule
def doubled_giou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A user's loss given by dotted path: twice the GIoU loss."""
    return 2 * (1 - eiou.giou(pred, target))


def flat_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A loss with no gradient: no weight can calibrate it."""
    return (pred * 0).sum(-1) + 1


def _ratio(reg, stage: str) -> float:
    ref = calibration.gradient_profile(reference_regression(stage)).mean
    return calibration.gradient_profile(reg).mean / ref


def _last_digit(value: float) -> float:
    """One unit in the last printed place of a value rounded to 3 significant digits."""
    return 10 ** (math.floor(math.log10(abs(value))) - calibration.SIGNIFICANT_DIGITS + 1)


def test_table_equals_what_the_rule_computes() -> None:
    computed = {}
    for stage in calibration.TABULATED_STAGES:
        reference = reference_regression(stage)
        for box_loss in calibration.TABULATED_BOX_LOSSES:
            reg = build_box_regression({**box_loss, "weight": 1.0}, stage)
            key = (stage, calibration.loss_key(box_loss))
            computed[key] = calibration.calibrated_weight(reg, reference)
    assert set(computed) == set(calibration.CALIBRATED_WEIGHTS)
    for key, value in computed.items():
        table = calibration.CALIBRATED_WEIGHTS[key]
        assert abs(table - value) <= 0.51 * _last_digit(value), (key, table, value)
    assert calibration.compute_table() == calibration.CALIBRATED_WEIGHTS


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
def test_every_calibrated_builtin_variant_matches_smooth_l1(detector: str) -> None:
    """The rule does what it says: mean gradient norm ratio 1 (to the table's rounding)."""
    profiles = {}
    for name, variant in BUILTIN_VARIANTS.items():
        reg = build_box_regression(variant["box_loss"], detector)
        assert reg.settings["weight_source"] == "rule (table)", name
        assert 0.5 < _ratio(reg, detector) < 2
        assert _ratio(reg, detector) == pytest.approx(1, abs=0.01), name
        profiles[name] = calibration.gradient_profile(reg).per_bin
    # What it does not equalise: the shape over IoU. EIoU pushes hardest near IoU 1; CT
    # turns that around (its factor 2 (1 - EIoU) -> 0): at the same mean, harder than EIoU
    # on poor positives and less than half of it on the best.
    eiou_bins, ct_bins = profiles["eiou"], profiles["eiou_ct"]
    assert list(eiou_bins) == sorted(eiou_bins)
    assert list(ct_bins) == sorted(ct_bins, reverse=True)
    assert ct_bins[0] > eiou_bins[0] and ct_bins[-1] < eiou_bins[-1] / 2


def test_paper_gradient_shares_the_autograd_weight() -> None:
    """Appendix A and autograd agree on overlapping pairs, so one table entry serves both."""
    cfg = {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"}
    paper = build_box_regression({**cfg, "gradient": "paper"}, "faster_rcnn")
    assert paper.weight == build_box_regression(cfg, "faster_rcnn").weight
    assert _ratio(paper, "faster_rcnn") == pytest.approx(1, abs=0.01)


@pytest.mark.parametrize(
    "box_loss",
    [
        {"name": "iou", "mode": "linear"},
        {"name": "giou", "coder": "sqrt_area"},
        {"name": "eiou", "power": 1.5, "coder": "sqrt_area"},
        {"name": "smooth_l1", "beta": 1.0},
        {"name": "giou", "coder_weights": [5.0, 5.0, 2.0, 2.0]},
    ],
)
def test_other_losses_are_calibrated_by_the_same_rule(box_loss) -> None:
    for stage in ("faster_rcnn", "retinanet", "rpn"):
        reg = build_box_regression(box_loss, stage)
        assert reg.settings["weight_source"] == "rule (computed)"
        assert _ratio(reg, stage) == pytest.approx(1, abs=0.01)


def test_user_loss_by_dotted_path() -> None:
    doubled = build_box_regression({"name": "test_calibration.doubled_giou"}, "retinanet")
    plain = calibration.calibrated_weight(
        build_box_regression({"name": "giou", "weight": 1.0}, "retinanet"),
        reference_regression("retinanet"),
    )
    assert doubled.weight == pytest.approx(plain / 2, rel=0.006)
    with pytest.raises(ValueError, match=r"set model\.box_loss\.weight"):
        build_box_regression({"name": "test_calibration.flat_loss"}, "retinanet")
    assert build_box_regression({"name": "test_calibration.flat_loss", "weight": 2.0}, "rpn")


def test_weight_in_the_config_is_kept() -> None:
    reg = build_box_regression({"name": "giou", "weight": 3.5}, "retinanet")
    assert reg.weight == 3.5 and reg.settings["weight_source"] == "config"


def _jacobian(reg, anchor: torch.Tensor) -> torch.Tensor:
    """d box corners / d raw outputs at raw 0, float64, units of pixels."""
    raw = torch.zeros(4, dtype=torch.float64)
    return torch.autograd.functional.jacobian(
        lambda r: (
            reg.coder.decode(r / reg.output_scale.double(), anchor)
            if reg.output_scale is not None
            else reg.coder.decode(r, anchor)
        ),
        raw,
    )


@pytest.mark.parametrize("stage", ["faster_rcnn", "retinanet", "rpn"])
def test_sqrt_area_scale_moves_boxes_as_the_standard_coder(stage: str) -> None:
    """Rule (a), checked numerically on the real coders at anchors of many shapes."""
    standard = build_box_regression({"name": "giou"}, stage)
    sqrt_area = build_box_regression({"name": "giou", "coder": "sqrt_area"}, stage)
    assert sqrt_area.settings["coder_source"] == "rule"
    wx, wy, ww, wh = standard.coder.weights
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        w, h = (torch.rand(2, generator=g, dtype=torch.float64) * 300 + 4).tolist()
        anchor = torch.tensor([3.0, 7.0, 3.0 + w, 7.0 + h], dtype=torch.float64)
        j_std, j_sqrt = _jacobian(standard, anchor), _jacobian(sqrt_area, anchor)
        # the closed form of the standard coder's Jacobian (x1, x2 by dx, dw; y alike)
        closed = torch.zeros(4, 4, dtype=torch.float64)
        closed[[0, 2], 0] = w / wx
        closed[[1, 3], 1] = h / wy
        closed[0, 2], closed[2, 2] = -w / (2 * ww), w / (2 * ww)
        closed[1, 3], closed[3, 3] = -h / (2 * wh), h / (2 * wh)
        torch.testing.assert_close(j_std, closed)
        torch.testing.assert_close(j_std.det().abs(), j_sqrt.det().abs())
    if standard.coder.weights == (10.0, 10.0, 5.0, 5.0):  # at a square anchor: same
        anchor = torch.tensor([0.0, 0.0, 50.0, 50.0], dtype=torch.float64)  # singular values
        torch.testing.assert_close(
            torch.linalg.svdvals(_jacobian(standard, anchor)),
            torch.linalg.svdvals(_jacobian(sqrt_area, anchor)),
        )


# --------------------------------------------------------------------------- describe
def test_describe_resolves_what_the_detector_uses() -> None:
    variant = BUILTIN_VARIANTS["eiou_ct_sot_iou_head"]
    run = {
        "model": {
            "detector": "faster_rcnn",
            "box_loss": variant["box_loss"],
            "rpn_box_loss": {"name": "giou"},
            "iou_head": variant["iou_head"],
        }
    }
    described = calibration.describe(run)
    json.dumps(described)  # goes into metrics.json provenance as is
    assert described["rule"]["name"] == calibration.RULE
    assert described["rule"]["version"] == calibration.RULE_VERSION
    model = build_detector(load_run_config(run)["model"], 3)
    for section, reg in (
        ("box_loss", model.roi_heads.box_regression),
        ("rpn_box_loss", model.rpn.box_regression),
    ):
        settings = described[section]
        assert settings["weight"] == reg.weight
        scale = None if reg.output_scale is None else reg.output_scale.tolist()
        assert settings["output_scale"] == pytest.approx(scale)
    box = described["box_loss"]
    assert box["output_scale"] == pytest.approx([50**0.5] * 4)
    assert box["options"]["power"] == 2 and box["options"]["sot"] is True
    assert box["weight_source"] == "rule (table)" and box["coder_source"] == "rule"
    assert described["rpn_box_loss"]["coder_weights"] == [1.0] * 4
    # the stock RPN, and a weight set in the config
    plain = calibration.describe(
        {"detector": "retinanet", "box_loss": {"name": "giou", "weight": 2.0}}
    )
    assert plain["box_loss"]["weight"] == 2.0 and plain["box_loss"]["weight_source"] == "config"
    assert "rpn_box_loss" not in plain
    stock = calibration.describe({"model": {"detector": "faster_rcnn"}})["rpn_box_loss"]
    assert stock["weight_source"] == "torchvision" and stock["options"]["beta"] == 1 / 9


# --------------------------------------------------------------------------- training
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_calibrated_defaults_train_where_an_unscaled_layer_diverges(tmp_path) -> None:
    """EIoU + CT + SOT on Faster R-CNN at lr 0.02 without warmup: the calibrated defaults
    (output scale sqrt(50), weight 15.5) train 60 iterations; weight 10 with an unscaled
    last layer (the setting the output scale exists for) turns NaN on the same run."""
    data = data_config(tmp_path / "data", num_train=32, num_test=4, size=128)
    box_loss = {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"}
    train_cfg = {"max_iter": 60, "base_lr": 0.02, "warmup_iters": 0, "checkpoint_period": 60}

    def run(name: str, loss: dict) -> None:
        cfg = run_config(data, "faster_rcnn", "smooth_l1", size=128, **train_cfg)
        cfg["model"]["box_loss"] = loss
        train(cfg, tmp_path / name, progress=False)

    run("calibrated", box_loss)
    log = (tmp_path / "calibrated" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 60 and all(math.isfinite(json.loads(r)["loss"]) for r in log)
    with pytest.raises(NonFiniteLossError):
        run("unscaled", {**box_loss, "weight": 10.0, "coder_weights": [1.0] * 4})


def test_the_planning_constant_names_this_rule() -> None:
    """Run ids hash experiments.CALIBRATION_RULE: it must name the rule in force."""
    from eiou import experiments

    assert experiments.CALIBRATION_RULE == (calibration.RULE, calibration.RULE_VERSION)
