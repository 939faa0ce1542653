"""The ``tiny`` backbone of the detectron2 engine: detectron2's own ResNet-18 layout, narrower.

``build_tiny_resnet_fpn_backbone`` (registered in detectron2's ``BACKBONE_REGISTRY``, so any
detectron2 model built from the config finds it) builds detectron2's ``ResNet`` from its
``BasicStem`` and ``BasicBlock`` stages (2 blocks each, strides 4..32 as C2..C5) with
``MODEL.RESNETS.RES2_OUT_CHANNELS`` channels in res2, doubling per stage, and detectron2's
``FPN`` over ``MODEL.FPN.IN_FEATURES`` with P6 by max-pooling P5 (``LastLevelMaxPool``).
detectron2's ``build_resnet_backbone`` fixes res2 of a ResNet-18 at 64 channels (the ImageNet
model's); from scratch on a CPU a quarter of the compute is the point, hence this builder.
"""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem

__all__ = ["TINY_BACKBONE", "build_tiny_resnet_fpn_backbone"]

#: The registry name of the builder.
TINY_BACKBONE = "build_tiny_resnet_fpn_backbone"


def build_tiny_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """A narrow ResNet-18 (widths from ``RES2_OUT_CHANNELS``) + FPN + max-pooled P6."""
    norm = cfg.MODEL.RESNETS.NORM
    stem = BasicStem(input_shape.channels, cfg.MODEL.RESNETS.STEM_OUT_CHANNELS, norm=norm)
    stages, in_channels = [], cfg.MODEL.RESNETS.STEM_OUT_CHANNELS
    out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    for index in range(4):
        stages.append(
            ResNet.make_stage(
                BasicBlock,
                2,
                in_channels=in_channels,
                out_channels=out_channels,
                stride_per_block=[1 if index == 0 else 2, 1],
                norm=norm,
            )
        )
        in_channels, out_channels = out_channels, out_channels * 2
    bottom_up = ResNet(
        stem,
        stages,
        out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


if TINY_BACKBONE not in BACKBONE_REGISTRY:
    BACKBONE_REGISTRY.register(build_tiny_resnet_fpn_backbone)
