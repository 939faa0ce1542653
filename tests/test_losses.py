"""Losses: registry, reductions, CT, SOT, the two gradient modes, robustness."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import box_pairs, random_boxes
from hypothesis import given

import eiou
from eiou import losses

BOX_LOSSES = ["iou", "giou", "diou", "ciou", "eiou", "smooth_eiou"]


def my_l1_box_loss(pred: torch.Tensor, target: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A user's loss, referenced by dotted path in the tests."""
    return scale * (pred - target).abs().sum(-1)


class MyLoss(losses.BoxLoss):
    def __init__(self, *, offset: float = 0.0, **options):
        super().__init__(**options)
        self.offset = offset

    def elementwise(self, pred, target):
        return 1 - eiou.iou(pred, target) + self.offset


def test_registry_names_and_errors():
    assert set([*BOX_LOSSES, "smooth_l1"]) <= set(losses.available())
    for name in [*BOX_LOSSES, "smooth_l1"]:
        assert isinstance(losses.get(name), losses.BoxLoss)
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        losses.get("nope")
    with pytest.raises(ValueError, match="cannot import module"):
        losses.get("no_such_package.loss")
    with pytest.raises(ValueError, match="SOT applies"):
        losses.get("smooth_l1", sot=True)
    with pytest.raises(ValueError, match="gradient must be"):
        losses.get("eiou", gradient="magic")
    with pytest.raises(ValueError, match="power must be >= 1"):
        losses.get("giou", power=0.5)


def test_dotted_path_function_and_class(generator):
    pred, target = random_boxes(8, generator), random_boxes(8, generator)
    fn_loss = losses.get(f"{__name__}.my_l1_box_loss", scale=2.0, power=2, reduction="none")
    expected = (2.0 * (pred - target).abs().sum(-1)) ** 2
    assert torch.allclose(fn_loss(pred, target), expected)
    cls_loss = losses.get(f"{__name__}.MyLoss", offset=0.5, reduction="sum")
    assert torch.allclose(cls_loss(pred, target), (1.5 - eiou.iou(pred, target)).sum())


def test_reductions_weights_and_avg_factor(generator):
    pred, target = random_boxes(10, generator), random_boxes(10, generator)
    loss = losses.get("giou")
    per_pair = 1 - eiou.giou(pred, target)
    weight = torch.rand(10, generator=generator, dtype=torch.float64)
    assert torch.allclose(loss(pred, target, reduction="none"), per_pair)
    assert torch.allclose(loss(pred, target), per_pair.mean())
    assert torch.allclose(loss(pred, target, reduction="sum"), per_pair.sum())
    assert torch.allclose(
        loss(pred, target, weight=weight, avg_factor=4.0), (per_pair * weight).sum() / 4.0
    )
    weight4 = weight[:, None].expand(10, 4)
    assert torch.allclose(
        loss(pred, target, weight=weight4, reduction="sum"),
        loss(pred, target, weight=weight, reduction="sum"),
    )
    with pytest.raises(ValueError, match="reduction"):
        loss(pred, target, reduction="avg")


@pytest.mark.parametrize("name", [*BOX_LOSSES, "smooth_l1"])
def test_empty_input_mean_is_zero_with_gradient(name):
    pred = torch.zeros(0, 4, requires_grad=True)
    value = losses.get(name)(pred, torch.zeros(0, 4))
    assert value.item() == 0.0
    value.backward()
    assert pred.grad.shape == (0, 4)


def test_smooth_l1_matches_torch(generator):
    pred = torch.randn(20, 4, generator=generator)
    target = torch.randn(20, 4, generator=generator)
    for beta in (1.0 / 9, 1.0, 0.0):
        expected = torch.nn.functional.smooth_l1_loss(pred, target, beta=beta, reduction="sum")
        got = losses.get("smooth_l1", beta=beta, reduction="sum")(pred, target)
        assert torch.allclose(got, expected, atol=1e-6)


def test_iou_loss_modes(generator):
    pred, target = random_boxes(10, generator), random_boxes(10, generator)
    value = eiou.iou(pred, target)
    log_loss = losses.get("iou", reduction="none")(pred, target)
    assert torch.allclose(log_loss, -torch.log(value.clamp(min=1e-7)))
    linear = losses.get("iou", mode="linear", reduction="none")
    assert torch.allclose(linear(pred, target), 1 - value)
    with pytest.raises(ValueError, match="mode must be 'log' or 'linear', got 'cubic'"):
        losses.get("iou", mode="cubic")


def test_ct_zero_gradient_at_minimum_only_with_power_above_one():
    target = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    # A prediction slightly inside the target, approaching it along x2: compare the gradient
    # magnitude of 1 - EIoU (constant, nonzero: the paper's problem) with Smooth-EIoU's (-> 0).
    for gap in (1e-2, 1e-4, 1e-6):
        pred = torch.tensor([[0.0, 0.0, 1.0 - gap, 1.0]], dtype=torch.float64, requires_grad=True)
        plain = losses.get("eiou", reduction="sum")(pred, target)
        (g_plain,) = torch.autograd.grad(plain, pred)
        smooth = losses.get("eiou", power=2, reduction="sum")(pred, target)
        (g_smooth,) = torch.autograd.grad(smooth, pred)
        assert abs(g_plain[0, 2].item()) == pytest.approx(1.0, rel=1e-1)
        assert abs(g_smooth[0, 2].item()) <= 4 * gap
    for power in (1.5, 2.0, 3.0):
        expected = losses.convexify(torch.tensor(0.3), 0.0, power)
        assert expected.item() == pytest.approx(0.3**power)
    # CT on any decreasing function with a known minimum, e.g. -EIoU with minimum -1.
    value = -torch.tensor([0.2, 0.9, -0.5])
    assert torch.allclose(losses.convexify(value, -1.0, 2.0), (1 + value) ** 2)


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_sot_keeps_value_and_scales_gradient_by_extended_union(name, generator):
    pred, target = random_boxes(32, generator), random_boxes(32, generator)
    plain_pred = pred.clone().requires_grad_()
    sot_pred = pred.clone().requires_grad_()
    plain = losses.get(name, reduction="none")(plain_pred, target)
    steady = losses.get(name, sot=True, reduction="none")(sot_pred, target)
    assert torch.equal(plain, steady)
    plain.sum().backward()
    steady.sum().backward()
    union = eiou.extended_iou_parts(pred, target).union
    assert torch.allclose(sot_pred.grad, plain_pred.grad * union[:, None], rtol=1e-10, atol=1e-12)


def _appendix_disagreement(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Where Appendix A's dI_e/dx1_p (dI_e/dy1_p) drops the dependence of x0 (y0) on it."""
    x1 = torch.maximum(pred[:, 0], target[:, 0])
    y1 = torch.maximum(pred[:, 1], target[:, 1])
    x2 = torch.minimum(pred[:, 2], target[:, 2])
    y2 = torch.minimum(pred[:, 3], target[:, 3])
    return ((pred[:, 0] < target[:, 0]) & (y1 > y2)) | ((pred[:, 1] < target[:, 1]) & (x1 > x2))


@pytest.mark.parametrize("sot", [False, True])
@pytest.mark.parametrize("power", [1.0, 1.5, 2.0, 3.0])
def test_paper_gradient_agrees_with_autograd_exactly_where_it_must(power, sot, generator):
    pred, target = random_boxes(4000, generator), random_boxes(4000, generator)
    a, p = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    la = losses.get("eiou", power=power, sot=sot, reduction="none")(a, target)
    lp = losses.get("eiou", power=power, sot=sot, gradient="paper", reduction="none")(p, target)
    assert torch.allclose(la, lp, rtol=0, atol=1e-14)
    la.sum().backward()
    lp.sum().backward()
    differs = _appendix_disagreement(pred, target)
    overlapping = eiou.iou(pred, target) > 0
    assert not (differs & overlapping).any()
    assert differs.sum() > 100 and (~differs & ~overlapping).sum() > 100  # both cases covered
    close = torch.isclose(a.grad, p.grad, rtol=1e-9, atol=1e-12).all(-1)
    assert close[~differs].all()
    assert not close[differs].any()


def test_appendix_intersection_derivative_differs_by_two_gap():
    """Where they differ, autograd's dI_e/dx1_p exceeds the paper's 0 by 2 (y1 - y2)."""
    target = torch.tensor([[1.0, 0.0, 2.0, 1.0]], dtype=torch.float64)
    pred = torch.tensor([[0.5, 3.0, 1.5, 4.0]], dtype=torch.float64, requires_grad=True)
    inter = eiou.extended_iou_parts(pred, target).intersection
    (grad,) = torch.autograd.grad(inter.sum(), pred)
    y1, y2 = 3.0, 1.0  # max(y1_p, y1_t), min(y2_p, y2_t)
    assert grad[0, 0].item() == pytest.approx(2 * (y1 - y2))


def test_paper_gradient_is_the_exact_derivative_where_it_applies(generator):
    """gradcheck (float64 finite differences) on pairs where Appendix A is exact."""
    pred, target = random_boxes(200, generator), random_boxes(200, generator)
    keep = ~_appendix_disagreement(pred, target)
    pred, target = pred[keep][:50], target[keep][:50]
    loss = losses.get("eiou", power=2, gradient="paper", reduction="none")
    assert torch.autograd.gradcheck(
        lambda p: loss(p, target), (pred.requires_grad_(),), eps=1e-7, atol=1e-5
    )
    autograd_loss = losses.get("eiou", power=2, reduction="none")
    assert torch.autograd.gradcheck(
        lambda p: autograd_loss(p, target), (pred.detach().requires_grad_(),), eps=1e-7, atol=1e-5
    )


def test_baseline_gradients_match_torchvision(generator):
    """CIoU's alpha is a constant in the gradient (CIoU paper), so compare with torchvision."""
    import torchvision.ops as tvo

    pred, target = random_boxes(64, generator), random_boxes(64, generator)
    pairs = [
        ("giou", tvo.generalized_box_iou_loss),
        ("diou", tvo.distance_box_iou_loss),
        ("ciou", tvo.complete_box_iou_loss),
    ]
    for name, reference in pairs:
        ours, theirs = pred.clone().requires_grad_(), pred.clone().requires_grad_()
        losses.get(name, reduction="sum")(ours, target).backward()
        reference(theirs, target, reduction="sum").backward()
        assert torch.allclose(ours.grad, theirs.grad, rtol=1e-9, atol=1e-12), name


@pytest.mark.parametrize("name", ["iou", "giou", "diou"])
def test_baseline_gradients_match_finite_differences(name, generator):
    pred, target = random_boxes(40, generator), random_boxes(40, generator)
    loss = losses.get(name, power=2, reduction="none")
    assert torch.autograd.gradcheck(
        lambda p: loss(p, target), (pred.requires_grad_(),), eps=1e-7, atol=1e-5
    )


def _all_variants():
    for name in BOX_LOSSES:
        for power in (1.0, 2.0):
            for sot in (False, True):
                yield name, {"power": power, "sot": sot}
    for power in (1.0, 2.0):
        for sot in (False, True):
            yield "eiou", {"power": power, "sot": sot, "gradient": "paper"}


@given(box_pairs(n_min=1, n_max=12, min_value=-1e5, max_value=1e5, max_size=1e5, inverted=True))
def test_values_and_gradients_finite_on_hard_inputs(pair):
    """Zero sizes, identical boxes, inverted predictions, coordinates up to 1e5, far apart."""
    pred, target = pair
    target = torch.cat([target[:, :2], torch.maximum(target[:, :2], target[:, 2:])], -1)
    pred = torch.cat([pred, target, target[:, [0, 1, 0, 1]]])  # + identical, + zero-size
    target = torch.cat([target, target, target])
    for name, options in _all_variants():
        for dtype in (torch.float32, torch.float64):
            p = pred.to(dtype).clone().requires_grad_()
            value = losses.get(name, reduction="none", **options)(p, target.to(dtype))
            value.sum().backward()
            assert torch.isfinite(value).all(), (name, options)
            assert torch.isfinite(p.grad).all(), (name, options)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype, generator):
    pred, target = random_boxes(64, generator) * 40, random_boxes(64, generator) * 40
    for name, options in _all_variants():
        p = pred.to(dtype).clone().requires_grad_()
        value = losses.get(name, reduction="none", **options)(p, target.to(dtype))
        reference = losses.get(name, reduction="none", **options)(
            pred.to(dtype).double(), target.to(dtype).double()
        )
        assert value.dtype == torch.float32
        assert torch.allclose(value.double(), reference, rtol=1e-4, atol=1e-4), (name, options)
        value.sum().backward()
        assert p.grad.dtype == dtype and torch.isfinite(p.grad.float()).all()


def test_inverted_prediction_gets_gradient_that_unflips_it():
    target = torch.tensor([[0.0, 0.0, 4.0, 4.0]], dtype=torch.float64)
    for gradient in ("autograd", "paper"):
        pred = torch.tensor([[2.0, 1.0, 1.0, 3.0]], dtype=torch.float64, requires_grad=True)
        losses.get("eiou", power=2, sot=True, gradient=gradient)(pred, target).backward()
        assert pred.grad[0, 0] > 0  # x1 moves left under gradient descent
        assert pred.grad[0, 2] < 0  # x2 moves right: the box unflips


def test_dotted_path_to_a_nested_module_and_its_errors():
    """The last dot splits module from attribute: ``a.b.C`` is ``C`` of module ``a.b``."""
    loss = losses.get("eiou.losses.GIoULoss", power=2)
    assert type(loss) is losses.GIoULoss and loss.power == 2.0
    with pytest.raises(ValueError, match=r"module 'eiou\.losses' has no attribute 'Nope'"):
        losses.get("eiou.losses.Nope")
    with pytest.raises(ValueError, match="neither a class nor a function"):
        losses.get("eiou.losses.REDUCTIONS")


def test_smooth_l1_sums_the_four_coordinates_of_each_pair(generator):
    """Per pair, over the last axis only, for any leading shape."""
    pred = torch.randn(2, 5, 4, generator=generator)
    target = torch.randn(2, 5, 4, generator=generator)
    for beta in (1.0 / 9, 0.0):
        expected = torch.nn.functional.smooth_l1_loss(pred, target, beta=beta, reduction="none")
        got = losses.get("smooth_l1", beta=beta, reduction="none")(pred, target)
        assert got.shape == (2, 5)
        assert torch.allclose(got, expected.sum(-1), atol=1e-6)


def test_function_loss_defaults_and_options(generator):
    pred, target = random_boxes(6, generator), random_boxes(6, generator)
    plain = losses.FunctionLoss(my_l1_box_loss)
    assert (plain.power, plain.sot, plain.reduction, plain.eps) == (1.0, False, "mean", 1e-7)
    assert plain.input_space == "boxes" and plain.minimum == 0.0
    assert torch.allclose(plain(pred, target), (pred - target).abs().sum(-1).mean())
    offsets = losses.FunctionLoss(my_l1_box_loss, input_space="offsets", minimum=-1.0, scale=3.0)
    assert offsets.input_space == "offsets" and offsets.minimum == -1.0
    # the loss is shifted by its minimum (CT's step (i)), here -1
    expected = 3 * (pred - target).abs().sum(-1) + 1
    assert torch.allclose(offsets(pred, target, reduction="none"), expected)
    with pytest.raises(ValueError, match="input_space must be 'boxes' or 'offsets', got 'pixels'"):
        losses.FunctionLoss(my_l1_box_loss, input_space="pixels")
    with pytest.raises(ValueError, match="SOT applies"):
        losses.FunctionLoss(my_l1_box_loss, input_space="offsets", sot=True)
    # sot and eps reach the base class: SOT's U_e is computed with that eps
    steady = losses.FunctionLoss(my_l1_box_loss, sot=True, eps=0.5, reduction="sum")
    assert steady.sot and steady.eps == 0.5
    p = pred.clone().requires_grad_()
    steady(p, target).backward()
    union = eiou.extended_iou_parts(pred, target).union
    assert torch.allclose(p.grad, torch.sign(pred - target) * union[:, None])
    assert "fn=my_l1_box_loss, power=1, sot=True, reduction='sum'" in repr(steady)
    partial = functools.partial(my_l1_box_loss, scale=2.0)  # no __qualname__: its repr
    assert f"fn={partial!r}, power=1" in repr(losses.FunctionLoss(partial))


def test_eiou_loss_elementwise_and_repr(generator):
    """``elementwise`` (the loss before CT/SOT) is part of the BoxLoss interface."""
    pred, target = random_boxes(6, generator), random_boxes(6, generator)
    loss = losses.get("smooth_eiou", sot=True, gradient="paper", eps=0.0)
    assert torch.equal(loss.elementwise(pred, target), 1 - eiou.eiou(pred, target, eps=0.0))
    assert repr(loss) == ("SmoothEIoULoss(power=2, sot=True, reduction='mean', gradient='paper')")


def test_register_adds_a_name_once(monkeypatch):
    monkeypatch.setattr(losses, "_REGISTRY", dict(losses._REGISTRY))  # undone afterwards

    @losses.register("test_register_once")
    class Once(losses.GIoULoss):
        pass

    assert isinstance(losses.get("test_register_once"), Once)
    assert "test_register_once" in losses.available()
    with pytest.raises(ValueError, match="a loss named 'test_register_once' is already registered"):
        losses.register("test_register_once")(losses.GIoULoss)
    assert type(losses.get("test_register_once")) is Once


def test_each_loss_is_its_formula_with_its_own_eps(generator):
    """Per-pair values (before CT: power 1) with a non-default ``eps`` passed through."""
    pred, target = random_boxes(16, generator), random_boxes(16, generator)
    eps = 0.3
    expected = {
        "iou": -torch.log(eiou.iou(pred, target, eps).clamp(min=eps)),
        "giou": 1 - eiou.giou(pred, target, eps),
        "diou": 1 - eiou.diou(pred, target, eps),
        "ciou": 1 - eiou.ciou(pred, target, eps),
        "eiou": 1 - eiou.eiou(pred, target, eps),
        "smooth_eiou": (1 - eiou.eiou(pred, target, eps)) ** 2,
    }
    for name, value in expected.items():
        loss = losses.get(name, eps=eps, reduction="none")
        assert torch.allclose(loss(pred, target), value, rtol=1e-12, atol=1e-12), name
        assert torch.allclose(loss.elementwise(pred, target) ** loss.power, value), name
    assert losses.get("smooth_eiou").power == 2.0 and losses.get("eiou").power == 1.0


def test_convexify_defaults_and_power_check():
    value = torch.tensor([0.0, 0.5, 2.0])
    assert torch.equal(losses.convexify(value), value**2)  # minimum 0, power 2
    with pytest.raises(ValueError, match=r"power must be >= 1 \(1: no CT; CT needs power > 1\)"):
        losses.convexify(value, power=0.5)


@pytest.mark.parametrize("gradient", ["autograd", "paper"])
def test_batched_pairs_give_the_per_pair_losses_and_gradients(gradient, generator):
    """``(2, 3, 4)`` boxes with per-pair weights: the same as the 6 pairs flattened."""
    pred, target = random_boxes(6, generator), random_boxes(6, generator)
    weight = torch.rand(6, generator=generator, dtype=torch.float64)
    loss = losses.get("eiou", power=2, sot=True, gradient=gradient, reduction="sum")
    flat, batched = pred.clone().requires_grad_(), pred.view(2, 3, 4).clone().requires_grad_()
    loss(flat, target, weight=weight).backward()
    loss(batched, target.view(2, 3, 4), weight=weight.view(2, 3)).backward()
    assert torch.allclose(batched.grad.view(6, 4), flat.grad, rtol=1e-12, atol=1e-15)


class NotALoss:
    """Builds, but is not callable."""

    def __init__(self, **options):
        self.options = options


def test_error_messages_of_the_registry_and_the_base_class():
    with pytest.raises(ValueError) as err:
        losses.get(f"{__name__}.NotALoss")
    assert str(err.value) == f"'{__name__}.NotALoss' did not build a callable loss"
    with pytest.raises(ValueError) as err:
        losses.get("nope")
    assert str(err.value) == (
        f"unknown loss 'nope': use one of {losses.available()} or a dotted import path such "
        "as 'my_package.my_module.my_loss'"
    )
    with pytest.raises(ValueError) as err:
        losses.get("giou", reduction="avg")
    assert str(err.value) == "reduction must be one of ('none', 'mean', 'sum'), got 'avg'"
    with pytest.raises(ValueError) as err:
        losses.get("smooth_l1", sot=True)
    assert str(err.value) == (
        "SmoothL1Loss works on offsets: SOT applies to losses on boxes (the IoU family)"
    )


def test_reduce_loss_defaults_and_coordinate_weights_on_batches(generator):
    loss = torch.rand(2, 3, generator=generator, dtype=torch.float64)
    assert torch.equal(losses.reduce_loss(loss), loss.mean())  # "mean" by default
    weight4 = torch.rand(2, 3, 4, generator=generator, dtype=torch.float64)
    got = losses.reduce_loss(loss, weight4, reduction="none")
    assert torch.allclose(got, loss * weight4.mean(-1))
