"""Backbones with FPN for the torchvision detectors, and their weights.

Names: ``resnet50``, ``resnet101``, ``resnext101_64x4d`` (torchvision ResNets + FPN, the
paper's backbones) and ``tiny`` (a 4-stage conv net + FPN with 32 channels, sized for a
2-core CPU and ~128 px images; used by the embedded default and the tests).

Weights (``model.weights``): ``"imagenet"`` (torchvision's ImageNet-1k weights, read from the
torch hub cache: never downloaded behind the user's back), ``"none"`` (from scratch) or the
path of a local file holding the backbone's state dict (torchvision ResNet keys; ``fc.*`` is
ignored). A run asking for weights it cannot get fails when the model is built, before any
data is read, with a message naming the file to provide.

Norm layers (``model.norm``): ``"frozen_bn"`` (Detectron's choice with pretrained weights),
``"bn"`` or ``"gn"`` (GroupNorm). From scratch the default is GroupNorm: a frozen batch norm
without pretrained statistics is an identity, and the network diverges.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from eiou.engines import WeightsUnavailableError
from eiou.engines.settings import NORMS, backbone_norm, trainable_stages

__all__ = [
    "BACKBONES",
    "NORMS",
    "TinyBody",
    "WeightsUnavailableError",
    "build_backbone",
    "check_weights",
    "imagenet_weights_file",
]

#: backbone name -> torchvision ImageNet weights enum member name (``None``: no ImageNet weights).
BACKBONES: dict[str, tuple[str, str] | None] = {
    "resnet50": ("ResNet50_Weights", "IMAGENET1K_V1"),
    "resnet101": ("ResNet101_Weights", "IMAGENET1K_V1"),
    "resnext101_64x4d": ("ResNeXt101_64X4D_Weights", "IMAGENET1K_V1"),
    "tiny": None,
}


def _group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


def norm_layer(name: str) -> Callable[[int], nn.Module]:
    """The norm-layer factory ``channels -> module`` for ``"frozen_bn" | "bn" | "gn"``."""
    if name == "frozen_bn":
        return misc_nn_ops.FrozenBatchNorm2d
    if name == "bn":
        return nn.BatchNorm2d
    if name == "gn":
        return _group_norm
    raise ValueError(f"model.norm must be one of {NORMS}, got {name!r}")


def _weights_enum(backbone: str) -> Any:
    import torchvision.models as tvm

    entry = BACKBONES[backbone]
    if entry is None:
        raise WeightsUnavailableError(
            f"backbone {backbone!r} has no ImageNet weights: use model.weights: none, or the "
            "path of a local state-dict file"
        )
    enum_name, member = entry
    return getattr(getattr(tvm, enum_name), member)


def imagenet_weights_file(backbone: str) -> Path:
    """Where torchvision's weights API looks for ``backbone``'s ImageNet weights.

    ``<torch hub dir>/checkpoints/<file name of the weights URL>``; the hub dir is
    ``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``).
    """
    weights = _weights_enum(backbone)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def check_weights(backbone: str, weights: str) -> None:
    """Raise :class:`WeightsUnavailableError` unless ``weights`` can be loaded offline."""
    if backbone not in BACKBONES:
        raise ValueError(f"model.backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    if weights == "none":
        return
    if weights == "imagenet":
        path = imagenet_weights_file(backbone)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"ImageNet weights for {backbone!r} not found at {path}. Download "
                f"{_weights_enum(backbone).url} into that folder (set TORCH_HOME to use another "
                "cache), or set model.weights to a local state-dict file or to none"
            )
        return
    if not Path(weights).is_file():
        raise WeightsUnavailableError(
            f"model.weights: backbone weights file {weights!r} does not exist (give the path of "
            f"a state dict of torchvision's {backbone!r}, 'imagenet' or 'none')"
        )


def _load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}


def _conv_stage(in_ch: int, out_ch: int, norm: Callable[[int], nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
        norm(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        norm(out_ch),
        nn.ReLU(inplace=True),
    )


class TinyBody(nn.Module):
    """A 4-stage conv net: ``layer1..layer4`` at strides 4, 8, 16, 32 (ResNet's C2-C5)."""

    def __init__(
        self,
        channels: tuple[int, int, int, int] = (16, 32, 64, 64),
        norm: Callable[[int], nn.Module] = _group_norm,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, stride=2, padding=1, bias=False),
            norm(channels[0]),
            nn.ReLU(inplace=True),
        )
        self.layer1 = _conv_stage(channels[0], channels[0], norm)
        self.layer2 = _conv_stage(channels[0], channels[1], norm)
        self.layer3 = _conv_stage(channels[1], channels[2], norm)
        self.layer4 = _conv_stage(channels[2], channels[3], norm)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def build_backbone(
    name: str,
    *,
    weights: str = "none",
    norm: str | None = None,
    trainable_layers: int | None = None,
    returned_layers: list[int] | None = None,
    extra_blocks: ExtraFPNBlock | None = None,
    out_channels: int | None = None,
    load_weights: bool = True,
) -> BackboneWithFPN:
    """A backbone + FPN returning ``OrderedDict[str, (N, C, H, W)]`` from C2..C5 (or a subset).

    Args:
        name: one of :data:`BACKBONES`.
        weights: ``"imagenet"``, ``"none"`` or a state-dict file (see the module docstring).
        norm: ``"frozen_bn" | "bn" | "gn"``; default ``frozen_bn`` with weights, ``gn`` without.
        trainable_layers: ResNet stages left trainable (0..5); default 3 with pretrained
            weights (Detectron: stem and res2 frozen), 5 from scratch.
        returned_layers: stages fed to the FPN (1..4); default all.
        extra_blocks: extra FPN levels (default max-pool P6; RetinaNet passes P6P7).
        out_channels: FPN width; 256 for ResNets, 32 for ``tiny`` (fixed for ResNets).
        load_weights: ``False`` builds the architecture ``weights`` implies (norm and frozen
            stages) without reading them, for loading a trained detector's checkpoint.
    """
    if name not in BACKBONES:
        raise ValueError(f"model.backbone must be one of {sorted(BACKBONES)}, got {name!r}")
    if load_weights:
        check_weights(name, weights)
    pretrained = weights != "none"
    norm = backbone_norm(weights, norm)
    trainable_layers = trainable_stages(weights, trainable_layers)
    returned_layers = returned_layers or [1, 2, 3, 4]
    if extra_blocks is None:
        extra_blocks = LastLevelMaxPool()
    factory = norm_layer(norm)

    if name == "tiny":
        out_channels = out_channels or 32
        body = TinyBody(norm=factory)
        if pretrained and load_weights:
            body.load_state_dict(_load_state_dict_file(weights), strict=True)
        return_layers = OrderedDict((f"layer{k}", str(i)) for i, k in enumerate(returned_layers))
        in_channels = [body.channels[k - 1] for k in returned_layers]
        return BackboneWithFPN(body, return_layers, in_channels, out_channels, extra_blocks)

    if out_channels not in (None, 256):
        raise ValueError(f"ResNet FPN backbones have 256 channels, got out_channels={out_channels}")
    builder = getattr(resnet, name)
    use_enum = load_weights and weights == "imagenet"
    net = builder(weights=_weights_enum(name) if use_enum else None, norm_layer=factory)
    if load_weights and pretrained and weights != "imagenet":
        state = _load_state_dict_file(weights)
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(
                f"{weights}: not a state dict of torchvision's {name}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
    return _resnet_fpn_extractor(net, trainable_layers, returned_layers, extra_blocks)


#: Channels of C5 in every ResNet / ResNeXt here.
C5_CHANNELS = 2048


def retinanet_extra_blocks(out_channels: int, *, from_c5: bool = False) -> LastLevelP6P7:
    """P6 (stride-2 conv) and P7 (ReLU, stride-2 conv) from P5 (torchvision's RetinaNet v1)
    or, ``from_c5``, from C5 (Detectron's and the paper's): torchvision's block reads C5
    when its input channels differ from its output channels."""
    return LastLevelP6P7(C5_CHANNELS if from_c5 else out_channels, out_channels)
