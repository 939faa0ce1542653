"""How hard each box loss pushes at the start of training, measured on a reference set.

A detector stage's box loss reaches the network through its raw regression outputs ``r``
(``(N, 4)``, one row per positive). At the start of training ``r ~ 0``: the prediction is
the anchor (RetinaNet) or the proposal (Faster R-CNN's second stage). This module measures,
per positive, the norm of the gradient of the stage's *weighted* loss with respect to ``r``
at ``r = 0``, on a fixed, seeded reference set of (anchor, ground truth) pairs binned by
their IoU, so that loss variants can be compared (and put on the same footing) where
AP75 / AP90 are decided.

Reference distribution (:func:`reference_pairs`, version :data:`REFERENCE_VERSION`):

- ground truth: centre uniform in ``[0, 800)^2`` px, ``sqrt(area)`` log-uniform in
  ``[16, 512]`` px (COCO's small to large objects at an 800 px short side), aspect ratio
  ``h / w`` log-uniform in ``[1/3, 3]``;
- anchor / proposal: the ground truth with its centre moved by ``(w e1, h e2)`` and its
  width and height multiplied by ``exp(e3)``, ``exp(e4)``, with ``e1..e4 ~ N(0, sigma^2)``
  i.i.d. and ``sigma`` drawn per pair log-uniform in ``[0.01, 0.5]``;
- pairs are sorted into the IoU bins :data:`IOU_BINS` (``[lo, hi)``, IoU of the anchor with
  its ground truth) and the first ``pairs_per_bin`` of each bin, in draw order, are kept: every
  bin has the same weight, so the mean over all pairs is the mean over the bins.

Every loss here is translation- and scale-invariant in the anchor-normalised frame, and the
coders' offsets are too, so the gradient depends on the pairs' shapes and relative offsets,
not on their pixel size; the sizes are drawn realistically anyway.

The calibration rule (:data:`RULE`, version :data:`RULE_VERSION`) puts every box-loss variant
of a stage on the footing of that stage's smooth-L1 baseline at the start of training:

(a) **Coder.** The ``sqrt_area`` coder's output scale is ``s = (wx wy ww wh)^(1/4)`` of the
    stage's standard-coder weights (:func:`sqrt_area_output_scale`), so a unit of raw output
    moves a box as much under either coder: the Jacobian raw outputs -> box corners at
    ``r = 0`` has the same ``|det|``. Per axis the standard coder's Jacobian is
    ``w_a [[1/wx, -1/(2 ww)], [1/wx, 1/(2 ww)]]`` (``x1, x2`` by ``dx, dw``), ``|det| =
    w_a^2 / (wx ww)``; over both axes ``S^4 / (wx wy ww wh)`` with ``S^2 = w_a h_a``,
    whatever the anchor's aspect ratio. The ``sqrt_area`` coder's Jacobian is
    ``(S / s) I``, ``|det| = S^4 / s^4``. For Faster R-CNN's ``(10, 10, 5, 5)``,
    ``s = sqrt(50) = 7.07``, and at a square anchor both Jacobians are ``0.141 S`` times an
    orthogonal matrix (same singular values); for ``(1, 1, 1, 1)`` (RetinaNet, RPN) ``s = 1``.
(b) **Weight.** The loss weight is the one that makes the mean per-positive gradient norm
    on the reference set (IoU 0.5-0.97, :func:`gradient_profile`) equal that of the stage's
    reference, smooth-L1 (beta 1/9) on its standard coder with weight 1
    (:func:`calibrated_weight`), rounded to 3 significant digits. The built-in variants'
    values are tabulated in :data:`CALIBRATED_WEIGHTS` (a test recomputes every entry); any
    other loss (options, coder weights, a dotted path) is calibrated the same way when its
    stage is built.

It equalises the mean size of the first updates, in raw outputs (what flows back into the
network beside the classification loss) and, through (a), in box space. It does not
equalise the gradient's shape over IoU: CT multiplies EIoU's gradient by ``2 (1 - EIoU)``,
so at the same mean a calibrated EIoU + CT pushes harder than EIoU on poor positives and
far softer near IoU 1, which is the point of CT; nor anything later in training.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from eiou import metrics

__all__ = [
    "CALIBRATED_WEIGHTS",
    "IOU_BINS",
    "REFERENCE_VERSION",
    "RULE",
    "RULE_VERSION",
    "SIGNIFICANT_DIGITS",
    "TABULATED_BOX_LOSSES",
    "TABULATED_STAGES",
    "GradientProfile",
    "ReferencePairs",
    "calibrated_weight",
    "compute_table",
    "default_weight",
    "describe",
    "gradient_norms",
    "gradient_profile",
    "loss_key",
    "reference_pairs",
    "round_significant",
    "sqrt_area_output_scale",
]

#: IoU bins ``[lo, hi)`` of the reference set: positives from the usual 0.5 threshold up to
#: 0.97 (above it every loss's gradient is near its limit at IoU 1).
IOU_BINS: tuple[tuple[float, float], ...] = (
    (0.5, 0.6),
    (0.6, 0.7),
    (0.7, 0.8),
    (0.8, 0.9),
    (0.9, 0.97),
)
#: Version of the reference distribution; bump it when :func:`reference_pairs` changes.
REFERENCE_VERSION = 1
DEFAULT_PAIRS_PER_BIN = 2000
DEFAULT_SEED = 0

#: A stage: ``stage(raw, anchors, gt_boxes, avg_factor)`` returns the stage's weighted loss
#: (a scalar) or an object with a ``.loss`` scalar (e.g. a ``BoxRegression``'s output).
Stage = Callable[[Tensor, Tensor, Tensor, float], Any]


class ReferencePairs(NamedTuple):
    """The reference set: ``anchors`` and ``gt_boxes`` ``(N, 4)`` xyxy pixels (float64),
    ``iou`` ``(N,)`` of each pair and ``bin_index`` ``(N,)`` into :data:`IOU_BINS`."""

    anchors: Tensor
    gt_boxes: Tensor
    iou: Tensor
    bin_index: Tensor


class GradientProfile(NamedTuple):
    """Mean per-positive gradient norm in each IoU bin, and over all pairs (= over the bins)."""

    per_bin: tuple[float, ...]
    mean: float


def _log_uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _draw(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` (anchor, ground truth) pairs of the reference distribution, before binning."""
    centre = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 800
    side = _log_uniform(n, 16.0, 512.0, generator)
    aspect = _log_uniform(n, 1 / 3, 3.0, generator)
    size = torch.stack((side / aspect.sqrt(), side * aspect.sqrt()), -1)  # (w, h)
    gt = torch.cat((centre - size / 2, centre + size / 2), -1)
    sigma = _log_uniform(n, 0.01, 0.5, generator)[:, None]
    noise = torch.randn(n, 4, generator=generator, dtype=torch.float64) * sigma
    anchor_centre = centre + size * noise[:, :2]
    anchor_size = size * noise[:, 2:].exp()
    anchors = torch.cat((anchor_centre - anchor_size / 2, anchor_centre + anchor_size / 2), -1)
    return anchors, gt


@functools.lru_cache(maxsize=4)
def reference_pairs(
    pairs_per_bin: int = DEFAULT_PAIRS_PER_BIN, seed: int = DEFAULT_SEED
) -> ReferencePairs:
    """The seeded reference set (see the module docstring), ``pairs_per_bin`` per IoU bin.

    Deterministic for a given ``(pairs_per_bin, seed)`` (float64 CPU generator); cached, so
    treat the returned tensors as read-only.
    """
    generator = torch.Generator().manual_seed(seed)
    kept: list[list[tuple[Tensor, Tensor, Tensor]]] = [[] for _ in IOU_BINS]
    counts = [0] * len(IOU_BINS)
    while min(counts) < pairs_per_bin:
        anchors, gt = _draw(16 * pairs_per_bin, generator)
        iou = metrics.iou(anchors, gt, eps=0.0)
        for b, (low, high) in enumerate(IOU_BINS):
            take = torch.where((iou >= low) & (iou < high))[0][: pairs_per_bin - counts[b]]
            kept[b].append((anchors[take], gt[take], iou[take]))
            counts[b] += len(take)
    anchors = torch.cat([a for chunks in kept for a, _, _ in chunks])
    gt = torch.cat([g for chunks in kept for _, g, _ in chunks])
    iou = torch.cat([i for chunks in kept for _, _, i in chunks])
    bin_index = torch.arange(len(IOU_BINS)).repeat_interleave(pairs_per_bin)
    return ReferencePairs(anchors, gt, iou, bin_index)


def gradient_norms(stage: Stage, anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """Per positive ``||d loss / d r_i||`` at raw outputs ``r = 0``, ``(N,)``.

    ``stage`` is called once on all pairs with ``avg_factor = 1``, so the value is the
    gradient one positive receives when the stage's normaliser is 1; in a detector it is
    divided by the normaliser (the sampled RoIs in Faster R-CNN, the positives in RetinaNet).
    Each pair's loss depends on its own row of ``r`` only, so one backward pass gives every
    pair's gradient.
    """
    raw = torch.zeros(anchors.shape[0], 4, dtype=torch.float32, requires_grad=True)
    out = stage(raw, anchors, gt_boxes, 1.0)
    loss = getattr(out, "loss", out)
    (grad,) = torch.autograd.grad(loss, raw)
    return grad.double().norm(dim=-1)


def gradient_profile(stage: Stage, pairs: ReferencePairs | None = None) -> GradientProfile:
    """:func:`gradient_norms` of ``stage`` on the reference set, averaged per IoU bin."""
    pairs = reference_pairs() if pairs is None else pairs
    norms = gradient_norms(stage, pairs.anchors, pairs.gt_boxes)
    per_bin = tuple(float(norms[pairs.bin_index == b].mean()) for b in range(len(IOU_BINS)))
    return GradientProfile(per_bin, float(norms.mean()))


# --------------------------------------------------------------------------- the rule
#: Name and version of the calibration rule; both go into every run's provenance.
RULE = "equal-start-gradient"
RULE_VERSION = 1
#: Significant digits of a calibrated weight (tabulated or computed).
SIGNIFICANT_DIGITS = 3

#: (stage, :func:`loss_key`) -> calibrated weight of the built-in variants with the stage's
#: default coder settings. ``smooth_l1`` on the standard coder is the reference (1 by
#: definition). Regenerate with ``python -m eiou.calibration``; a test checks every entry.
CALIBRATED_WEIGHTS: dict[tuple[str, str], float] = {
    ("faster_rcnn", "smooth_l1 coder=standard"): 1.0,
    ("faster_rcnn", "iou coder=standard"): 6.75,
    ("faster_rcnn", "giou coder=standard"): 8.29,
    ("faster_rcnn", "diou coder=standard"): 8.7,
    ("faster_rcnn", "ciou coder=standard"): 8.7,
    ("faster_rcnn", "eiou coder=sqrt_area"): 8.16,
    ("faster_rcnn", "eiou power=2 coder=sqrt_area"): 18.5,
    ("faster_rcnn", "eiou power=2 sot coder=sqrt_area"): 15.5,
    ("retinanet", "smooth_l1 coder=standard"): 1.0,
    ("retinanet", "iou coder=standard"): 0.479,
    ("retinanet", "giou coder=standard"): 0.591,
    ("retinanet", "diou coder=standard"): 0.614,
    ("retinanet", "ciou coder=standard"): 0.614,
    ("retinanet", "eiou coder=sqrt_area"): 0.71,
    ("retinanet", "eiou power=2 coder=sqrt_area"): 1.61,
    ("retinanet", "eiou power=2 sot coder=sqrt_area"): 1.35,
    ("rpn", "smooth_l1 coder=standard"): 1.0,
    ("rpn", "iou coder=standard"): 0.479,
    ("rpn", "giou coder=standard"): 0.591,
    ("rpn", "diou coder=standard"): 0.614,
    ("rpn", "ciou coder=standard"): 0.614,
    ("rpn", "eiou coder=sqrt_area"): 0.71,
    ("rpn", "eiou power=2 coder=sqrt_area"): 1.61,
    ("rpn", "eiou power=2 sot coder=sqrt_area"): 1.35,
}

_TABULATED_NAMES = ("smooth_l1", "iou", "giou", "diou", "ciou", "eiou", "smooth_eiou")
_KEY_OPTIONS = ("name", "power", "sot", "gradient", "coder", "coder_weights", "weight")


def round_significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def sqrt_area_output_scale(
    coder_weights: tuple[float, float, float, float],
) -> tuple[float, float, float, float]:
    """Rule (a): the ``sqrt_area`` output scale matching a standard coder's ``weights``.

    ``s = (wx wy ww wh)^(1/4)`` on every coordinate, so the Jacobian raw outputs -> box
    corners at raw outputs 0 has the same ``|det|`` under both coders at any anchor.
    """
    if len(coder_weights) != 4 or min(coder_weights) <= 0:
        raise ValueError(f"coder weights must be 4 positive numbers, got {coder_weights!r}")
    scale = math.prod(float(w) for w in coder_weights) ** 0.25
    return (scale, scale, scale, scale)


def loss_key(box_loss: Mapping[str, Any]) -> str | None:
    """The key of a ``model.box_loss`` mapping in :data:`CALIBRATED_WEIGHTS`, or ``None``.

    Only registered losses with no options beyond ``power``, ``sot``, ``gradient`` and
    ``coder``, and the stage's default coder weights, have a key: ``"giou coder=standard"``,
    ``"eiou power=2 sot coder=sqrt_area"``. ``gradient`` is left out: Appendix A's gradient
    and autograd agree on overlapping pairs, and every reference pair overlaps.
    """
    name = box_loss.get("name")
    extra = [k for k, v in box_loss.items() if k not in _KEY_OPTIONS and v is not None]
    if name not in _TABULATED_NAMES or extra or box_loss.get("coder_weights") is not None:
        return None
    power = box_loss.get("power")
    power = float(2.0 if name == "smooth_eiou" else 1.0) if power is None else float(power)
    name = "eiou" if name == "smooth_eiou" else name
    parts = [name]
    if power != 1:
        parts.append(f"power={power:g}")
    if box_loss.get("sot"):
        parts.append("sot")
    parts.append(f"coder={box_loss.get('coder') or 'standard'}")
    return " ".join(parts)


def calibrated_weight(stage: Stage, reference: Stage, pairs: ReferencePairs | None = None) -> float:
    """Rule (b): the weight of ``stage`` whose mean gradient norm equals ``reference``'s.

    ``stage`` has a ``weight`` attribute (a ``BoxRegression``); the result is
    ``stage.weight * mean(reference) / mean(stage)`` on the reference set, unrounded.

    Raises:
        ValueError: the stage's loss gives no gradient at raw outputs 0 on the reference set
            (then no weight can match; set one in the config).
    """
    own = gradient_profile(stage, pairs).mean
    if not math.isfinite(own) or own <= 0:
        raise ValueError(
            f"the box loss gives a gradient norm of {own} at the start of training, so no "
            "weight can match the smooth-L1 reference; set model.box_loss.weight explicitly"
        )
    return float(stage.weight) * gradient_profile(reference, pairs).mean / own


def default_weight(
    box_loss: Mapping[str, Any], stage_name: str, stage: Stage, reference: Stage
) -> tuple[float, str]:
    """The calibrated weight of a stage whose config leaves ``weight`` unset, and its source.

    Returns ``(weight, "table")`` for a tabulated built-in variant, else ``(weight,
    "computed")`` from :func:`calibrated_weight` rounded like the table.
    """
    key = loss_key(box_loss)
    if key is not None and (stage_name, key) in CALIBRATED_WEIGHTS:
        return CALIBRATED_WEIGHTS[(stage_name, key)], "table"
    return round_significant(calibrated_weight(stage, reference)), "computed"


#: The box-loss settings whose calibrated weights are tabulated (every built-in variant's).
TABULATED_BOX_LOSSES: tuple[dict[str, Any], ...] = (
    {"name": "smooth_l1"},
    {"name": "iou"},
    {"name": "giou"},
    {"name": "diou"},
    {"name": "ciou"},
    {"name": "eiou", "coder": "sqrt_area"},
    {"name": "eiou", "power": 2, "coder": "sqrt_area"},
    {"name": "eiou", "power": 2, "sot": True, "coder": "sqrt_area"},
)
TABULATED_STAGES = ("faster_rcnn", "retinanet", "rpn")


def compute_table(pairs: ReferencePairs | None = None) -> dict[tuple[str, str], float]:
    """:data:`CALIBRATED_WEIGHTS` recomputed by the rule (rounded like the table)."""
    from eiou.engines.torchvision.box_regression import build_box_regression, reference_regression

    table = {}
    for stage_name in TABULATED_STAGES:
        reference = reference_regression(stage_name)
        for box_loss in TABULATED_BOX_LOSSES:
            stage = build_box_regression({**box_loss, "weight": 1.0}, stage_name)
            weight = calibrated_weight(stage, reference, pairs)
            table[(stage_name, loss_key(box_loss))] = round_significant(weight)
    return table


def describe(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved box-regression settings of a run, without building a model.

    Args:
        model_cfg: the ``model`` section of a run config, or a whole run config; missing
            keys take the defaults of :func:`eiou.config.load_run_config`.

    Returns:
        A JSON-serialisable dict: ``rule`` (name, version, the reference set and the
        reference loss) and, per stage (``box_loss``; ``rpn_box_loss`` for Faster R-CNN),
        ``loss``, ``options``, ``coder`` with ``coder_weights`` (standard) or
        ``output_scale`` (``sqrt_area``), ``coder_source`` (``config``, ``default`` or
        ``rule``), ``weight``, ``weight_source`` (``config``, ``rule (table)``,
        ``rule (computed)``; ``torchvision`` for the stock RPN) and ``normaliser``.
    """
    from eiou.config import load_run_config
    from eiou.engines.torchvision.box_regression import build_box_regression, stock_rpn_settings

    run_cfg = model_cfg if "model" in model_cfg else {"model": dict(model_cfg)}
    model_cfg = load_run_config(run_cfg)["model"]
    detector = model_cfg["detector"]
    out: dict[str, Any] = {
        "rule": {
            "name": RULE,
            "version": RULE_VERSION,
            "reference_loss": "smooth_l1 (beta 1/9) on the stage's standard coder, weight 1",
            "reference_set": {
                "version": REFERENCE_VERSION,
                "pairs_per_bin": DEFAULT_PAIRS_PER_BIN,
                "seed": DEFAULT_SEED,
                "iou_bins": [list(b) for b in IOU_BINS],
            },
        },
        "box_loss": build_box_regression(model_cfg["box_loss"], detector).settings,
    }
    if detector == "faster_rcnn":
        rpn = model_cfg.get("rpn_box_loss")
        out["rpn_box_loss"] = (
            stock_rpn_settings() if not rpn else build_box_regression(rpn, "rpn").settings
        )
    return out


if __name__ == "__main__":  # print CALIBRATED_WEIGHTS as recomputed by the rule
    for (stage_name, key), weight in compute_table().items():
        print(f"    ({stage_name!r}, {key!r}): {weight!r},")
