"""The toy experiments of Figs. 3-5: hand-worked values and the paper's claims."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eiou import toy


def test_fig3_values_from_the_paper():
    frame = toy.fig3_giou_counter_example().set_index("case")
    assert frame.loc["overlapping", "iou"] == pytest.approx(1 / 7)
    assert frame.loc["overlapping", "giou"] == pytest.approx(-5 / 63)
    assert frame.loc["touching", "giou"] == pytest.approx(0.0)
    assert frame.loc["overlapping", "giou"] < frame.loc["touching", "giou"]
    assert frame.loc["overlapping", "eiou"] > frame.loc["touching", "eiou"]


def test_fig4_surfaces_minimum_and_smoothness():
    grid = np.linspace(0.5, 1.5, 101)  # contains 1.0 exactly at index 50
    frame = toy.fig4_surfaces(grid)
    best = frame.loc[frame["smooth_eiou"].idxmin()]
    assert (best["x"], best["y"]) == pytest.approx((1.0, 1.0))
    assert best["smooth_eiou"] == pytest.approx(0.0, abs=1e-15)
    assert frame["neg_eiou"].min() == pytest.approx(-1.0)
    # Slopes along x at y = 1 next to the minimum: -EIoU keeps a slope of about 1,
    # Smooth-EIoU's vanishes (CT gives a zero gradient at the minimum).
    line = frame[np.isclose(frame["y"], 1.0)].sort_values("x")
    h = grid[1] - grid[0]
    slope_neg = np.diff(line["neg_eiou"].to_numpy()) / h
    slope_smooth = np.diff(line["smooth_eiou"].to_numpy()) / h
    assert abs(slope_neg[49]) > 0.9 and abs(slope_smooth[49]) < 0.03


def test_one_sot_step_is_eq28_by_hand():
    """From (0,0,.5,.5) against (0,0,1,1): I = xy, U = 1, L = (1 - xy)^2, so
    dL/dx = -2 (1 - xy) y and the SOT update (times U_e = 1) gives x + lr 2 (1 - xy) y."""
    lr = 0.1
    for gradient in ("autograd", "paper"):
        frame = toy.descend(
            (0, 0, 0.5, 0.5),
            (0, 0, 1, 1),
            power=2,
            sot=True,
            lr=lr,
            iterations=1,
            gradient=gradient,
        )
        expected = 0.5 + lr * 2 * (1 - 0.25) * 0.5
        assert frame.loc[1, "x2"] == pytest.approx(expected, rel=1e-12)
        assert frame.loc[1, "y2"] == pytest.approx(expected, rel=1e-12)
        assert frame.loc[1, "x1"] == 0.0


def test_sot_trajectory_scales_with_box_size():
    """NOTES: with SOT, scaling target and start by s scales the whole trajectory by s."""
    base = toy.descend((0, 0, 0.5, 0.5), (0, 0, 1, 1), power=2, sot=True, lr=0.1, iterations=60)
    for s in (3.0, 0.25):
        scaled = toy.descend(
            (0, 0, 0.5 * s, 0.5 * s), (0, 0, s, s), power=2, sot=True, lr=0.1, iterations=60
        )
        assert np.allclose(
            scaled[["x2", "y2"]].to_numpy() / s,
            base[["x2", "y2"]].to_numpy(),
            rtol=1e-12,
            atol=1e-12,
        )
        no_sot = toy.descend(
            (0, 0, 0.5 * s, 0.5 * s), (0, 0, s, s), power=2, sot=False, lr=0.1, iterations=60
        )
        assert not np.allclose(
            no_sot[["x2", "y2"]].to_numpy() / s, base[["x2", "y2"]].to_numpy(), rtol=1e-3
        )


def test_iterations_to_converge():
    frame = toy.descend((0, 0, 0.5, 0.5), (0, 0, 1, 1), power=2, sot=True, iterations=100)
    k = toy.iterations_to_converge(frame, 1e-3)
    assert math.isfinite(k)
    assert frame.loc[int(k) :, "distance"].max() < 1e-3
    assert frame.loc[int(k) - 1, "distance"] >= 1e-3


def test_claims_at_default_lr_and_where_they_fail():
    sweep = toy.lr_sweep([toy.DEFAULT_LR, 1e-3], iterations=toy.DEFAULT_ITERATIONS)
    at_default = sweep[sweep["lr"] == toy.DEFAULT_LR].set_index("claim")["holds"]
    assert at_default.all(), sweep.to_string()
    tiny = sweep[sweep["lr"] == 1e-3].set_index("claim")["holds"]
    assert not tiny["fig5b_sot_converges"]  # 200 steps are too few at lr = 1e-3
    assert tiny["fig5a_sot_scale_invariant"]  # exact at every lr


def _synthetic_sweep(holds: dict[str, list[bool]], lrs: list[float]) -> pd.DataFrame:
    rows = []
    for claim in toy.CLAIMS:
        for lr, ok in zip(lrs, holds.get(claim, [True] * len(lrs)), strict=True):
            measured = "1, 2" if ok else f"never, {lr:g}"
            rows.append({"lr": lr, "iterations": 50, "tolerance": 1e-2, "claim": claim,
                         "holds": ok, "measured": measured, "detail": "d"})  # fmt: skip
    return pd.DataFrame(rows)


def test_sweep_markdown_ranges_and_summary():
    lrs = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    frame = _synthetic_sweep(
        {
            "fig4c_ct": [False, True, True, False, True, False],
            "fig5b_sot_converges": [False] * 6,
            "fig5b_no_sot_trapped": [True, True, True, True, False, True],
        },
        lrs,
    )
    frame = frame.sample(frac=1.0, random_state=0)  # row order must not matter
    text = toy.sweep_markdown(frame, default_lr=0.1)
    lines = text.splitlines()
    assert lines[0].startswith("| claim | holds for lr (50 iterations, tolerance 0.01) |")
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[2:7]}
    ct = rows[toy.CLAIMS["fig4c_ct"][0]]
    assert ct[0] == "0.02–0.05, 0.2"
    assert ct[1] == (
        "iterations to converge (Smooth-EIoU, -EIoU): 0.01: never, 0.01; 0.1: never, 0.1; "
        "0.5: never, 0.5 |"
    )
    assert rows[toy.CLAIMS["fig5a_sot_scale_invariant"][0]] == ["every rate", "— |"]
    assert rows[toy.CLAIMS["fig5b_sot_converges"][0]][0] == "none"
    assert rows[toy.CLAIMS["fig5b_no_sot_trapped"][0]][0] == "all but 0.2"
    # the rates where all claims hold: none here (fig5b_sot_converges never holds)
    assert lines[-1] == "All 5 hold together for lr no rate of the sweep, which does not " \
        "contain the default 0.1."  # fmt: skip
    # equal numbers at consecutive failing rates are grouped
    grouped = _synthetic_sweep({"fig4c_ct": [False, False, True, True, True, True]}, lrs)
    grouped.loc[grouped["claim"] == "fig4c_ct", "measured"] = "never, never"
    text = toy.sweep_markdown(grouped, default_lr=0.1)
    assert "(Smooth-EIoU, -EIoU): 0.01–0.02: never, never |" in text
    assert text.splitlines()[-1] == (
        "All 5 hold together for lr 0.05–0.5, which contains the default 0.1."
    )


@pytest.mark.slow
def test_readme_sweep_table_is_the_generated_one():
    """The README's learning-rate table is exactly what the default sweep produces now."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- toy-sweep:[^\n]*-->\n(.*?)<!-- /toy-sweep -->", readme, re.S)
    assert match, "README.md has no toy-sweep block"
    sweep = toy.lr_sweep()
    generated = toy.sweep_markdown(sweep)
    assert match.group(1) == generated, f"regenerate the README table:\n{generated}"
    # every claim holds at the default rate, as the README's last line says
    assert sweep[sweep["lr"] == toy.DEFAULT_LR]["holds"].all()
