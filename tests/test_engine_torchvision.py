"""torchvision detectors driven by the core: loss plumbing, inference decoding, weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torchvision
from engine_helpers import VARIANTS, data_config, run_config
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetRegressionHead
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import FrozenBatchNorm2d, box_iou

import eiou
from eiou import losses
from eiou.calibration import CALIBRATED_WEIGHTS
from eiou.data import build_dataset
from eiou.engines.torchvision import (
    DETECTORS,
    WeightsUnavailableError,
    build_backbone,
    build_box_regression,
    build_detector,
    check_weights,
)
from eiou.engines.torchvision.backbones import imagenet_weights_file
from eiou.predict import predict
from eiou.train import train

torch.set_num_threads(1)

K = 3  # object classes


def tiny_model_cfg(detector: str, **extra: object) -> dict:
    cfg = {"detector": detector, "backbone": "tiny", "weights": "none"}
    cfg.update({"min_size": 64, "max_size": 64, "box_loss": {"name": "smooth_l1"}})
    cfg.update(extra)
    return cfg


def random_boxes(n: int, generator: torch.Generator, size: float = 60.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 2 + 4
    return torch.cat([xy, xy + wh], dim=1)


def jitter(boxes: torch.Tensor, generator: torch.Generator, amount: float = 4.0) -> torch.Tensor:
    """Boxes near ``boxes`` (overlapping them), kept valid."""
    out = boxes + (torch.rand(boxes.shape, generator=generator) - 0.5) * 2 * amount
    return torch.cat([out[:, :2], torch.maximum(out[:, 2:], out[:, :2] + 2)], dim=1)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = data_config(tmp_path_factory.mktemp("shapes") / "data")
    build_dataset(cfg, "train", train=True)  # generate once for the module
    build_dataset(cfg, "test", train=False)
    return cfg


# --------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("detector", DETECTORS)
def test_train_predict_evaluate(shapes: dict, detector: str, variant: str, tmp_path) -> None:
    from eiou.evaluate import evaluate_predictions

    cfg = run_config(shapes, detector, variant)
    cfg["model"].setdefault("scoring", {})["score_threshold"] = 0.001
    final = train(cfg, tmp_path / "run", progress=False)
    assert torch.load(final, weights_only=True)["iteration"] == 3
    records = [
        json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    terms = {"loss_classifier", "loss_box_reg"}
    terms |= {"loss_iou"} if variant == "full" else set()
    terms |= {"loss_objectness", "loss_rpn_box_reg"} if detector == "faster_rcnn" else set()
    assert terms <= set(records[0])
    assert not ({"loss_iou"} & set(records[0])) or variant == "full"
    for r in records:
        assert all(torch.isfinite(torch.tensor(r[t])) for t in terms) and r["lr"] > 0
        assert r["loss"] == pytest.approx(sum(r[t] for t in terms), rel=1e-5)

    preds = predict(cfg, final, tmp_path / "pred.json", progress=False)
    assert preds and json.loads((tmp_path / "pred.json").read_text()) == preds
    gt = build_dataset(shapes, "test", train=False).coco
    sizes = {i: (im["width"], im["height"]) for i, im in gt.imgs.items()}
    per_image: dict[int, int] = {}
    for p in preds:
        assert p["image_id"] in sizes and p["category_id"] in gt.getCatIds()
        x, y, w, h = p["bbox"]
        width, height = sizes[p["image_id"]]
        assert w >= 0 and h >= 0 and x >= -1e-3 and y >= -1e-3
        assert x + w <= width + 1e-3 and y + h <= height + 1e-3
        assert 0 < p["score"] <= 1
        per_image[p["image_id"]] = per_image.get(p["image_id"], 0) + 1
    assert max(per_image.values()) <= 100
    metrics = evaluate_predictions(gt, preds)
    assert 0 <= metrics["AP"] <= metrics["AP50"] <= 1


# --------------------------------------------------------------------------- loss plumbing
def _roi_inputs(generator: torch.Generator, num_rois: int = 16):
    proposals = random_boxes(num_rois, generator)
    gt = jitter(proposals, generator, 6.0)
    labels = torch.randint(0, K + 1, (num_rois,), generator=generator)
    labels[:3] = torch.tensor([1, 2, 3])
    labels[3] = 0
    class_logits = torch.randn(num_rois, K + 1, generator=generator)
    box_regression = (
        torch.randn(num_rois, 4 * (K + 1), generator=generator) * 0.1
    ).requires_grad_()
    return proposals, gt, labels, class_logits, box_regression


def test_roi_smooth_l1_equals_torchvision_fastrcnn_loss() -> None:
    """With smooth-L1 and the standard coder the RoI head reproduces torchvision exactly."""
    g = torch.Generator().manual_seed(0)
    roi = build_detector(tiny_model_cfg("faster_rcnn"), K).roi_heads
    proposals, gt, labels, logits, reg = _roi_inputs(g)
    ours = roi.compute_losses(logits, reg, None, [labels], [proposals], [gt])
    (grad_ours,) = torch.autograd.grad(ours["loss_box_reg"], reg)
    targets = det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(gt, proposals)
    ref_cls, ref_box = fastrcnn_loss(logits, reg, [labels], [targets])
    (grad_ref,) = torch.autograd.grad(ref_box, reg)
    assert set(ours) == {"loss_classifier", "loss_box_reg"}
    torch.testing.assert_close(ours["loss_classifier"], ref_cls)
    torch.testing.assert_close(ours["loss_box_reg"], ref_box)
    torch.testing.assert_close(grad_ours, grad_ref)


def test_roi_full_method_equals_core_loss_by_hand() -> None:
    """EIoU^2 + SOT in Algorithm 1's frame and the IoU head's KL, recomputed by hand."""
    g = torch.Generator().manual_seed(1)
    cfg = tiny_model_cfg(
        "faster_rcnn",
        box_loss={"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"},
        iou_head={"enabled": True, "weight": 0.5},
        scoring={"method": "sqrt_cls_x_iou"},
    )
    roi = build_detector(cfg, K).roi_heads
    proposals, gt, labels, logits, reg = _roi_inputs(g)
    iou_logits = torch.randn(len(labels), 1, generator=g)
    ours = roi.compute_losses(logits, reg, iou_logits, [labels], [proposals], [gt])
    (grad_ours,) = torch.autograd.grad(ours["loss_box_reg"], reg)

    pos = torch.where(labels > 0)[0]
    # raw outputs / sqrt(50): the sqrt-area output scale for Faster R-CNN, (10 * 10 * 5 * 5)^(1/4)
    offsets = reg.view(len(labels), K + 1, 4)[pos, labels[pos]] / 50**0.5
    weight = CALIBRATED_WEIGHTS[("faster_rcnn", "eiou power=2 sot coder=sqrt_area")]
    area = (proposals[pos, 2] - proposals[pos, 0]) * (proposals[pos, 3] - proposals[pos, 1])
    scale = area.sqrt()[:, None]
    pred_px = proposals[pos] + offsets * scale  # Algorithm 1: anchor + d * S
    core = losses.get("eiou", power=2, sot=True)
    by_hand = weight * core(pred_px / scale, gt[pos] / scale, reduction="sum") / len(labels)
    (grad_hand,) = torch.autograd.grad(by_hand, reg, retain_graph=True)
    torch.testing.assert_close(ours["loss_box_reg"], by_hand)
    torch.testing.assert_close(grad_ours, grad_hand)
    # the value is the paper's Smooth-EIoU, frame-independent, times the calibrated weight
    value = weight * ((1 - eiou.eiou(pred_px.detach(), gt[pos])) ** 2).sum() / len(labels)
    torch.testing.assert_close(ours["loss_box_reg"].detach(), value)
    # SOT scales the gradient by U_e in units of anchor area: compare with no SOT
    plain = weight * losses.get("eiou", power=2)(pred_px / scale, gt[pos] / scale, reduction="sum")
    (grad_plain,) = torch.autograd.grad(plain / len(labels), reg)
    union = eiou.extended_iou_parts(pred_px.detach(), gt[pos]).union / area
    torch.testing.assert_close(
        grad_ours.view(len(labels), K + 1, 4)[pos, labels[pos]],
        grad_plain.view(len(labels), K + 1, 4)[pos, labels[pos]] * union[:, None],
    )
    # IoU head: KL(Bern(q) || Bern(p)) with q the standard IoU, mean over positives
    q = box_iou(pred_px.detach(), gt[pos]).diagonal().clamp(0, 1)
    p = torch.sigmoid(iou_logits[pos, 0])
    kl = torch.xlogy(q, q) - q * p.log() + torch.xlogy(1 - q, 1 - q) - (1 - q) * (1 - p).log()
    torch.testing.assert_close(ours["loss_iou"], 0.5 * kl.mean())


@pytest.mark.parametrize("name", ["smooth_l1", "giou"])
def test_retinanet_box_loss_equals_torchvision(name: str) -> None:
    """One image: L1 (smooth-L1 with beta 0) and GIoU match torchvision's RetinaNet head."""
    g = torch.Generator().manual_seed(2)
    box_loss = {"name": name, "weight": 1.0, **({"beta": 0.0} if name == "smooth_l1" else {})}
    model = build_detector(tiny_model_cfg("retinanet", box_loss=box_loss), K)
    anchors = random_boxes(200, g)
    targets = [{"boxes": jitter(anchors[:5], g, 3.0), "labels": torch.tensor([1, 2, 3, 1, 2])}]
    outputs = {
        "cls_logits": torch.randn(1, 200, K + 1, generator=g),
        "bbox_regression": (torch.randn(1, 200, 4, generator=g) * 0.1).requires_grad_(),
    }
    ours = model.compute_loss(targets, outputs, [anchors])
    reference_head = RetinaNetRegressionHead(8, 9)
    reference_head._loss_type = "l1" if name == "smooth_l1" else "giou"
    matched = model.match_anchors(targets, [anchors])
    assert (matched[0] >= 0).sum() >= 5
    ref = reference_head.compute_loss(targets, outputs, [anchors], matched)
    torch.testing.assert_close(ours["loss_box_reg"], ref)
    (g1,) = torch.autograd.grad(ours["loss_box_reg"], outputs["bbox_regression"])
    (g2,) = torch.autograd.grad(ref, outputs["bbox_regression"])
    torch.testing.assert_close(g1, g2)


def test_retinanet_iou_head_target_is_iou_of_decoded_prediction() -> None:
    g = torch.Generator().manual_seed(3)
    cfg = tiny_model_cfg(
        "retinanet",
        box_loss={"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"},
        iou_head={"enabled": True},
    )
    model = build_detector(cfg, K)
    anchors = random_boxes(150, g)
    targets = [{"boxes": jitter(anchors[:4], g, 3.0), "labels": torch.tensor([1, 2, 3, 3])}]
    outputs = {
        "cls_logits": torch.randn(1, 150, K + 1, generator=g),
        "bbox_regression": torch.randn(1, 150, 4, generator=g) * 0.05,
        "iou_logits": torch.randn(1, 150, generator=g),
    }
    ours = model.compute_loss(targets, outputs, [anchors])
    idx = model.match_anchors(targets, [anchors])[0]
    fg = torch.where(idx >= 0)[0]
    scale = ((anchors[fg, 2:] - anchors[fg, :2]).prod(1)).sqrt()[:, None]
    pred = anchors[fg] + outputs["bbox_regression"][0, fg] * scale
    gt = targets[0]["boxes"][idx[fg]]
    q = box_iou(pred, gt).diagonal()
    p = torch.sigmoid(outputs["iou_logits"][0, fg])
    kl = torch.xlogy(q, q) - q * p.log() + torch.xlogy(1 - q, 1 - q) - (1 - q) * (1 - p).log()
    torch.testing.assert_close(ours["loss_iou"], kl.mean())
    weight = CALIBRATED_WEIGHTS[("retinanet", "eiou power=2 sot coder=sqrt_area")]
    value = weight * ((1 - eiou.eiou(pred, gt)) ** 2).mean()
    torch.testing.assert_close(ours["loss_box_reg"], value)


def _kl(q: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(q) || Bernoulli(sigmoid(logits))), written out."""
    p = torch.sigmoid(logits)
    return torch.xlogy(q, q) - q * p.log() + torch.xlogy(1 - q, 1 - q) - (1 - q) * (1 - p).log()


def test_roi_iou_head_negatives_target_their_top_class_box() -> None:
    """Negatives: each background RoI's box for its highest-scoring class, decoded by hand
    (Algorithm 1), against torchvision's box_iou with the image's best ground truth; the loss
    is the mean KL over positives and negatives, and the paper's head ignores negatives."""
    g = torch.Generator().manual_seed(5)
    box_loss = {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"}
    cfg = tiny_model_cfg("faster_rcnn", box_loss=box_loss, iou_head={"enabled": True})
    paper = build_detector(cfg, K).roi_heads
    cfg["iou_head"] = {"enabled": True, "negatives": True}
    roi = build_detector(cfg, K).roi_heads
    first, second = _roi_inputs(g), _roi_inputs(g, num_rois=12)
    labels = [first[2], second[2]]
    proposals = [first[0], second[0]]
    matched = [first[1], second[1]]
    gt_boxes = [torch.cat([first[1][first[2] > 0], random_boxes(2, g)]), torch.zeros(0, 4)]
    logits = torch.cat([first[3], second[3]])
    reg = torch.cat([first[4], second[4]]).detach()
    iou_logits = torch.randn(28, 1, generator=g)

    rows, targets = roi.negative_iou_targets(logits, reg, labels, proposals, gt_boxes)
    labels_all, proposals_all = torch.cat(labels), torch.cat(proposals)
    assert torch.equal(rows, torch.where(labels_all == 0)[0])
    best = logits[rows, 1:].argmax(dim=1) + 1
    offsets = reg.view(28, K + 1, 4)[rows, best] / roi.box_regression.output_scale
    p = proposals_all[rows]
    scale = ((p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])).sqrt()[:, None]
    decoded = p + offsets * scale
    in_first = rows < 16
    expected = box_iou(decoded[in_first], gt_boxes[0]).max(dim=1).values
    torch.testing.assert_close(targets[in_first], expected)
    assert expected.max() > 0.2  # some negatives overlap an object: a non-trivial target
    assert torch.equal(targets[~in_first], torch.zeros(int((~in_first).sum())))

    ours = roi.compute_losses(logits, reg, iou_logits, labels, proposals, matched, gt_boxes)
    pos = torch.where(labels_all > 0)[0]
    reg_pos = reg.view(28, K + 1, 4)[pos, labels_all[pos]] / roi.box_regression.output_scale
    p = proposals_all[pos]
    scale = ((p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])).sqrt()[:, None]
    q_pos = box_iou(p + reg_pos * scale, torch.cat(matched)[pos]).diagonal().clamp(0, 1)
    kl = _kl(torch.cat([q_pos, targets]), torch.cat([iou_logits[pos, 0], iou_logits[rows, 0]]))
    torch.testing.assert_close(ours["loss_iou"], kl.mean())
    positives_only = paper.compute_losses(logits, reg, iou_logits, labels, proposals, matched)
    torch.testing.assert_close(positives_only["loss_iou"], _kl(q_pos, iou_logits[pos, 0]).mean())


def test_retinanet_iou_head_negatives_are_the_top_scoring_negative_anchors() -> None:
    g = torch.Generator().manual_seed(6)
    cfg = tiny_model_cfg(
        "retinanet",
        box_loss={"name": "giou", "coder": "sqrt_area"},
        iou_head={"enabled": True, "negatives": True},
    )
    model = build_detector(cfg, K)
    anchors = [random_boxes(150, g), random_boxes(150, g)]
    gt = jitter(anchors[0][:4], g, 3.0)
    targets = [
        {"boxes": gt, "labels": torch.tensor([1, 2, 3, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    outputs = {
        "cls_logits": torch.randn(2, 150, K + 1, generator=g),
        "bbox_regression": torch.randn(2, 150, 4, generator=g) * 0.05,
        "iou_logits": torch.randn(2, 150, generator=g),
    }
    matched = model.match_anchors(targets, anchors)
    (image, anchor), values = model.negative_iou_targets(targets, outputs, anchors, matched)
    num_pos = int((matched[0] >= 0).sum())
    assert num_pos >= 4
    assert (image == 0).sum() == 3 * num_pos and (image == 1).sum() == 3  # no objects: 3
    for i in (0, 1):
        chosen = anchor[image == i]
        negative = torch.where(matched[i] == -1)[0]
        assert set(chosen.tolist()) <= set(negative.tolist())
        score = outputs["cls_logits"][i, :, 1:].amax(dim=1)
        others = negative[~torch.isin(negative, chosen)]
        assert score[chosen].min() >= score[others].max()  # the highest-scoring negatives
    first = anchor[image == 0]
    a = anchors[0][first]
    scale = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])).sqrt()[:, None]
    decoded = a + outputs["bbox_regression"][0, first] * scale
    torch.testing.assert_close(values[image == 0], box_iou(decoded, gt).max(dim=1).values)
    assert values[image == 0].max() > 0 and (values[image == 1] == 0).all()
    # the loss: mean KL over the positives and these negatives
    loss = model.compute_loss(targets, outputs, anchors)["loss_iou"]
    fg = torch.where(matched[0] >= 0)[0]
    a = anchors[0][fg]
    scale = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])).sqrt()[:, None]
    pred = a + outputs["bbox_regression"][0, fg] * scale
    q = box_iou(pred, gt[matched[0][fg]]).diagonal()
    logits = torch.cat([outputs["iou_logits"][0, fg], outputs["iou_logits"][image, anchor]])
    torch.testing.assert_close(loss, _kl(torch.cat([q, values]), logits).mean())


@pytest.mark.parametrize("detector", DETECTORS)
def test_training_step_with_iou_head_negatives(detector: str) -> None:
    """A full forward/backward in training mode, one image with objects and one without."""
    torch.manual_seed(0)
    cfg = tiny_model_cfg(detector, iou_head={"enabled": True, "negatives": True})
    model = build_detector(cfg, K).train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model(images, targets)
    assert losses["loss_iou"].isfinite() and losses["loss_iou"] > 0
    sum(losses.values()).backward()
    head = model.roi_heads.iou_head.predictor if detector == "faster_rcnn" else None
    weight = head.weight if head is not None else model.head.regression_head.bbox_reg.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- inference
def test_inference_decodes_with_the_training_coder_and_scores_with_iou() -> None:
    """Faster R-CNN and RetinaNet decode with the sqrt-area coder and rescore by IoU."""
    head = {"enabled": True}
    box_loss = {"name": "eiou", "coder": "sqrt_area"}
    roi = build_detector(
        tiny_model_cfg(
            "faster_rcnn", box_loss=box_loss, iou_head=head, scoring={"method": "sqrt_cls_x_iou"}
        ),
        K,
    ).roi_heads
    proposal = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # S = sqrt(20 * 40)
    offsets = torch.zeros(1, K + 1, 4)
    offsets[0, 2] = torch.tensor([0.1, -0.2, 0.05, 0.3])
    logits = torch.tensor([[-5.0, -5.0, 5.0, -5.0]])
    out = roi.predict_boxes(
        logits, offsets.view(1, -1), torch.tensor([[0.0]]), [proposal], [(100, 100)]
    )[0]
    expected = proposal + offsets[0, 2] / 50**0.5 * (20 * 40) ** 0.5  # output scale sqrt(50)
    cls = torch.softmax(logits, -1)[0, 2]
    assert out["labels"].tolist()[0] == 2
    torch.testing.assert_close(out["boxes"][0], expected[0])
    torch.testing.assert_close(out["scores"][0], (cls * 0.5).sqrt())  # sigmoid(0) = 0.5
    roi.scoring_method = "iou_guided_nms"  # ranks by IoU, reports the cluster's best cls
    guided = roi.predict_boxes(
        logits, offsets.view(1, -1), torch.tensor([[0.0]]), [proposal], [(100, 100)]
    )[0]
    torch.testing.assert_close(guided["boxes"][0], expected[0])
    torch.testing.assert_close(guided["scores"][0], cls)

    model = build_detector(
        tiny_model_cfg(
            "retinanet", box_loss=box_loss, iou_head=head, scoring={"method": "sqrt_cls_x_iou"}
        ),
        K,
    )
    anchor = torch.tensor([[5.0, 5.0, 25.0, 15.0]])
    delta = torch.tensor([[[0.2, 0.1, -0.1, 0.4]]])
    cls_logits = torch.tensor([[[0.0, -9.0, 3.0, -9.0]]])
    det = model.postprocess_detections(
        {
            "cls_logits": [cls_logits],
            "bbox_regression": [delta],
            "iou_logits": [torch.tensor([[2.0]])],
        },
        [[anchor]],
        [(100, 100)],
    )[0]
    torch.testing.assert_close(det["boxes"][0], anchor[0] + delta[0, 0] * 200**0.5)
    assert det["labels"].tolist() == [2]
    score = (torch.sigmoid(torch.tensor(3.0)) * torch.sigmoid(torch.tensor(2.0))).sqrt()
    torch.testing.assert_close(det["scores"][0], score)


def test_scoring_without_iou_head_is_rejected() -> None:
    with pytest.raises(ValueError, match="IoU head"):
        build_detector(tiny_model_cfg("retinanet", scoring={"method": "sqrt_cls_x_iou"}), K)


# --------------------------------------------------------------------------- settings
def test_default_loss_weights_and_options() -> None:
    assert build_box_regression({"name": "smooth_l1"}, "faster_rcnn").weight == 1
    for stage in ("faster_rcnn", "retinanet"):  # calibrated (tests/test_calibration.py)
        weight = CALIBRATED_WEIGHTS[(stage, "giou coder=standard")]
        assert build_box_regression({"name": "giou"}, stage).weight == weight
    assert build_box_regression({"name": "giou", "weight": 3.5}, "retinanet").weight == 3.5
    reg = build_box_regression(
        {"name": "eiou", "power": 2, "sot": True, "gradient": "paper", "coder": "sqrt_area"},
        "faster_rcnn",
    )
    assert (reg.box_loss.power, reg.box_loss.sot, reg.box_loss.gradient) == (2, True, "paper")
    assert reg.coder.name == "sqrt_area"
    assert reg.output_scale.tolist() == pytest.approx([50**0.5] * 4)
    assert build_box_regression({"name": "smooth_l1"}, "faster_rcnn").coder.weights == (
        10.0,
        10.0,
        5.0,
        5.0,
    )
    assert build_box_regression({"name": "smooth_l1"}, "retinanet").coder.weights == (1.0,) * 4
    with pytest.raises(ValueError, match="SOT"):
        build_box_regression({"name": "smooth_l1", "sot": True}, "faster_rcnn")


def test_rpn_keeps_smooth_l1_unless_configured() -> None:
    from torchvision.models.detection.rpn import RegionProposalNetwork

    from eiou.engines.torchvision import LossRPN

    plain = build_detector(tiny_model_cfg("faster_rcnn"), K)
    assert type(plain.rpn) is RegionProposalNetwork
    model = build_detector(tiny_model_cfg("faster_rcnn", rpn_box_loss={"name": "giou"}), K)
    assert isinstance(model.rpn, LossRPN)
    assert model.rpn.box_regression.weight == CALIBRATED_WEIGHTS[("rpn", "giou coder=standard")]
    model.train()
    images = [torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([1])}]
    loss = model(images, targets)
    assert loss["loss_rpn_box_reg"].isfinite() and loss["loss_rpn_box_reg"] > 0


def test_paper_anchor_settings_for_resnet_backbones() -> None:
    faster = build_detector(
        {
            "detector": "faster_rcnn",
            "backbone": "resnet50",
            "weights": "none",
            "min_size": 800,
            "max_size": 1333,
            "box_loss": {"name": "giou"},
        },
        K,
    )
    assert faster.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    assert faster.rpn.anchor_generator.aspect_ratios[0] == (0.5, 1.0, 2.0)
    assert faster.transform.min_size == (800,) and faster.transform.max_size == 1333
    feats = faster.backbone(torch.rand(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats.values()] == [32, 16, 8, 4, 2]  # P2..P6
    retina = build_detector(
        {
            "detector": "retinanet",
            "backbone": "resnet50",
            "weights": "none",
            "min_size": 500,
            "max_size": 833,
            "box_loss": {"name": "giou"},
        },
        K,
    )
    sizes = retina.anchor_generator.sizes
    assert [s[0] for s in sizes] == [32, 64, 128, 256, 512] and sizes[0] == (32, 40, 50)
    feats = retina.backbone(torch.rand(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats.values()] == [16, 8, 4, 2, 1]  # P3..P7
    for model in (faster, retina):  # from scratch: a norm that trains, everything trainable
        assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
        assert any(isinstance(m, torch.nn.GroupNorm) for m in model.backbone.modules())
        assert all(p.requires_grad for p in model.parameters())


def test_retinanet_p6_from_c5_as_detectron_or_from_p5() -> None:
    """``retinanet_p6: c5`` (Detectron, the paper) convolves C5 into P6; ``p5`` and the
    default (torchvision's) convolve P5. Checked by replacing C5 and watching P6 change."""
    base = {"detector": "retinanet", "backbone": "resnet50", "weights": "none",
            "min_size": 128, "max_size": 128, "box_loss": {"name": "giou"}}  # fmt: skip
    for p6, channels in ((None, 256), ("p5", 256), ("c5", 2048)):
        model = build_detector({**base, "retinanet_p6": p6}, K)
        block = model.backbone.fpn.extra_blocks
        assert block.p6.in_channels == channels, p6
        torch.manual_seed(0)
        p = [torch.rand(1, 256, 4, 4)]
        c5 = torch.rand(1, 2048, 4, 4)
        out, _ = block(list(p), [c5], ["p5"])
        again, _ = block(list(p), [c5 + 1], ["p5"])
        assert torch.equal(out[-2], again[-2]) == (p6 != "c5"), p6  # P6 reads C5 only for c5


def test_tiny_pyramids_keep_the_paper_anchor_to_stride_ratios() -> None:
    """tiny: Faster R-CNN's paper anchors on P2..P6; RetinaNet one level finer than the paper
    (P2..P6 instead of P3..P7) with base anchors 4x the stride, as 32 at stride 8."""
    image = torch.rand(1, 3, 128, 128)
    for detector, ratio in (("faster_rcnn", 8), ("retinanet", 4)):
        model = build_detector(tiny_model_cfg(detector, min_size=128, max_size=128), K)
        generator = (
            model.rpn.anchor_generator if detector == "faster_rcnn" else model.anchor_generator
        )
        feats = model.backbone(image)
        strides = [128 // f.shape[-1] for f in feats.values()]
        assert strides == [4, 8, 16, 32, 64], detector  # P2..P6
        assert [s[0] for s in generator.sizes] == [ratio * s for s in strides], detector
        if detector == "retinanet":  # octave scales 2^(0, 1/3, 2/3) on every level
            assert all(len(s) == 3 and s[2] == int(s[0] * 2 ** (2 / 3)) for s in generator.sizes)
        # the anchors the model generates are centred on the level's grid with those sizes
        anchors = generator(ImageList(image, [(128, 128)]), list(feats.values()))[0]
        widths = anchors[:, 2] - anchors[:, 0]
        assert widths.min() == pytest.approx(generator.sizes[0][0] * 0.5**0.5, abs=1)


# --------------------------------------------------------------------------- weights
def test_missing_imagenet_weights_fail_with_the_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    expected = tmp_path / "torch_home" / "hub" / "checkpoints"
    with pytest.raises(WeightsUnavailableError, match="TORCH_HOME") as err:
        check_weights("resnet101", "imagenet")
    assert str(expected) in str(err.value)
    with pytest.raises(WeightsUnavailableError, match="tiny"):
        check_weights("tiny", "imagenet")
    with pytest.raises(WeightsUnavailableError, match=r"no_such_file\.pth"):
        build_detector(tiny_model_cfg("faster_rcnn", weights=str(tmp_path / "no_such_file.pth")), K)
    with pytest.raises(ValueError, match="frozen_bn"):
        build_backbone("resnet50", weights="none", norm="frozen_bn")


def test_train_fails_at_start_without_weights(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cfg = run_config(data_config(tmp_path / "never_generated"), "faster_rcnn", "giou")
    cfg["model"].update(backbone="resnet50", weights="imagenet")
    with pytest.raises(WeightsUnavailableError, match="resnet50"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "never_generated").exists()


def test_backbone_weights_from_a_local_file_and_the_hub_cache(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    state = torchvision.models.resnet50().state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    backbone = build_backbone("resnet50", weights=str(path))
    body = backbone.body
    torch.testing.assert_close(body.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(body.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])
    assert isinstance(body.bn1, FrozenBatchNorm2d)  # Detectron's choice with pretrained weights
    assert not body.layer1[0].conv1.weight.requires_grad  # stem and res2 frozen (3 trainable)
    assert body.layer2[0].conv1.weight.requires_grad
    # "imagenet" reads torchvision's cache file (here a copy of the same state dict)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = imagenet_weights_file("resnet50")
    cached.parent.mkdir(parents=True)
    shutil.copy(path, cached)
    from_cache = build_backbone("resnet50", weights="imagenet")
    torch.testing.assert_close(from_cache.body.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    # tiny backbone from a local file
    tiny = build_backbone("tiny")
    torch.save(tiny.body.state_dict(), tmp_path / "tiny.pth")
    loaded = build_backbone("tiny", weights=str(tmp_path / "tiny.pth"), norm="gn")
    for key, value in tiny.body.state_dict().items():
        assert torch.equal(loaded.body.state_dict()[key], value)
