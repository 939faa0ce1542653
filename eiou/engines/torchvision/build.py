"""``build_detector(model_cfg, num_classes)``: the one place detectors are built from config.

Paper settings where they apply (Peng & Yu, Sec. V-A; Detectron): Faster R-CNN + FPN with
one anchor size per level, 32..512 over P2..P6, aspect ratios 0.5, 1, 2; RetinaNet on
P3..P7 with sizes 32..512 times octave scales 2^(0, 1/3, 2/3); short side ``min_size``,
long side at most ``max_size``. The ``tiny`` backbone (strides 4..32 like ResNet's C2..C5,
images ~128 px) keeps Faster R-CNN's paper anchors; its RetinaNet starts the pyramid one
level finer, P2..P6 (P6 by max-pooling P5) with sizes 16..256, keeping RetinaNet's rule of
a base anchor 4x the level's stride (32 at stride 8 in the paper). On the mini preset's
VOC-like shapes this lifts smooth-L1 AP from 27.0 to 42.4 (Faster R-CNN) and from 2.9 to 22.8
(RetinaNet, at ~1.8x the time per iteration); the sizes 8..128 used before sat at 1-2x the
stride. ``benchmarks/results/tiny_pyramid_cpu.md`` has every setting and its command.

``model.options`` passes further keyword arguments to torchvision's ``FasterRCNN`` /
``RetinaNet`` (e.g. ``rpn_post_nms_top_n_train``, ``box_batch_size_per_image``,
``topk_candidates``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from eiou.engines.settings import (
    default_anchor_sizes,
    iou_head_negatives,
    iou_head_settings,
    scoring_settings,
)
from eiou.engines.torchvision.backbones import (
    build_backbone,
    check_weights,
    norm_layer,
    retinanet_extra_blocks,
)
from eiou.engines.torchvision.box_regression import build_box_regression
from eiou.engines.torchvision.faster_rcnn import IoURoIHeads, LossRPN
from eiou.engines.torchvision.retinanet import IoURetinaNet
from eiou.engines.torchvision.transform import CandidateScaleTransform
from eiou.heads import IoUHead

__all__ = [
    "DETECTORS",
    "build_detector",
    "default_anchor_sizes",
    "detector_options",
    "retinanet_levels",
]

DETECTORS = ("faster_rcnn", "retinanet")

#: torchvision keyword defaults for the tiny backbone (fewer proposals and RoIs on a CPU).
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "faster_rcnn": {
        "rpn_pre_nms_top_n_train": 600,
        "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 300,
        "rpn_post_nms_top_n_test": 150,
        "rpn_batch_size_per_image": 128,
        "box_batch_size_per_image": 128,
    },
    "retinanet": {"topk_candidates": 300},
}


def retinanet_levels(backbone: str, p6: str | None = None) -> tuple[list[int], ExtraFPNBlock]:
    """RetinaNet's backbone stages fed to the FPN and its extra block (5 levels in all).

    ResNets: C3..C5 + P6, P7 from P5 (``p6`` ``"p5"`` or ``None``: torchvision's RetinaNet)
    or from C5 (``"c5"``: Detectron's, the paper's) on the paper's P3..P7. ``tiny``: C2..C5 +
    P6 by max-pooling P5 (P2..P6, strides 4..64), since its images are ~4-6x smaller.
    """
    if backbone == "tiny":
        return [1, 2, 3, 4], LastLevelMaxPool()
    if p6 not in (None, "p5", "c5"):
        raise ValueError(f"model.retinanet_p6 must be c5, p5 or null, got {p6!r}")
    return [2, 3, 4], retinanet_extra_blocks(256, from_c5=p6 == "c5")


def detector_options(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """torchvision keyword arguments: the tiny defaults updated by ``model.options``."""
    options = dict(TINY_OPTIONS[model_cfg["detector"]]) if model_cfg["backbone"] == "tiny" else {}
    options.update(model_cfg.get("options") or {})
    return options


def build_detector(
    model_cfg: Mapping[str, Any], num_classes: int, *, load_weights: bool = True
) -> nn.Module:
    """A torchvision detector whose box loss, coder and IoU head come from the core.

    Args:
        model_cfg: the ``model`` section of a run config (see :mod:`eiou.config`): keys
            ``detector`` (``faster_rcnn | retinanet``), ``backbone``, ``weights``, ``norm``,
            ``trainable_layers``, ``min_size``, ``max_size``, ``anchor_sizes``,
            ``box_loss``, ``rpn_box_loss``, ``iou_head``, ``scoring``, ``options``.
        num_classes: the number of object classes ``K`` (labels ``1..K``); the background
            index 0 is added here.
        load_weights: ``False`` skips reading the backbone weights (the architecture they
            imply is kept), for loading a trained checkpoint on a machine without them.

    Returns:
        An ``nn.Module`` with torchvision's interface: ``model(images, targets)`` returns a
        loss dict in training mode (``loss_classifier``, ``loss_box_reg``, ``loss_iou`` with
        the IoU head, and ``loss_objectness``, ``loss_rpn_box_reg`` for Faster R-CNN) and,
        in eval mode, per image ``{"boxes" (D, 4) xyxy pixels of the input image,
        "labels", "scores"}`` (+ ``"predicted_iou"`` with the IoU head).

    Raises:
        WeightsUnavailableError: the requested backbone weights are not on this machine.
        ValueError: an unknown detector, backbone, norm or loss option.
    """
    detector = model_cfg["detector"]
    if detector not in DETECTORS:
        raise ValueError(f"model.detector must be one of {DETECTORS}, got {detector!r}")
    backbone_name, weights = model_cfg["backbone"], str(model_cfg.get("weights", "none"))
    if load_weights:
        check_weights(backbone_name, weights)
    sizes = tuple(model_cfg.get("anchor_sizes") or default_anchor_sizes(backbone_name, detector))
    if len(sizes) != 5:
        raise ValueError(f"model.anchor_sizes needs one size per level (5), got {sizes}")
    iou_head, iou_weight = iou_head_settings(model_cfg)
    iou_negatives = iou_head_negatives(model_cfg)
    scoring = scoring_settings(model_cfg)
    common = {
        "min_size": model_cfg["min_size"],
        "max_size": model_cfg["max_size"],
        "box_score_thresh" if detector == "faster_rcnn" else "score_thresh": scoring[
            "score_threshold"
        ],
        "box_nms_thresh" if detector == "faster_rcnn" else "nms_thresh": scoring["nms_threshold"],
        "box_detections_per_img" if detector == "faster_rcnn" else "detections_per_img": scoring[
            "detections_per_image"
        ],
        **detector_options(model_cfg),
    }
    box_regression = build_box_regression(model_cfg["box_loss"], detector)
    backbone_kwargs = {
        "weights": weights,
        "norm": model_cfg.get("norm"),
        "trainable_layers": model_cfg.get("trainable_layers"),
        "load_weights": load_weights,
    }
    if detector == "faster_rcnn":
        backbone = build_backbone(backbone_name, **backbone_kwargs)
        model = _faster_rcnn(
            backbone,
            num_classes,
            sizes,
            box_regression,
            iou_head,
            iou_weight,
            iou_negatives,
            scoring,
            model_cfg,
            common,
        )
        model.transform = CandidateScaleTransform.like(model.transform)
        return model
    returned_layers, extra_blocks = retinanet_levels(backbone_name, model_cfg.get("retinanet_p6"))
    backbone = build_backbone(
        backbone_name, returned_layers=returned_layers, extra_blocks=extra_blocks, **backbone_kwargs
    )
    anchor_sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in sizes)
    anchors = AnchorGenerator(anchor_sizes, ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    # From scratch the head towers get GroupNorm (a plain conv tower barely learns to
    # classify in a short CPU schedule); with ImageNet weights torchvision's / Detectron's
    # norm-free head, unless model.head_norm says otherwise ("none" forces no norm).
    head_norm = model_cfg.get("head_norm") or ("gn" if weights == "none" else "none")
    model = IoURetinaNet(
        backbone,
        num_classes + 1,
        anchor_generator=anchors,
        box_regression=box_regression,
        iou_head=iou_head,
        iou_head_weight=iou_weight,
        iou_head_negatives=iou_negatives,
        scoring_method=scoring["method"],
        norm_layer=None if head_norm == "none" else norm_layer(head_norm),
        **common,
    )
    model.transform = CandidateScaleTransform.like(model.transform)
    return model


def _faster_rcnn(
    backbone: nn.Module,
    num_classes: int,
    sizes: tuple[int, ...],
    box_regression: Any,
    iou_head: bool,
    iou_weight: float,
    iou_negatives: bool,
    scoring: Mapping[str, Any],
    model_cfg: Mapping[str, Any],
    options: dict[str, Any],
) -> FasterRCNN:
    channels = backbone.out_channels
    representation = 128 if model_cfg["backbone"] == "tiny" else 1024
    anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))
    roi_pool = MultiScaleRoIAlign(
        featmap_names=["0", "1", "2", "3"], output_size=7, sampling_ratio=2
    )
    box_head = TwoMLPHead(channels * 7 * 7, representation)
    predictor = FastRCNNPredictor(representation, num_classes + 1)
    model = FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0]),
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=predictor,
        **options,
    )
    # Swap in the core-driven heads, keeping torchvision's matching and sampling settings.
    old = model.roi_heads
    model.roi_heads = IoURoIHeads(
        old.box_roi_pool,
        old.box_head,
        old.box_predictor,
        old.proposal_matcher.high_threshold,
        old.proposal_matcher.low_threshold,
        old.fg_bg_sampler.batch_size_per_image,
        old.fg_bg_sampler.positive_fraction,
        None,
        old.score_thresh,
        old.nms_thresh,
        old.detections_per_img,
        box_regression=box_regression,
        iou_head=IoUHead(representation) if iou_head else None,
        iou_head_weight=iou_weight,
        iou_head_negatives=iou_negatives,
        scoring_method=scoring["method"],
    )
    if model_cfg.get("rpn_box_loss"):
        rpn = model.rpn
        model.rpn = LossRPN(
            rpn.anchor_generator,
            rpn.head,
            rpn.proposal_matcher.high_threshold,
            rpn.proposal_matcher.low_threshold,
            rpn.fg_bg_sampler.batch_size_per_image,
            rpn.fg_bg_sampler.positive_fraction,
            dict(rpn._pre_nms_top_n),
            dict(rpn._post_nms_top_n),
            rpn.nms_thresh,
            rpn.score_thresh,
            box_regression=build_box_regression(model_cfg["rpn_box_loss"], "rpn"),
        )
    return model
