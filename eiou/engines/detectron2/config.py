"""The detectron2 config (``get_cfg()``) of a run config's ``model`` section.

detectron2's defaults (``detectron2/config/defaults.py``) are updated, in this order, by:

1. the detector's base config, written out here from detectron2's own files so that no
   model-zoo file (nor its ``pkg_resources`` lookup) is needed at run time:
   Faster R-CNN + FPN = ``Base-RCNN-FPN.yaml`` + ``Detectron1-Comparisons/
   faster_rcnn_R_50_FPN_noaug_1x.yaml``, the config with which detectron2 reproduces
   Detectron (smooth-L1 beta 1/9 in the RPN and 1.0 in the box head, ``ROIAlign`` with
   sampling ratio 2, one training scale); RetinaNet = ``Base-RetinaNet.yaml`` (P3..P7, P6
   and P7 from C5 as in Detectron) with Detectron's box-regression beta 0.11
   (``RETINANET.BBOX_REG_BETA``; detectron2's ``Base-RetinaNet.yaml`` uses 0, its
   ``defaults.py`` 0.1);
2. the backbone (:data:`BACKBONES`): ResNet depth, groups and width, stride placement;
3. the run config: image sizes, anchors, norm, frozen stages, classes, scoring thresholds,
   and, from scratch, detectron2's recipe for it (the backbone's norm in the FPN too,
   ImageNet's pixel std instead of the caffe-style weights' 1); for ``tiny`` the CPU
   settings of :data:`TINY`;
4. ``model.options``: any detectron2 config keys, e.g.
   ``{"MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.0, "MODEL.RPN.POST_NMS_TOPK_TRAIN": 2000}``.

The box losses come from :mod:`eiou` (:func:`stage_box_loss`); with ``name: smooth_l1`` and
no ``beta`` the beta and the standard coder's weights are this config's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detectron2.config import CfgNode, get_cfg

from eiou.engines.detectron2.backbone import TINY_BACKBONE
from eiou.engines.settings import (
    backbone_norm,
    default_anchor_sizes,
    scoring_settings,
    trainable_stages,
)
from eiou.engines.torchvision.box_regression import DEFAULT_CODER_WEIGHTS

__all__ = [
    "BACKBONES",
    "DETECTORS",
    "FASTER_RCNN",
    "RETINANET",
    "TINY",
    "detectron2_config",
    "stage_box_loss",
]

DETECTORS = ("faster_rcnn", "retinanet")

#: Base-RCNN-FPN.yaml and Detectron1-Comparisons/faster_rcnn_R_50_FPN_noaug_1x.yaml.
FASTER_RCNN: dict[str, Any] = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.MASK_ON": False,
    "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
    "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.FPN.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.RPN.IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"],
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 2000,  # per level
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 1000,  # per level
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 1000,  # per image
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.SMOOTH_L1_BETA": 0.1111,  # Detectron: 1/9 (detectron2's default: 0)
    "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 2,  # Detectron (detectron2's zoo: 0)
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlign",  # Detectron (detectron2's zoo: ROIAlignV2)
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 1.0,  # Detectron (detectron2's default: 0, i.e. L1)
}

#: Base-RetinaNet.yaml, with Detectron's smooth-L1 beta.
RETINANET: dict[str, Any] = {
    "MODEL.META_ARCHITECTURE": "RetinaNet",
    "MODEL.BACKBONE.NAME": "build_retinanet_resnet_fpn_backbone",  # P6, P7 from C5 (res5)
    "MODEL.RESNETS.OUT_FEATURES": ["res3", "res4", "res5"],
    "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.RETINANET.IN_FEATURES": ["p3", "p4", "p5", "p6", "p7"],
    "MODEL.RETINANET.IOU_THRESHOLDS": [0.4, 0.5],
    "MODEL.RETINANET.IOU_LABELS": [0, -1, 1],
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": 0.11,  # Detectron's RETINANET.BBOX_REG_BETA
}

#: The paper's backbones (MSRA ResNets: stride in the 1x1 conv; ResNeXt: in the 3x3).
BACKBONES: dict[str, dict[str, Any]] = {
    "resnet50": {"MODEL.RESNETS.DEPTH": 50},
    "resnet101": {"MODEL.RESNETS.DEPTH": 101},
    "resnext101_64x4d": {
        "MODEL.RESNETS.DEPTH": 101,
        "MODEL.RESNETS.NUM_GROUPS": 64,
        "MODEL.RESNETS.WIDTH_PER_GROUP": 4,
        "MODEL.RESNETS.STRIDE_IN_1X1": False,
    },
    # detectron2's ResNet-18 layout at half width (res2..res5: 32..256 channels; see
    # eiou.engines.detectron2.backbone) with the torchvision engine's tiny FPN and box-head
    # widths (32 channels, 128-d), sized for a 2-core CPU and ~64-128 px images.
    "tiny": {
        "MODEL.BACKBONE.NAME": TINY_BACKBONE,
        "MODEL.RESNETS.DEPTH": 18,
        "MODEL.RESNETS.STEM_OUT_CHANNELS": 32,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": 32,
        "MODEL.FPN.OUT_CHANNELS": 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM": 128,
    },
}

#: CPU settings of the ``tiny`` backbone (as the torchvision engine's): fewer proposals and
#: RoIs; RetinaNet on P2..P6 (P6 by max-pooling P5), one level finer than the paper, since
#: the images are ~4-6x smaller (anchors 16..256: 4x the stride, as 32 at P3 in the paper).
TINY: dict[str, dict[str, Any]] = {
    "faster_rcnn": {
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 600,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN": 300,
        "MODEL.RPN.PRE_NMS_TOPK_TEST": 300,
        "MODEL.RPN.POST_NMS_TOPK_TEST": 150,
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 128,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 128,
    },
    "retinanet": {
        "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
        "MODEL.FPN.IN_FEATURES": ["res2", "res3", "res4", "res5"],
        "MODEL.RETINANET.IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"],
        "MODEL.RETINANET.TOPK_CANDIDATES_TEST": 300,
    },
}

#: ImageNet pixel std in BGR 0..255 (detectron2's value for weights trained without
#: caffe-style normalisation), used from scratch.
IMAGENET_PIXEL_STD = [57.375, 57.120, 58.395]

_NORM_NAMES = {"frozen_bn": "FrozenBN", "bn": "BN", "gn": "GN", "none": ""}


def _merge(cfg: CfgNode, overrides: Mapping[str, Any], where: str) -> None:
    items: list[Any] = []
    for key, value in overrides.items():
        items += [key, value]
    try:
        cfg.merge_from_list(items)
    except (KeyError, AssertionError, ValueError) as err:
        raise ValueError(f"{where}: not a valid detectron2 config setting: {err}") from None


def detectron2_config(model_cfg: Mapping[str, Any], num_classes: int) -> CfgNode:
    """The frozen detectron2 ``CfgNode`` of ``model_cfg`` (see the module docstring).

    Args:
        model_cfg: the ``model`` section of a run config (:mod:`eiou.config`).
        num_classes: object classes ``K`` (detectron2's classes ``0..K-1``; ``K`` is the
            background).
    """
    detector, backbone = model_cfg["detector"], model_cfg["backbone"]
    if detector not in DETECTORS:
        raise ValueError(f"model.detector must be one of {DETECTORS}, got {detector!r}")
    if backbone not in BACKBONES:
        raise ValueError(f"model.backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    weights = str(model_cfg.get("weights", "none"))
    cfg = get_cfg()
    _merge(cfg, FASTER_RCNN if detector == "faster_rcnn" else RETINANET, "base config")
    _merge(cfg, BACKBONES[backbone], f"backbone {backbone}")
    if backbone == "tiny":
        _merge(cfg, TINY[detector], "tiny settings")

    sizes = [
        float(s)
        for s in (model_cfg.get("anchor_sizes") or default_anchor_sizes(backbone, detector))
    ]
    if len(sizes) != 5:
        raise ValueError(f"model.anchor_sizes needs one size per level (5), got {sizes}")
    if detector == "faster_rcnn":
        anchors = [[s] for s in sizes]
    else:  # 3 octave scales per level, as Detectron's SCALES_PER_OCTAVE
        anchors = [[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)] for s in sizes]
    scoring = scoring_settings(model_cfg)
    head = "ROI_HEADS" if detector == "faster_rcnn" else "RETINANET"
    frozen = 5 - trainable_stages(weights, model_cfg.get("trainable_layers"))  # stem = 1
    settings: dict[str, Any] = {
        "MODEL.ANCHOR_GENERATOR.SIZES": anchors,
        "MODEL.RESNETS.NORM": _NORM_NAMES[backbone_norm(weights, model_cfg.get("norm"))],
        "MODEL.BACKBONE.FREEZE_AT": frozen,
        "INPUT.MIN_SIZE_TRAIN": (int(model_cfg["min_size"]),),
        "INPUT.MAX_SIZE_TRAIN": int(model_cfg["max_size"]),
        "INPUT.MIN_SIZE_TEST": int(model_cfg["min_size"]),
        "INPUT.MAX_SIZE_TEST": int(model_cfg["max_size"]),
        f"MODEL.{head}.NUM_CLASSES": int(num_classes),
        f"MODEL.{head}.SCORE_THRESH_TEST": float(scoring["score_threshold"]),
        f"MODEL.{head}.NMS_THRESH_TEST": float(scoring["nms_threshold"]),
        "TEST.DETECTIONS_PER_IMAGE": int(scoring["detections_per_image"]),
    }
    if weights == "none":
        # detectron2's recipe from scratch (Misc/scratch_*_gn.yaml): the backbone's norm in
        # the FPN too (without it the tiny model diverges at lr 0.02), and "it makes sense to
        # divide by STD when training from scratch" (caffe-style weights absorbed it in conv1)
        settings["MODEL.FPN.NORM"] = settings["MODEL.RESNETS.NORM"]
        settings["MODEL.PIXEL_STD"] = IMAGENET_PIXEL_STD
    if detector == "retinanet" and backbone != "tiny" and model_cfg.get("retinanet_p6") == "p5":
        raise ValueError(
            "model.retinanet_p6: p5 is torchvision's choice; detectron2's RetinaNet builds P6 "
            "from C5 (as Detectron), use c5 or null with engine: detectron2"
        )
    if detector == "retinanet":
        # From scratch the head towers get GroupNorm, as in the torchvision engine; with
        # ImageNet weights Detectron's norm-free head (model.head_norm overrides).
        head_norm = model_cfg.get("head_norm") or ("gn" if weights == "none" else "none")
        if head_norm not in _NORM_NAMES:
            raise ValueError(f"model.head_norm must be one of {sorted(_NORM_NAMES)}")
        settings["MODEL.RETINANET.NORM"] = _NORM_NAMES[head_norm]
    _merge(cfg, settings, "model")
    _merge(cfg, model_cfg.get("options") or {}, "model.options")
    cfg.freeze()
    return cfg


def stage_box_loss(box_loss: Mapping[str, Any], cfg: CfgNode, stage: str) -> dict[str, Any]:
    """``model.box_loss`` (or ``rpn_box_loss``) with this config's smooth-L1 settings.

    For ``name: smooth_l1``: without ``beta``, the beta of ``stage`` (``faster_rcnn``: the
    box head's, ``retinanet``, ``rpn``); without ``weight``, 1 (detectron2's own loss
    weights, ``*_LOSS_WEIGHT``, apply on top as in detectron2). For the standard coder
    without ``coder_weights``, the stage's ``BBOX_REG_WEIGHTS`` (the shared defaults unless
    ``model.options`` changes them). Everything else as given,
    with the shared defaults of
    :func:`eiou.engines.torchvision.box_regression.build_box_regression`.
    """
    section = {
        "faster_rcnn": (
            cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA,
            cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS,
        ),
        "retinanet": (
            cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA,
            cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS,
        ),
        "rpn": (cfg.MODEL.RPN.SMOOTH_L1_BETA, cfg.MODEL.RPN.BBOX_REG_WEIGHTS),
    }
    beta, coder_weights = section[stage]
    out = dict(box_loss)
    if out.get("name") == "smooth_l1":
        if out.get("beta") is None:
            out["beta"] = float(beta)
        if out.get("weight") is None:
            out["weight"] = 1.0
    # coder weights are set only where they differ from the shared default, so that a
    # built-in loss keeps its tabulated calibrated weight (eiou.calibration.loss_key)
    weights = tuple(float(w) for w in coder_weights)
    standard = (out.get("coder") or "standard") == "standard"
    if standard and out.get("coder_weights") is None and weights != DEFAULT_CODER_WEIGHTS[stage]:
        out["coder_weights"] = list(weights)
    return out
