"""detectron2 engine: the adapter against detectron2's unmodified models, the core's losses by
hand, Detectron's settings, weights, every variant end to end, kill and resume, learning."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

pytest.importorskip(
    "detectron2.modeling",
    reason="detectron2 is not installed (the optional engine; see docs/detectron2.md)",
)

from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from engine_helpers import check_kill_and_resume, data_config, read_train_log, run_config

import eiou
from eiou import losses
from eiou.data import build_dataset
from eiou.engines import WeightsUnavailableError
from eiou.engines.detectron2 import build_detector, check_weights
from eiou.engines.detectron2.config import DETECTORS, detectron2_config
from eiou.engines.detectron2.detector import LOSS_NAMES
from eiou.engines.detectron2.weights import imagenet_weights_file, weights_url
from eiou.evaluate import evaluate_predictions
from eiou.experiments import BUILTIN_VARIANTS
from eiou.predict import predict
from eiou.train import train

pytestmark = pytest.mark.detectron2
torch.set_num_threads(1)

K = 3  # object classes


def tiny_model_cfg(detector: str, **extra: object) -> dict:
    cfg = {"engine": "detectron2", "detector": detector, "backbone": "tiny", "weights": "none"}
    cfg.update({"min_size": 64, "max_size": 96, "box_loss": {"name": "smooth_l1"}})
    cfg.update(extra)
    return cfg


def batch(generator: torch.Generator) -> tuple[list, list]:
    """Two images of different sizes (resized by the adapter) with 2 and 1 objects."""
    images = [
        torch.rand(3, 80, 120, generator=generator),
        torch.rand(3, 100, 90, generator=generator),
    ]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0], [30.0, 40.0, 90.0, 75.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.tensor([[5.0, 8.0, 40.0, 90.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


def stock_model(model_cfg: dict) -> torch.nn.Module:
    """detectron2's unmodified meta-architecture built from the same config."""
    cfg = detectron2_config(model_cfg, K)
    return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = data_config(tmp_path_factory.mktemp("shapes") / "data", num_train=6)
    build_dataset(cfg, "train", train=True)
    build_dataset(cfg, "test", train=False)
    return cfg


# --------------------------------------------------------------------------- equivalence
#: Detectron's betas (Faster R-CNN head 1, RPN 1/9, RetinaNet 0.11) and detectron2's zoo's
#: L1 (beta 0); the second Faster R-CNN case also swaps in the RPN with the core's loss.
EQUIVALENCE_CASES = {
    "faster_rcnn": {},
    "faster_rcnn_l1_rpn_loss": {
        "options": {"MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.0, "MODEL.RPN.SMOOTH_L1_BETA": 0.0},
        "rpn_box_loss": {"name": "smooth_l1"},
    },
    "retinanet": {},
    "retinanet_l1": {"options": {"MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": 0.0}},
}


@pytest.mark.parametrize("case", list(EQUIVALENCE_CASES))
def test_adapter_equals_unmodified_detectron2(case: str) -> None:
    """With detectron2's smooth-L1 settings (standard coder, its weights and beta) the adapter
    gives detectron2's losses, gradients and detections on the same batch and weights."""
    detector = case.removesuffix("_l1_rpn_loss").removesuffix("_l1")
    model_cfg = tiny_model_cfg(
        detector, scoring={"score_threshold": 0.005}, **EQUIVALENCE_CASES[case]
    )
    torch.manual_seed(0)
    adapter = build_detector(model_cfg, K)
    stock = stock_model(model_cfg)
    assert type(stock).__name__ == ("GeneralizedRCNN" if detector == "faster_rcnn" else "RetinaNet")
    assert type(adapter.model) is not type(stock) or detector == "faster_rcnn"
    if "rpn_box_loss" in model_cfg:
        assert type(adapter.model.proposal_generator).__name__ == "LossRPN"
    loaded = stock.load_state_dict(adapter.model.state_dict(), strict=False)
    assert not loaded.missing_keys and set(loaded.unexpected_keys) <= {"_extra_state"}
    images, targets = batch(torch.Generator().manual_seed(1))

    adapter.train(), stock.train()
    torch.manual_seed(7)  # the RPN / RoI samplers draw from the global RNG
    ours = adapter(images, targets)
    torch.manual_seed(7)
    with EventStorage(0):
        theirs = stock(adapter.detectron2_inputs(images, targets))
    assert set(ours) == {LOSS_NAMES[k] for k in theirs}
    assert all(float(v) > 0 for v in theirs.values())
    for name, value in theirs.items():
        torch.testing.assert_close(ours[LOSS_NAMES[name]], value, rtol=1e-6, atol=1e-7)
    sum(ours.values()).backward()
    sum(theirs.values()).backward()
    for (name, p), q in zip(adapter.model.named_parameters(), stock.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)

    adapter.eval(), stock.eval()
    with torch.no_grad():
        ours_det = adapter(images)
        theirs_det = stock(adapter.detectron2_inputs(images))
    assert sum(len(d["boxes"]) for d in ours_det) > 0
    for image, mine, other in zip(images, ours_det, theirs_det, strict=True):
        instances = other["instances"]
        assert instances.image_size == tuple(image.shape[-2:])  # the input image's pixels
        torch.testing.assert_close(mine["boxes"], instances.pred_boxes.tensor, rtol=0, atol=0)
        torch.testing.assert_close(mine["scores"], instances.scores, rtol=0, atol=0)
        assert torch.equal(mine["labels"], instances.pred_classes + 1)


def test_inputs_are_resized_bgr_and_targets_follow() -> None:
    """detectron2's resize rule, BGR 0..255, boxes scaled with the image, labels 0-based."""
    model = build_detector(tiny_model_cfg("retinanet", min_size=80, max_size=200), K)
    image = torch.zeros(3, 40, 60)
    image[0] = 1.0  # pure red
    target = {"boxes": torch.tensor([[4.0, 6.0, 30.0, 20.0]]), "labels": torch.tensor([2])}
    (item,) = model.detectron2_inputs([image], [target])
    assert item["image"].shape == (3, 80, 120) and (item["height"], item["width"]) == (40, 60)
    assert torch.allclose(item["image"][2], torch.tensor(255.0))  # red is BGR's last channel
    assert torch.allclose(item["image"][:2], torch.tensor(0.0))
    torch.testing.assert_close(item["instances"].gt_boxes.tensor, target["boxes"] * 2)
    assert item["instances"].gt_classes.tolist() == [1]
    (capped,) = model.detectron2_inputs([torch.rand(3, 50, 400)])  # long side capped at 200
    assert capped["image"].shape == (3, 25, 200) and "instances" not in capped


# --------------------------------------------------------------------------- the core's losses
def random_boxes(n: int, generator: torch.Generator, size: float = 60.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 2 + 4
    return torch.cat([xy, xy + wh], dim=1)


def jitter(boxes: torch.Tensor, generator: torch.Generator, amount: float) -> torch.Tensor:
    out = boxes + (torch.rand(boxes.shape, generator=generator) - 0.5) * 2 * amount
    return torch.cat([out[:, :2], torch.maximum(out[:, 2:], out[:, :2] + 2)], dim=1)


def kl(q: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(q) || Bernoulli(sigmoid(logits))), written out."""
    p = torch.sigmoid(logits)
    return torch.xlogy(q, q) - q * p.log() + torch.xlogy(1 - q, 1 - q) - (1 - q) * (1 - p).log()


FULL = {
    "box_loss": {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"},
    "iou_head": {"enabled": True, "weight": 0.5},
    "scoring": {"method": "sqrt_cls_x_iou"},
}


def test_box_predictor_full_method_equals_core_loss_by_hand() -> None:
    """Smooth-EIoU + SOT in Algorithm 1's frame on detectron2's class layout (background
    last), the classification loss and the IoU head's KL, recomputed by hand."""
    g = torch.Generator().manual_seed(3)
    predictor = build_detector(
        tiny_model_cfg("faster_rcnn", **FULL), K
    ).model.roi_heads.box_predictor
    rois = 16
    proposals = random_boxes(rois, g)
    gt = jitter(proposals, g, 6.0)
    classes = torch.randint(0, K + 1, (rois,), generator=g)  # K: background
    classes[:4] = torch.tensor([0, 1, 2, K])
    instances = Instances((100, 100))
    instances.proposal_boxes, instances.gt_boxes = Boxes(proposals), Boxes(gt)
    instances.gt_classes = classes
    scores = torch.randn(rois, K + 1, generator=g)
    deltas = (torch.randn(rois, 4 * K, generator=g) * 0.1).requires_grad_()
    iou_logits = torch.randn(rois, 1, generator=g)
    ours = predictor.losses((scores, deltas, iou_logits), [instances])
    assert set(ours) == {"loss_cls", "loss_box_reg", "loss_iou"}
    torch.testing.assert_close(ours["loss_cls"], torch.nn.functional.cross_entropy(scores, classes))

    fg = torch.where(classes < K)[0]
    regression = predictor.box_regression
    offsets = deltas.view(rois, K, 4)[fg, classes[fg]] / regression.output_scale
    scale = ((proposals[fg, 2:] - proposals[fg, :2]).prod(1)).sqrt()[:, None]
    pred_px = proposals[fg] + offsets * scale  # Algorithm 1: anchor + d * S
    core = losses.get("eiou", power=2, sot=True)
    by_hand = regression.weight * core(pred_px / scale, gt[fg] / scale, reduction="sum") / rois
    torch.testing.assert_close(ours["loss_box_reg"], by_hand)
    (grad_ours,) = torch.autograd.grad(ours["loss_box_reg"], deltas, retain_graph=True)
    (grad_hand,) = torch.autograd.grad(by_hand, deltas)
    torch.testing.assert_close(grad_ours, grad_hand)
    assert grad_ours.view(rois, K, 4)[classes == K].abs().sum() == 0  # background: no box loss
    value = ((1 - eiou.eiou(pred_px.detach(), gt[fg])) ** 2).sum() / rois
    torch.testing.assert_close(ours["loss_box_reg"].detach(), regression.weight * value)
    q = eiou.iou(pred_px.detach(), gt[fg]).clamp(0, 1)
    torch.testing.assert_close(ours["loss_iou"], 0.5 * kl(q, iou_logits[fg, 0]).mean())


def test_retinanet_full_method_equals_core_loss_by_hand() -> None:
    """RetinaNet: detectron2's focal loss and normaliser, the core's box loss on the
    foreground anchors of detectron2's matching, the IoU head's KL."""
    g = torch.Generator().manual_seed(4)
    model = build_detector(tiny_model_cfg("retinanet", **FULL), K).model
    anchors = random_boxes(120, g)
    gt_instances = Instances((100, 100))
    gt_instances.gt_boxes = Boxes(jitter(anchors[:5], g, 3.0))
    gt_instances.gt_classes = torch.tensor([0, 1, 2, 2, 1])
    labels, matched = model.label_anchors([Boxes(anchors)], [gt_instances])
    fg = torch.where((labels[0] >= 0) & (labels[0] < K))[0]
    assert len(fg) >= 5
    logits = torch.randn(1, 120, K, generator=g)
    deltas = torch.randn(1, 120, 4, generator=g) * 0.05
    iou_logits = torch.randn(1, 120, 1, generator=g)
    ours = model.losses([Boxes(anchors)], [logits], labels, [deltas], matched, [iou_logits])
    normalizer = 0.9 * 100 + 0.1 * len(fg)  # detectron2's EMA, first step
    assert model.loss_normalizer == pytest.approx(normalizer)
    valid = labels[0] >= 0
    target = torch.nn.functional.one_hot(labels[0][valid], K + 1)[:, :K].float()
    from torchvision.ops import sigmoid_focal_loss

    focal = sigmoid_focal_loss(logits[0][valid], target, alpha=0.25, gamma=2.0, reduction="sum")
    torch.testing.assert_close(ours["loss_cls"], focal / normalizer)
    scale = ((anchors[fg, 2:] - anchors[fg, :2]).prod(1)).sqrt()[:, None]
    pred = anchors[fg] + deltas[0, fg] * scale  # RetinaNet's output scale is 1
    gt = matched[0][fg]
    weight = model.box_regression.weight
    value = weight * ((1 - eiou.eiou(pred, gt)) ** 2).sum() / normalizer
    torch.testing.assert_close(ours["loss_box_reg"], value)
    q = eiou.iou(pred, gt).clamp(0, 1)
    torch.testing.assert_close(ours["loss_iou"], 0.5 * kl(q, iou_logits[0, fg, 0]).mean())


def test_inference_decodes_with_the_training_coder_and_scores_with_iou() -> None:
    head = {"enabled": True}
    box_loss = {"name": "eiou", "coder": "sqrt_area"}
    predictor = build_detector(
        tiny_model_cfg(
            "faster_rcnn", box_loss=box_loss, iou_head=head, scoring={"method": "sqrt_cls_x_iou"}
        ),
        K,
    ).model.roi_heads.box_predictor
    proposals = Instances((100, 100))
    proposals.proposal_boxes = Boxes(torch.tensor([[10.0, 20.0, 30.0, 60.0]]))  # S = sqrt(800)
    deltas = torch.zeros(1, K, 4)
    deltas[0, 1] = torch.tensor([0.1, -0.2, 0.05, 0.3])
    logits = torch.tensor([[-5.0, 5.0, -5.0, -5.0]])  # class 1 (our label 2); background last
    (result,), _ = predictor.inference(
        (logits, deltas.view(1, -1), torch.tensor([[0.0]])), [proposals]
    )
    expected = (
        torch.tensor([10.0, 20.0, 30.0, 60.0])
        + deltas[0, 1] / predictor.box_regression.output_scale * 800**0.5
    )
    cls = torch.softmax(logits, -1)[0, 1]
    assert result.pred_classes.tolist()[0] == 1
    torch.testing.assert_close(result.pred_boxes.tensor[0], expected)
    torch.testing.assert_close(result.scores[0], (cls * 0.5).sqrt())  # sigmoid(0) = 0.5
    torch.testing.assert_close(result.pred_iou[0], torch.tensor(0.5))

    model = build_detector(
        tiny_model_cfg(
            "retinanet", box_loss=box_loss, iou_head=head, scoring={"method": "sqrt_cls_x_iou"}
        ),
        K,
    ).model
    anchor = torch.tensor([[5.0, 5.0, 25.0, 15.0]])
    delta = torch.tensor([[0.2, 0.1, -0.1, 0.4]])
    scores = torch.sigmoid(torch.tensor([[-9.0, 3.0, -9.0]]))
    result = model.inference_single_image(
        [Boxes(anchor)], [scores], [delta], (100, 100), [torch.sigmoid(torch.tensor([2.0]))]
    )
    torch.testing.assert_close(result.pred_boxes.tensor[0], anchor[0] + delta[0] * 200**0.5)
    assert result.pred_classes.tolist() == [1]
    expected_score = (torch.sigmoid(torch.tensor(3.0)) * torch.sigmoid(torch.tensor(2.0))).sqrt()
    torch.testing.assert_close(result.scores[0], expected_score)


def test_scoring_without_iou_head_is_rejected() -> None:
    for detector in DETECTORS:
        with pytest.raises(ValueError, match="IoU head"):
            build_detector(tiny_model_cfg(detector, scoring={"method": "sqrt_cls_x_iou"}), K)


def test_iou_head_negatives_are_refused() -> None:
    """Training the IoU head on negatives is the torchvision engine's; here it is refused
    rather than ignored."""
    head = {"enabled": True, "negatives": True}
    for detector in DETECTORS:
        with pytest.raises(ValueError, match=r"model\.iou_head\.negatives"):
            build_detector(tiny_model_cfg(detector, iou_head=head), K)


def test_retinanet_loss_normaliser_travels_with_the_weights() -> None:
    """detectron2 keeps RetinaNet's loss normaliser (an EMA) as Python state; here it is in
    the state dict, so a resumed run continues with it."""
    model = build_detector(tiny_model_cfg("retinanet"), K)
    model.model.loss_normalizer = 37.25
    state = model.state_dict()
    assert state["model._extra_state"].item() == 37.25
    other = build_detector(tiny_model_cfg("retinanet"), K)
    assert other.model.loss_normalizer == 100.0  # detectron2's starting value
    other.load_state_dict(state)
    assert other.model.loss_normalizer == 37.25


# --------------------------------------------------------------------------- Detectron's settings
def test_detectron_settings_of_the_paper_backbones() -> None:
    """Faster R-CNN follows detectron2's Detectron-comparison config, RetinaNet has P6/P7 from
    C5 and Detectron's beta; with ImageNet weights: frozen BN, stem and res2 frozen, std 1."""
    paper = {"engine": "detectron2", "backbone": "resnet50", "weights": "imagenet"}
    paper.update({"min_size": 800, "max_size": 1333, "box_loss": {"name": "smooth_l1"}})
    cfg = detectron2_config({**paper, "detector": "faster_rcnn"}, K)
    assert cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA == 1.0  # Detectron (detectron2's default: 0)
    assert cfg.MODEL.RPN.SMOOTH_L1_BETA == pytest.approx(1 / 9, abs=1e-4)
    assert (cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE, cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO) == (
        "ROIAlign",
        2,
    )
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[32.0], [64.0], [128.0], [256.0], [512.0]]
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[0.5, 1.0, 2.0]]
    assert cfg.MODEL.RPN.IN_FEATURES == ["p2", "p3", "p4", "p5", "p6"]
    assert (cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE, cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE) == (
        256,
        512,
    )
    assert (cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN) == ((800,), 1333)
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.BACKBONE.FREEZE_AT, cfg.MODEL.FPN.NORM) == (
        "FrozenBN",
        2,
        "",
    )
    assert cfg.MODEL.PIXEL_STD == [1.0, 1.0, 1.0] and cfg.MODEL.RESNETS.STRIDE_IN_1X1
    retina = build_detector({**paper, "detector": "retinanet"}, K, load_weights=False)
    rcfg = detectron2_config({**paper, "detector": "retinanet"}, K)
    assert rcfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA == 0.11  # Detectron's BBOX_REG_BETA
    assert retina.model.box_regression.box_loss.beta == 0.11
    top = retina.model.backbone.top_block
    assert top.in_feature == "res5" and top.p6.in_channels == 2048  # P6 from C5
    assert retina.model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    assert rcfg.MODEL.ANCHOR_GENERATOR.SIZES[0] == pytest.approx(
        [32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)]
    )
    assert retina.model.anchor_generator.num_cell_anchors == [9] * 5
    assert rcfg.MODEL.RETINANET.NORM == ""  # Detectron's norm-free head with weights
    resnext = detectron2_config(
        {**paper, "detector": "faster_rcnn", "backbone": "resnext101_64x4d"}, K
    ).MODEL.RESNETS
    assert (resnext.DEPTH, resnext.NUM_GROUPS, resnext.WIDTH_PER_GROUP) == (101, 64, 4)
    assert not resnext.STRIDE_IN_1X1


def test_from_scratch_and_options() -> None:
    cfg = detectron2_config(tiny_model_cfg("retinanet"), K)
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.RETINANET.NORM) == ("GN",) * 3
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.MODEL.PIXEL_STD == [57.375, 57.12, 58.395]
    assert cfg.MODEL.RETINANET.IN_FEATURES == ["p2", "p3", "p4", "p5", "p6"]  # tiny: one finer
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES[0][0] == 16
    model_cfg = tiny_model_cfg("faster_rcnn", options={"MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.5})
    predictor = build_detector(model_cfg, K).model.roi_heads.box_predictor
    assert predictor.box_regression.box_loss.beta == 0.5 and predictor.box_regression.weight == 1
    assert predictor.box_regression.coder.weights == (10.0, 10.0, 5.0, 5.0)
    given = tiny_model_cfg("faster_rcnn", box_loss={"name": "smooth_l1", "beta": 0.25})
    assert (
        build_detector(given, K).model.roi_heads.box_predictor.box_regression.box_loss.beta == 0.25
    )
    with pytest.raises(ValueError, match=r"model\.options.*NO_SUCH_KEY"):
        detectron2_config(tiny_model_cfg("faster_rcnn", options={"MODEL.NO_SUCH_KEY": 1}), K)
    with pytest.raises(ValueError, match="frozen_bn"):
        detectron2_config(tiny_model_cfg("faster_rcnn", norm="frozen_bn"), K)


# --------------------------------------------------------------------------- weights
def test_missing_imagenet_weights_fail_naming_file_and_url(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    expected = tmp_path / "cache" / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-101.pkl"
    assert imagenet_weights_file("resnet101") == expected
    with pytest.raises(WeightsUnavailableError) as err:
        check_weights("resnet101", "imagenet")
    assert str(expected) in str(err.value)
    assert "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-101.pkl" in str(
        err.value
    )
    assert weights_url("resnext101_64x4d").endswith(
        "/detectron/ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl"
    )
    with pytest.raises(WeightsUnavailableError, match="tiny"):
        check_weights("tiny", "imagenet")
    with pytest.raises(WeightsUnavailableError, match=r"no_such\.pkl"):
        build_detector(tiny_model_cfg("faster_rcnn", weights=str(tmp_path / "no_such.pkl")), K)


def test_train_fails_at_start_without_weights(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    cfg = run_config(data_config(tmp_path / "never_generated"), "faster_rcnn", "giou")
    cfg["model"].update(engine="detectron2", backbone="resnet50", weights="imagenet")
    with pytest.raises(WeightsUnavailableError, match=r"R-50\.pkl"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "never_generated").exists()


def test_weights_from_the_cache_with_caffe2_names_and_from_a_local_pth(
    tmp_path, monkeypatch
) -> None:
    """``imagenet`` reads the cached MSRA file, whose Caffe2 names detectron2's checkpointer
    converts; a ``.pth`` with detectron2's names loads as it is."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    blobs = {
        "conv1_w": rng.standard_normal((64, 3, 7, 7)).astype(np.float32),
        "res_conv1_bn_s": rng.random(64).astype(np.float32),
        "res_conv1_bn_b": rng.standard_normal(64).astype(np.float32),
        "res2_0_branch2a_w": rng.standard_normal((64, 64, 1, 1)).astype(np.float32),
    }
    path = imagenet_weights_file("resnet50")
    path.parent.mkdir(parents=True)
    with open(path, "wb") as handle:
        pickle.dump(blobs, handle)
    model_cfg = {"engine": "detectron2", "detector": "faster_rcnn", "backbone": "resnet50"}
    model_cfg.update({"weights": "imagenet", "min_size": 64, "max_size": 64})
    model_cfg["box_loss"] = {"name": "smooth_l1"}
    bottom_up = build_detector(model_cfg, K).model.backbone.bottom_up
    assert torch.equal(bottom_up.stem.conv1.weight, torch.from_numpy(blobs["conv1_w"]))
    assert torch.equal(bottom_up.stem.conv1.norm.weight, torch.from_numpy(blobs["res_conv1_bn_s"]))
    assert torch.equal(bottom_up.res2[0].conv1.weight, torch.from_numpy(blobs["res2_0_branch2a_w"]))
    assert not bottom_up.stem.conv1.weight.requires_grad  # FREEZE_AT 2: stem and res2 frozen
    assert not bottom_up.res2[0].conv1.weight.requires_grad
    assert bottom_up.res3[0].conv1.weight.requires_grad

    local = tiny_model_cfg("faster_rcnn", weights=str(tmp_path / "tiny.pth"))
    torch.manual_seed(1)
    source = build_detector(local, K, load_weights=False)  # the architecture the file implies
    torch.save({"model": source.model.state_dict()}, tmp_path / "tiny.pth")
    torch.manual_seed(2)
    fresh = build_detector(local, K, load_weights=False).model.state_dict()
    torch.manual_seed(2)
    loaded = build_detector(local, K).model.state_dict()  # the same draws, then the file
    assert not torch.equal(
        fresh["roi_heads.box_head.fc1.weight"], loaded["roi_heads.box_head.fc1.weight"]
    )
    for key, value in source.model.state_dict().items():
        assert torch.equal(loaded[key], value), key


# --------------------------------------------------------------------------- end to end
def builtin_variants() -> dict[str, dict]:
    """The built-in loss variants, each once (``ours`` repeats ``eiou_ct_sot_iou_head``)."""
    unique: dict[str, dict] = {}
    for name, spec in BUILTIN_VARIANTS.items():
        if spec not in unique.values():
            unique[name] = spec
    return unique


def detectron2_run(data: dict, detector: str, variant: str, **train_cfg: object) -> dict:
    """A tiny run config on the detectron2 engine with a built-in variant's settings; the
    model sees the 64 px images at 80 px (the adapter resizes them)."""
    spec = builtin_variants()[variant]
    cfg = run_config(data, detector, "smooth_l1", **train_cfg)
    scoring = spec["scoring"]
    scoring = {"method": scoring} if isinstance(scoring, str) else dict(scoring)
    cfg["model"].update(
        engine="detectron2",
        min_size=80,
        max_size=80,
        box_loss=dict(spec["box_loss"]),
        iou_head=dict(spec["iou_head"]),
        scoring={**scoring, "score_threshold": 0.001},
    )
    return cfg


@pytest.mark.parametrize("variant", list(builtin_variants()))
@pytest.mark.parametrize("detector", DETECTORS)
def test_every_builtin_variant_trains_predicts_and_evaluates(
    shapes: dict, detector: str, variant: str, tmp_path
) -> None:
    cfg = detectron2_run(shapes, detector, variant, max_iter=2)
    final = train(cfg, tmp_path / "run", progress=False)
    records = read_train_log(tmp_path / "run")
    assert [r["iteration"] for r in records] == [1, 2]
    terms = {"loss_classifier", "loss_box_reg"}
    terms |= {"loss_iou"} if cfg["model"]["iou_head"]["enabled"] else set()
    terms |= {"loss_objectness", "loss_rpn_box_reg"} if detector == "faster_rcnn" else set()
    for r in records:
        assert set(r) - {"iteration", "lr", "loss", "seconds_per_iteration"} == terms
        assert all(np.isfinite(r[t]) for t in terms) and r["lr"] > 0
        assert r["loss"] == pytest.approx(sum(r[t] for t in terms), rel=1e-5)

    preds = predict(cfg, final, tmp_path / "pred.json", progress=False)
    assert preds and json.loads((tmp_path / "pred.json").read_text()) == preds
    gt = build_dataset(shapes, "test", train=False).coco
    sizes = {i: (im["width"], im["height"]) for i, im in gt.imgs.items()}
    for p in preds:  # in the original (64 px) image's pixels, not the model's 80 px
        assert p["image_id"] in sizes and p["category_id"] in gt.getCatIds()
        x, y, w, h = p["bbox"]
        width, height = sizes[p["image_id"]]
        assert w >= 0 and h >= 0 and x >= -1e-3 and y >= -1e-3
        assert x + w <= width + 1e-3 and y + h <= height + 1e-3
        assert 0 < p["score"] <= 1
    metrics = evaluate_predictions(gt, preds)
    assert 0 <= metrics["AP"] <= metrics["AP50"] <= 1


@pytest.mark.parametrize("detector", DETECTORS)
def test_killed_and_resumed_run_is_bit_identical(shapes: dict, detector: str, tmp_path) -> None:
    """The full method; RetinaNet's loss normaliser resumes with the weights."""
    cfg = detectron2_run(shapes, detector, "eiou_ct_sot_iou_head", max_iter=7, checkpoint_period=2)
    check_kill_and_resume(cfg, tmp_path)


# --------------------------------------------------------------------------- learning
#: After 60 iterations of smooth-L1 from scratch (4 images of 64 px an iteration, lr 0.02,
#: 32 training images with 1-2 shapes of 2 classes, 16 test images), both engines' tiny
#: detectors reach at least these (an untrained detector scores ~0). Measured on a 2-core
#: CPU (torch 2.14.1): AP50 / AP torchvision 0.456 / 0.147 (Faster R-CNN), 0.201 / 0.084
#: (RetinaNet); detectron2 0.225 / 0.152, 0.249 / 0.130. A sanity check that neither engine
#: is broken, not a claim that they are equal.
LEARNED = {"AP50": 0.15, "AP": 0.04}


@pytest.fixture(scope="module")
def learning_shapes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = data_config(tmp_path_factory.mktemp("learning") / "data", num_train=32, num_test=16)
    cfg.update(num_classes=2, max_objects=2)
    build_dataset(cfg, "train", train=True)
    build_dataset(cfg, "test", train=False)
    return cfg


@pytest.mark.parametrize("detector", DETECTORS)
def test_both_engines_learn_the_same_shapes(learning_shapes: dict, detector: str, tmp_path) -> None:
    gt = build_dataset(learning_shapes, "test", train=False).coco
    for engine in ("torchvision", "detectron2"):
        cfg = run_config(
            learning_shapes,
            detector,
            "smooth_l1",
            max_iter=60,
            batch_size=4,
            base_lr=0.02,
            base_batch_size=4,
            warmup_iters=10,
            checkpoint_period=60,
            log_period=60,
        )
        cfg["model"].update(engine=engine, scoring={"score_threshold": 0.01})
        final = train(cfg, tmp_path / engine, progress=False)
        preds = predict(cfg, final, tmp_path / f"{engine}.json", progress=False)
        metrics = evaluate_predictions(gt, preds)
        for key, low in LEARNED.items():
            assert metrics[key] >= low, (engine, detector, key, metrics[key])
