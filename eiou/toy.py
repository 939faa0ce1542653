"""The paper's toy experiments (Figs. 3-5) as functions returning pandas frames.

Setting (Sec. III-C/D): the target box is ``(0, 0, s, s)``; the predicted box is
``(0, 0, x, y)``, the parameterisation of Fig. 4's surfaces, so gradient descent moves the
two free coordinates ``x2 = x`` and ``y2 = y`` and keeps ``x1 = y1 = 0``. Every run is plain
gradient descent ``p <- p - lr * g`` on the loss of one box pair, where ``g`` is the gradient
with SOT's scaling by ``U_e`` when SOT is on (paper Eq. 28, its constant 2 absorbed in
``lr``). The paper gives no learning rate: :data:`DEFAULT_LR` is ours, and
:func:`lr_sweep` states for a range of rates whether each claim of the paper holds.

Claims checked by :func:`lr_sweep` (``tolerance`` is relative to the target size ``s``; a run
*converges* at the first iteration after which ``max |p - t| / s`` stays below it):

- ``fig4c_ct``: with SOT, Smooth-EIoU converges and -EIoU does not (it oscillates).
- ``fig5a_sot_scale_invariant``: with SOT, scaling target and start by ``s`` scales the whole
  trajectory by ``s`` (max deviation of ``p_k / s`` across sizes below 1e-9).
- ``fig5a_no_sot_slower_when_larger``: without SOT, larger sizes converge later (or never).
- ``fig5b_sot_converges``: with SOT, every start of Fig. 5b converges.
- ``fig5b_no_sot_trapped``: without SOT, the ``(0, 0, 4, 4)`` start does not converge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch

import eiou
from eiou import losses
from eiou.outputs import TOY_OUTPUT_FILES

__all__ = [
    "DEFAULT_ITERATIONS",
    "DEFAULT_LR",
    "DEFAULT_TOLERANCE",
    "OUTPUT_FILES",
    "descend",
    "fig3_giou_counter_example",
    "fig4_surfaces",
    "fig4c_descent",
    "fig5_descent",
    "iterations_to_converge",
    "lr_sweep",
    "sweep_markdown",
]

DEFAULT_LR = 0.1
DEFAULT_ITERATIONS = 200
DEFAULT_TOLERANCE = 1e-3
SWEEP_LRS = tuple(float(v) for v in np.logspace(-3, 0, 13))

#: What ``eiou toy --output DIR`` writes (the list lives in :mod:`eiou.outputs`).
OUTPUT_FILES = TOY_OUTPUT_FILES

FIG5A = (("small", 1.0, 0.5), ("medium", 2.0, 1.0), ("large", 4.0, 2.0))  # (size, s, start)
FIG5B = (("small", 1.0, 0.5), ("medium", 1.0, 2.0), ("large", 1.0, 4.0))

_LOSSES = {"-EIoU": 1.0, "Smooth-EIoU": 2.0}  # display name -> CT power

#: Each claim of :func:`lr_sweep`: (how the README states it, what its numbers measure).
CLAIMS = {
    "fig4c_ct": (
        "Fig. 4c: with SOT, Smooth-EIoU converges, -EIoU oscillates",
        "iterations to converge (Smooth-EIoU, -EIoU)",
    ),
    "fig5a_sot_scale_invariant": (
        "Fig. 5a: with SOT the trajectory scales exactly with the box size",
        "max deviation of p_k / s across sizes",
    ),
    "fig5a_no_sot_slower_when_larger": (
        "Fig. 5a: without SOT, larger boxes converge later",
        "iterations to converge (small, medium, large)",
    ),
    "fig5b_sot_converges": (
        "Fig. 5b: with SOT every start converges",
        "iterations to converge (starts 0.5, 2, 4)",
    ),
    "fig5b_no_sot_trapped": (
        "Fig. 5b: without SOT the `(0, 0, 4, 4)` start is trapped",
        "iterations to converge from `(0, 0, 4, 4)`",
    ),
}


def fig3_giou_counter_example() -> pd.DataFrame:
    """Fig. 3: an overlapping pair has a *lower* GIoU than a touching pair; EIoU disagrees.

    Columns: ``case``, ``pred`` and ``target`` (box tuples as strings), ``iou``, ``giou``,
    ``eiou``. The paper's values: overlapping IoU = 1/7, GIoU = -5/63; touching 0 and 0.
    """
    target = (0.0, 0.0, 1.0, 1.0)
    cases = {"overlapping": (0.5, 0.5, 1.5, 1.5), "touching": (1.0, 0.0, 2.0, 1.0)}
    rows = []
    for case, pred in cases.items():
        p = torch.tensor(pred, dtype=torch.float64)
        t = torch.tensor(target, dtype=torch.float64)
        rows.append(
            {
                "case": case,
                "pred": str(pred),
                "target": str(target),
                "iou": eiou.iou(p, t, eps=0.0).item(),
                "giou": eiou.giou(p, t, eps=0.0).item(),
                "eiou": eiou.eiou(p, t, eps=0.0).item(),
            }
        )
    return pd.DataFrame(rows)


def fig4_surfaces(grid: Iterable[float] | None = None) -> pd.DataFrame:
    """Fig. 4a/4b: -EIoU and Smooth-EIoU of ``(0, 0, x, y)`` against ``(0, 0, 1, 1)``.

    Columns: ``x``, ``y``, ``neg_eiou``, ``smooth_eiou`` over the grid ``x, y in grid``
    (default 121 points in ``[0.05, 3]``).
    """
    values = np.asarray(list(grid) if grid is not None else np.linspace(0.05, 3.0, 121))
    xs, ys = np.meshgrid(values, values, indexing="ij")
    pred = torch.zeros(xs.size, 4, dtype=torch.float64)
    pred[:, 2] = torch.from_numpy(xs.ravel())
    pred[:, 3] = torch.from_numpy(ys.ravel())
    target = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64).expand_as(pred)
    value = eiou.eiou(pred, target, eps=0.0).numpy()
    return pd.DataFrame(
        {"x": xs.ravel(), "y": ys.ravel(), "neg_eiou": -value, "smooth_eiou": (1 - value) ** 2}
    )


def descend(
    start: tuple[float, float, float, float],
    target: tuple[float, float, float, float],
    *,
    power: float,
    sot: bool,
    lr: float = DEFAULT_LR,
    iterations: int = DEFAULT_ITERATIONS,
    free: tuple[int, ...] = (2, 3),
    gradient: str = "autograd",
    eps: float = 0.0,
) -> pd.DataFrame:
    """Gradient descent on ``(1 - EIoU)^power`` of one predicted box against ``target``.

    Only the coordinates in ``free`` (indices into ``(x1, y1, x2, y2)``) move. Float64,
    and ``eps = 0`` by default: the paper's exact EIoU (the toy boxes never degenerate),
    so that scale invariance under SOT is exact rather than approximate.

    Returns:
        One row per iterate ``k = 0..iterations``: ``iteration``, ``x1, y1, x2, y2``,
        ``eiou``, ``loss`` (the paper's value: ``-EIoU`` when ``power == 1``, else
        ``(1 - EIoU)^power``) and ``distance`` (``max |p - t| / s``, ``s`` the target width).
    """
    loss_fn = losses.get("eiou", power=power, sot=sot, gradient=gradient, reduction="sum", eps=eps)
    box = torch.tensor([start], dtype=torch.float64)
    goal = torch.tensor([target], dtype=torch.float64)
    scale = float(target[2] - target[0])
    mask = torch.zeros(1, 4, dtype=torch.float64)
    mask[0, list(free)] = 1.0
    rows = []
    for k in range(iterations + 1):
        current = box.clone().requires_grad_()
        loss = loss_fn(current, goal)
        value = eiou.eiou(box, goal, eps=eps).item()
        rows.append(
            {
                "iteration": k,
                **dict(zip(("x1", "y1", "x2", "y2"), box[0].tolist(), strict=True)),
                "eiou": value,
                "loss": -value if power == 1 else loss.item(),
                "distance": (box - goal).abs().max().item() / scale,
            }
        )
        if k == iterations:
            break
        (grad,) = torch.autograd.grad(loss, current)
        box = box - lr * grad * mask
        if not torch.isfinite(box).all():
            break
    return pd.DataFrame(rows)


def iterations_to_converge(trajectory: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """First iteration after which ``distance`` stays below ``tolerance``; ``inf`` if never."""
    distance = trajectory["distance"].to_numpy()
    if len(distance) == 0 or not distance[-1] < tolerance:
        return math.inf
    above = np.nonzero(~(distance < tolerance))[0]
    return float(above[-1] + 1) if len(above) else 0.0


def fig4c_descent(lr: float = DEFAULT_LR, iterations: int = DEFAULT_ITERATIONS) -> pd.DataFrame:
    """Fig. 4c: -EIoU and Smooth-EIoU, both with SOT, from ``(0, 0, .5, .5)`` to ``(0, 0, 1, 1)``.

    Columns: ``loss_name`` plus the columns of :func:`descend`, plus ``lr``.
    """
    frames = []
    for name, power in _LOSSES.items():
        frame = descend(
            (0, 0, 0.5, 0.5), (0, 0, 1, 1), power=power, sot=True, lr=lr, iterations=iterations
        )
        frames.append(frame.assign(loss_name=name, lr=lr))
    return pd.concat(frames, ignore_index=True)


def fig5_descent(
    panel: str, lr: float = DEFAULT_LR, iterations: int = DEFAULT_ITERATIONS
) -> pd.DataFrame:
    """Fig. 5a (``panel="a"``: target and start scaled together) or 5b (only the start varies).

    Smooth-EIoU with and without SOT. Columns: ``panel``, ``size`` (small/medium/large),
    ``sot``, ``target_size``, ``start_size`` plus the columns of :func:`descend`, plus ``lr``.
    """
    settings = {"a": FIG5A, "b": FIG5B}[panel]
    frames = []
    for size, s, start in settings:
        for sot in (True, False):
            frame = descend(
                (0, 0, start, start), (0, 0, s, s), power=2.0, sot=sot, lr=lr, iterations=iterations
            )
            frames.append(
                frame.assign(
                    panel=panel, size=size, sot=sot, target_size=s, start_size=start, lr=lr
                )
            )
    return pd.concat(frames, ignore_index=True)


def _claims(lr: float, iterations: int, tolerance: float) -> list[dict[str, object]]:
    """Evaluate every claim of the module docstring at one learning rate."""
    converge = {}
    c4 = fig4c_descent(lr, iterations)
    for name, frame in c4.groupby("loss_name"):
        converge[name] = iterations_to_converge(frame, tolerance)
    a = fig5_descent("a", lr, iterations)
    b = fig5_descent("b", lr, iterations)

    def steps(frame: pd.DataFrame, size: str, sot: bool) -> float:
        part = frame[(frame["size"] == size) & (frame["sot"] == sot)]
        return iterations_to_converge(part, tolerance)

    sot_a = a[a["sot"]]
    normalised = {
        size: part[["x2", "y2"]].to_numpy() / part["target_size"].to_numpy()[:, None]
        for size, part in sot_a.groupby("size")
    }
    lengths = {len(v) for v in normalised.values()}
    deviation = (
        max(float(np.abs(v - normalised["small"]).max()) for v in normalised.values())
        if len(lengths) == 1
        else math.inf
    )
    no_sot = [steps(a, size, False) for size, _, _ in FIG5A]
    sot_b = [steps(b, size, True) for size, _, _ in FIG5B]
    trapped = steps(b, "large", False)
    results = {
        "fig4c_ct": (
            math.isfinite(converge["Smooth-EIoU"]) and math.isinf(converge["-EIoU"]),
            _iterations(converge["Smooth-EIoU"], converge["-EIoU"]),
        ),
        "fig5a_sot_scale_invariant": (deviation < 1e-9, f"{deviation:.3g}"),
        "fig5a_no_sot_slower_when_larger": (
            math.isfinite(no_sot[0]) and no_sot[0] < no_sot[1] < no_sot[2],
            _iterations(*no_sot),
        ),
        "fig5b_sot_converges": (all(math.isfinite(v) for v in sot_b), _iterations(*sot_b)),
        "fig5b_no_sot_trapped": (math.isinf(trapped), _iterations(trapped)),
    }
    return [
        {
            "claim": claim,
            "holds": bool(holds),
            "measured": measured,
            "detail": f"{CLAIMS[claim][1]}: {measured}",
        }
        for claim, (holds, measured) in results.items()
    ]


def _iterations(*values: float) -> str:
    """Iteration counts as text: ``never`` for a run that does not converge."""
    return ", ".join("never" if math.isinf(v) else str(int(v)) for v in values)


def lr_sweep(
    lrs: Iterable[float] = SWEEP_LRS,
    iterations: int = DEFAULT_ITERATIONS,
    tolerance: float = DEFAULT_TOLERANCE,
) -> pd.DataFrame:
    """Whether each claim holds at each learning rate.

    Columns: ``lr``, ``iterations``, ``tolerance``, ``claim``, ``holds`` (bool),
    ``measured`` (the numbers the claim was decided on, as text) and ``detail`` (the same
    with what they measure, see :data:`CLAIMS`).
    """
    rows = []
    for lr in lrs:
        for claim in _claims(float(lr), iterations, tolerance):
            rows.append(
                {"lr": float(lr), "iterations": iterations, "tolerance": tolerance, **claim}
            )
    return pd.DataFrame(rows)


def _format_lr(lr: float) -> str:
    return f"{lr:.2g}"


def _ranges(lrs: list[float], selected: list[float]) -> list[str]:
    """``selected`` as runs of consecutive entries of the sorted sweep ``lrs``: "a–b"."""
    runs: list[list[float]] = []
    for i, lr in enumerate(lrs):
        if lr not in selected:
            continue
        if runs and lrs.index(runs[-1][-1]) == i - 1:
            runs[-1].append(lr)
        else:
            runs.append([lr])
    return [
        _format_lr(run[0]) if len(run) == 1 else f"{_format_lr(run[0])}–{_format_lr(run[-1])}"
        for run in runs
    ]


def sweep_markdown(sweep: pd.DataFrame, default_lr: float = DEFAULT_LR) -> str:
    """The README's table of :func:`lr_sweep`: per claim, the rates where it holds, and
    where it does not, with the numbers it was decided on; then the rates where all hold.

    The README holds exactly this text for the default sweep (checked by the test suite);
    regenerate it with
    ``python -c "from eiou import toy; print(toy.sweep_markdown(toy.lr_sweep()))"``.
    """
    lrs = sorted(sweep["lr"].unique().tolist())
    iterations = int(sweep["iterations"].iloc[0])
    tolerance = float(sweep["tolerance"].iloc[0])
    lines = [
        f"| claim | holds for lr ({iterations} iterations, tolerance {tolerance:g}) "
        "| does not hold for lr: what was measured |",
        "|---|---|---|",
    ]
    for claim, (text, measures) in CLAIMS.items():
        rows = sweep[sweep["claim"] == claim].sort_values("lr")
        holding = rows.loc[rows["holds"], "lr"].tolist()
        failing = rows[~rows["holds"]]
        if len(holding) == len(lrs):
            holds = "every rate"
        elif len(holding) >= len(lrs) / 2 and len(failing) <= 2:
            holds = "all but " + ", ".join(_ranges(lrs, failing["lr"].tolist()))
        else:
            holds = ", ".join(_ranges(lrs, holding)) or "none"
        groups: list[tuple[list[float], str]] = []  # consecutive rates, same numbers
        for lr, measured in zip(failing["lr"], failing["measured"], strict=True):
            last = groups[-1] if groups else None
            if last and last[1] == measured and lrs.index(last[0][-1]) == lrs.index(lr) - 1:
                last[0].append(lr)
            else:
                groups.append(([lr], measured))
        fails = "; ".join(f"{_ranges(lrs, rates)[0]}: {measured}" for rates, measured in groups)
        lines.append(f"| {text} | {holds} | {f'{measures}: {fails}' if fails else '—'} |")
    together = sweep.groupby("lr")["holds"].all()
    all_hold = [lr for lr in lrs if together[lr]]
    where = ", ".join(_ranges(lrs, all_hold)) or "no rate of the sweep"
    default = _format_lr(default_lr)
    contains = "contains" if default_lr in all_hold else "does not contain"
    lines += ["", f"All {len(CLAIMS)} hold together for lr {where}, which {contains} the default "
              f"{default}."]  # fmt: skip
    return "\n".join(lines) + "\n"
