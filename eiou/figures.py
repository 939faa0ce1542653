"""Figures with seaborn, one style, each saved as PNG and PDF.

Experiment figures (from the plan, ``metrics.json`` and ``train_log.jsonl`` of each run,
and the comparisons CSV of ``eiou compare``):

- ``fig7_recall_vs_iou``: average recall against the IoU threshold 0.50 ... 0.95, one panel
  per dataset (columns) and detector (rows), one line per variant (paper, Fig. 7);
- ``ap_by_iou``: AP at each IoU threshold, same layout;
- ``ablation_<table>`` (tables of the paper's Table I) and ``differences_<table>`` (every
  other table): each row's difference to the table's baseline for AP, AP75 and AP90 with
  its confidence interval (``eiou compare``: a paired bootstrap over test images and
  seeds) as error bars, filled where the interval excludes 0, and the paper's difference
  beside it;
- ``training_curves``: the losses logged during training.

Toy figures (from the CSV files ``eiou toy`` writes): one figure per CSV, ``toy_<name>``.

:func:`expected_figures` and :func:`expected_toy_figures` list the files so that the
workflow can declare them; every listed file is always written (a panel that has no data
yet says so), so the workflow never waits on a figure that cannot be drawn.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eiou.evaluate import IOU_THRESHOLDS
from eiou.io import atomic_open
from eiou.toy import OUTPUT_FILES

__all__ = [
    "FORMATS",
    "TOY_TABLES",
    "difference_figure",
    "difference_stem",
    "expected_figures",
    "expected_toy_figures",
    "figure_kind",
    "make_experiment_figures",
    "make_toy_figures",
    "recall_frame",
    "training_frame",
]

FORMATS: tuple[str, ...] = ("png", "pdf")
#: CSV files written by ``eiou toy`` (paper Figs 3-5 and the learning-rate sweep).
TOY_TABLES: tuple[str, ...] = tuple(name for name in OUTPUT_FILES if name.endswith(".csv"))


# --------------------------------------------------------------------------- file lists
def _both(stem: str, out_dir: str) -> list[str]:
    return [f"{out_dir}/{stem}.{ext}" for ext in FORMATS]


def experiment_figure_stems(plan: Mapping[str, Any]) -> list[str]:
    """Stems of the experiment figures of ``plan`` (no extension)."""
    stems = []
    if any(spec["data"]["has_ground_truth"] for spec in plan["runs"].values()):
        stems += ["fig7_recall_vs_iou", "ap_by_iou"]
        stems += [difference_stem(t) for t in plan["tables"] if _has_ground_truth(t)]
    if plan["runs"]:
        stems.append("training_curves")
    return stems


def _has_ground_truth(table: Mapping[str, Any]) -> bool:
    return any(row.get("has_ground_truth", True) for row in table["rows"])


def difference_stem(table: Mapping[str, Any]) -> str:
    """``ablation_<name>`` for a table of the paper's Table I, else ``differences_<name>``."""
    prefix = "ablation" if table.get("paper_table") == "I" else "differences"
    return f"{prefix}_{table['name']}"


def expected_figures(plan: Mapping[str, Any], out_dir: str = "reports/figures") -> list[str]:
    """Every experiment figure file for ``plan``."""
    return [p for stem in experiment_figure_stems(plan) for p in _both(stem, out_dir)]


def expected_toy_figures(out_dir: str = "reports/figures") -> list[str]:
    """Every toy figure file."""
    return [p for name in TOY_TABLES for p in _both(f"toy_{Path(name).stem}", out_dir)]


def figure_kind(path: str) -> str:
    """Report subcategory of a figure file."""
    stem = Path(path).stem
    for prefix, kind in (
        ("fig7", "Recall vs IoU (Fig. 7)"),
        ("ap_by_iou", "AP by IoU threshold"),
        ("ablation", "Table I ablation: differences to the baseline"),
        ("differences", "Differences to the baseline"),
        ("training", "Training curves"),
        ("toy", "Toy experiments"),
    ):
        if stem.startswith(prefix):
            return kind
    return "Other"


# --------------------------------------------------------------------------- style
@contextlib.contextmanager
def style() -> Iterator[None]:
    """The one style of every figure."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import seaborn as sns

    with plt.rc_context():
        sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.1)
        plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "pdf.fonttype": 42})
        yield


def save(fig: Any, out_dir: str | os.PathLike[str], stem: str) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` atomically, then close it."""
    import matplotlib.pyplot as plt

    paths = []
    for ext in FORMATS:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150, metadata=_metadata(ext))
        path = Path(out_dir) / f"{stem}.{ext}"
        with atomic_open(path, "wb") as handle:
            handle.write(buffer.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def _metadata(ext: str) -> dict[str, Any]:
    # Reproducible files: no creation date in the PDF.
    return {"CreationDate": None} if ext == "pdf" else {}


def _placeholder(message: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


# --------------------------------------------------------------------------- frames
def _labels(plan: Mapping[str, Any]) -> dict[str, str]:
    """Run id -> the variant label of the first table row that lists it."""
    labels: dict[str, str] = {}
    for table in plan["tables"]:
        for row in table["rows"]:
            for rid in row["run_ids"]:
                labels.setdefault(rid, row["label"])
    return labels


def _scale(metrics: Mapping[str, Any]) -> float:
    return 1.0 if metrics.get("units") == "percent" else 100.0


def recall_frame(
    plan: Mapping[str, Any], runs_dir: str | os.PathLike[str], key: str = "recall_per_iou"
) -> pd.DataFrame:
    """Long frame (run_id, label, dataset, detector, seed, iou, value) from ``key`` lists."""
    labels = _labels(plan)
    records = []
    for rid, spec in plan["runs"].items():
        path = Path(runs_dir) / rid / "metrics.json"
        if not path.exists():
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        values = metrics.get(key) or []
        scale = _scale(metrics)
        thresholds = metrics.get("iou_thresholds") or IOU_THRESHOLDS
        for iou, value in zip(thresholds, values, strict=False):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            records.append(
                {
                    "run_id": rid,
                    "label": labels.get(rid, spec["model"]["box_loss"]["name"]),
                    "dataset": spec["data"]["name"],
                    "detector": spec["model"]["detector"],
                    "seed": spec["seed"],
                    "iou": round(float(iou), 2),
                    "value": scale * float(value),
                }
            )
    return pd.DataFrame.from_records(
        records, columns=["run_id", "label", "dataset", "detector", "seed", "iou", "value"]
    )


_ITERATION_KEYS = ("iteration", "iter", "step")


def training_frame(plan: Mapping[str, Any], runs_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Long frame (run_id, label, dataset, detector, iteration, loss, value) from every
    run's ``train_log.jsonl``: one line per logged iteration, keys containing "loss"."""
    labels = _labels(plan)
    records = []
    for rid, spec in plan["runs"].items():
        path = Path(runs_dir) / rid / "train_log.jsonl"
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(entry, dict):
                continue
            it = next((entry[k] for k in _ITERATION_KEYS if k in entry), None)
            if it is None:
                continue
            for key, value in entry.items():
                if "loss" in key and isinstance(value, int | float) and math.isfinite(value):
                    records.append(
                        {
                            "run_id": rid,
                            "label": labels.get(rid, rid),
                            "dataset": spec["data"]["name"],
                            "detector": spec["model"]["detector"],
                            "iteration": float(it),
                            "loss": key,
                            "value": float(value),
                        }
                    )
    return pd.DataFrame.from_records(
        records,
        columns=["run_id", "label", "dataset", "detector", "iteration", "loss", "value"],
    )


# --------------------------------------------------------------------------- figures
def _by_iou(frame: pd.DataFrame, ylabel: str, title: str, seeds: int) -> Any:
    import seaborn as sns

    if frame.empty:
        return _placeholder(f"{title}: no metrics.json yet")
    grid = sns.relplot(
        data=frame,
        x="iou",
        y="value",
        hue="label",
        style="label",
        markers=True,
        dashes=False,
        kind="line",
        col="dataset",
        row="detector",
        errorbar="sd" if seeds > 1 else None,
        height=3.2,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    grid.set_axis_labels("IoU threshold", ylabel)
    grid.set_titles("{row_name} | {col_name}")
    grid.figure.suptitle(title, y=1.02)
    return grid.figure


def difference_figure(
    plan: Mapping[str, Any], table: Mapping[str, Any], comparisons: pd.DataFrame | None
) -> Any:
    """Each row's difference to the table's baseline (AP, AP75, AP90; percent points) as a
    point with its interval as error bar, one panel per detector | dataset; a filled
    marker where the interval excludes 0 (resolved), a hollow one where it does not; the
    paper's difference (row - baseline in the paper's table) as a cross beside it."""
    import matplotlib.pyplot as plt

    from eiou.statistics import DIFFERENCE_METRICS

    if comparisons is None or comparisons.empty:
        return _placeholder(f"{table['title']}: no comparisons yet (eiou compare)")
    chosen = [m for m in DIFFERENCE_METRICS if m in table["metrics"]] or list(DIFFERENCE_METRICS)
    frame = comparisons[
        (comparisons["table"] == table["name"])
        & comparisons["metric"].isin(chosen)
        & (comparisons["variant"] != table["baseline"])
    ].copy()
    frame = frame[frame["diff"].notna()]
    if frame.empty:
        return _placeholder(f"{table['title']}: no differences to the baseline yet")
    paper = {i + 1: row.get("paper") or {} for i, row in enumerate(table["rows"])}
    frame["setting"] = frame["detector"] + " | " + frame["dataset"]
    settings = list(dict.fromkeys(frame["setting"]))
    rows_per_panel = max(frame.groupby("setting")["row"].nunique())
    fig, axes = plt.subplots(
        1,
        len(settings),
        figsize=(5.0 * len(settings), 1.6 + 0.3 * rows_per_panel * len(chosen)),
        squeeze=False,
        layout="constrained",
    )
    colours = dict(zip(chosen, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    spread = 0.25 if len(chosen) > 1 else 0.0
    offsets = dict(zip(chosen, np.linspace(-spread, spread, len(chosen)), strict=True))
    for ax, setting in zip(axes[0], settings, strict=True):
        part = frame[frame["setting"] == setting]
        order = list(dict.fromkeys(part["row"]))
        labels = {r: f"{r}. {part.loc[part['row'] == r, 'label'].iloc[0]}" for r in order}
        for m in chosen:
            for position, r in enumerate(order):
                line = part[(part["row"] == r) & (part["metric"] == m)]
                if line.empty:
                    continue
                c = line.iloc[0]
                y = position + offsets[m]
                filled = c["resolved"] is not pd.NA and int(c["resolved"]) != 0
                ax.errorbar(
                    c["diff"], y,
                    xerr=[[c["diff"] - c["low"]], [c["high"] - c["diff"]]],
                    fmt="o", color=colours[m], mfc=colours[m] if filled else "white",
                    capsize=3, label=m if position == 0 else None,
                )  # fmt: skip
                base = (
                    table["rows"][int(c["baseline_row"]) - 1] if pd.notna(c["baseline_row"]) else {}
                )
                ref = paper.get(int(r), {}).get(m)
                ref_base = (base.get("paper") or {}).get(m) if base else None
                if ref is not None and ref_base is not None:
                    ax.plot(ref - ref_base, y, "x", color=colours[m], markersize=7)
        ax.axvline(0.0, color="0.3", linewidth=0.8)
        ax.set_yticks(range(len(order)), [labels[r] for r in order])
        ax.set_ylim(len(order) - 0.5, -0.5)  # first row on top
        ax.set_xlabel(f"difference to {table['baseline']} (percent points)")
        ax.set_title(setting)
    first = frame.iloc[0]
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(chosen), frameon=False)
    suffix = "" if plan.get("paper_setting") else " — NOT the paper's setting"
    fig.suptitle(
        f"{table['title']}{suffix}\n{first['confidence']:.0%} intervals, "
        f"{int(first['replicates'])} bootstrap replicates over test images and seeds; "
        "filled: excludes 0; x: the paper"
    )
    return fig


def training_figure(frame: pd.DataFrame) -> Any:
    """Training losses against iteration; one panel per loss term and dataset/detector."""
    import seaborn as sns

    if frame.empty:
        return _placeholder("Training curves: no train_log.jsonl yet")
    frame = frame.copy()
    frame["setting"] = frame["dataset"] + " | " + frame["detector"]
    order = frame.groupby("loss")["value"].size().sort_values(ascending=False).index[:4]
    frame = frame[frame["loss"].isin(order)]
    grid = sns.relplot(
        data=frame,
        x="iteration",
        y="value",
        hue="label",
        kind="line",
        col="loss",
        row="setting",
        col_order=list(order),
        errorbar="sd",
        height=2.8,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    grid.set_titles("{row_name} | {col_name}")
    grid.set_axis_labels("iteration", "loss")
    return grid.figure


def make_experiment_figures(
    plan: Mapping[str, Any],
    runs_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    comparisons: str | os.PathLike[str] | pd.DataFrame | None = None,
) -> list[Path]:
    """Write every file of :func:`expected_figures`; ``comparisons`` (``eiou compare``'s
    CSV or its frame) feeds the difference figures (placeholders without it)."""
    from eiou.statistics import read_comparisons

    stems = experiment_figure_stems(plan)
    seeds = max((t["seeds"] for t in plan["tables"]), default=1)
    written: list[Path] = []
    with style():
        if "fig7_recall_vs_iou" in stems:
            frame = recall_frame(plan, runs_dir, "recall_per_iou")
            fig = _by_iou(
                frame, "average recall (%)", "Recall against IoU threshold (Fig. 7)", seeds
            )
            written += save(fig, out_dir, "fig7_recall_vs_iou")
            frame = recall_frame(plan, runs_dir, "ap_per_iou")
            fig = _by_iou(frame, "AP (%)", "AP at each IoU threshold", seeds)
            written += save(fig, out_dir, "ap_by_iou")
        if comparisons is not None and not isinstance(comparisons, pd.DataFrame):
            comparisons = read_comparisons(comparisons)
        for table in plan["tables"]:
            if difference_stem(table) in stems:
                fig = difference_figure(plan, table, comparisons)
                written += save(fig, out_dir, difference_stem(table))
        if "training_curves" in stems:
            written += save(
                training_figure(training_frame(plan, runs_dir)), out_dir, "training_curves"
            )
    return written


# --------------------------------------------------------------------------- toy figures
def _toy_figure(name: str, frame: pd.DataFrame) -> Any:
    """A toy CSV as a figure: a heat map for a surface (two grid coordinates and a value),
    otherwise lines of every numeric column against the first, one hue per category."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if frame.empty:
        return _placeholder(f"{name}: empty table")
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in frame.columns if c not in numeric]
    if "surface" in name and len(numeric) >= 3:
        x, y, value = numeric[:3]
        panels = frame[categorical[0]].unique().tolist() if categorical else [None]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
        for ax, panel in zip(axes[0], panels, strict=True):
            part = frame if panel is None else frame[frame[categorical[0]] == panel]
            grid = part.pivot_table(index=y, columns=x, values=value)
            sns.heatmap(
                grid,
                ax=ax,
                cmap="viridis",
                cbar_kws={"label": value},
                xticklabels=False,
                yticklabels=False,
            )
            ax.invert_yaxis()
            ax.set_title(str(panel) if panel is not None else name)
        fig.suptitle(f"Toy: {name}")
        return fig
    if len(numeric) < 2:
        return _placeholder(f"{name}: nothing numeric to plot")
    x = next((c for c in numeric if c.lower() in (*_ITERATION_KEYS, "x", "lr", "t")), numeric[0])
    long = frame.melt(
        id_vars=[x, *categorical],
        value_vars=[c for c in numeric if c != x],
        var_name="quantity",
        value_name="value",
    )
    hue = categorical[0] if categorical else None
    grid = sns.relplot(
        data=long,
        x=x,
        y="value",
        hue=hue,
        col="quantity",
        col_wrap=min(3, long["quantity"].nunique()),
        kind="line",
        errorbar=None,
        height=3.0,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    if x.lower() == "lr":
        grid.set(xscale="log")
    grid.figure.suptitle(f"Toy: {name}", y=1.02)
    return grid.figure


def _toy_fig3(frame: pd.DataFrame) -> Any:
    import seaborn as sns

    long = frame.melt(id_vars=["case"], value_vars=["iou", "giou", "eiou"], var_name="metric")
    grid = sns.catplot(
        data=long, x="case", y="value", hue="metric", kind="bar", height=3.2, aspect=1.6
    )
    grid.set_axis_labels("box pair", "value")
    grid.figure.suptitle("Fig. 3: IoU, GIoU and EIoU for the same box pairs", y=1.03)
    return grid.figure


def _toy_fig4_surface(frame: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    values = [c for c in ("neg_eiou", "smooth_eiou") if c in frame.columns]
    fig, axes = plt.subplots(
        1, len(values), figsize=(4.8 * len(values), 3.8), squeeze=False, layout="constrained"
    )
    for ax, value in zip(axes[0], values, strict=True):
        grid = frame.pivot_table(index="y", columns="x", values=value)
        contour = ax.contourf(grid.columns, grid.index, grid.to_numpy(), levels=20, cmap="viridis")
        fig.colorbar(contour, ax=ax)
        ax.set_title({"neg_eiou": "-EIoU (no CT)", "smooth_eiou": "Smooth-EIoU (CT)"}[value])
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.suptitle("Fig. 4: loss surfaces without and with convexification")
    return fig


def _toy_descent(frame: pd.DataFrame, title: str, hue: str, style_col: str | None) -> Any:
    import seaborn as sns

    # eiou.toy's distance is already relative: max |p - t| over the target's width
    y = "distance / target size"
    frame = frame.rename(columns={"distance": y})
    long = frame.melt(
        id_vars=["iteration", hue] + ([style_col] if style_col else []),
        value_vars=[y, "eiou"],
        var_name="quantity",
    )
    grid = sns.relplot(
        data=long,
        x="iteration",
        y="value",
        hue=hue,
        style=style_col,
        col="quantity",
        kind="line",
        height=3.0,
        aspect=1.3,
        facet_kws={"sharey": False},
    )
    grid.set_titles("{col_name}")
    grid.figure.suptitle(title, y=1.03)
    return grid.figure


def _toy_lr_sweep(frame: pd.DataFrame) -> Any:
    import seaborn as sns

    frame = frame.copy()
    frame["claim holds"] = (
        frame["holds"].astype(str).str.lower().map({"true": "yes", "false": "no"})
    )
    grid = sns.relplot(
        data=frame,
        x="lr",
        y="claim",
        hue="claim holds",
        style="claim holds",
        hue_order=["yes", "no"],
        style_order=["yes", "no"],
        s=70,
        height=3.0,
        aspect=2.0,
    )
    grid.set(xscale="log")
    grid.set_axis_labels("learning rate", "")
    grid.figure.suptitle("Do the toy claims hold across learning rates?", y=1.03)
    return grid.figure


_TOY_PLOTTERS: dict[str, tuple[set[str], Any]] = {
    "fig3": ({"case", "iou", "giou", "eiou"}, _toy_fig3),
    "fig4_surface": ({"x", "y", "neg_eiou"}, _toy_fig4_surface),
    "fig4c_descent": (
        {"iteration", "distance", "eiou", "loss_name"},
        lambda f: _toy_descent(
            f, "Fig. 4c: gradient descent, -EIoU vs Smooth-EIoU", "loss_name", None
        ),
    ),
    "fig5a": (
        {"iteration", "distance", "eiou", "size", "sot", "target_size"},
        lambda f: _toy_descent(f, "Fig. 5a: SOT makes descent scale-invariant", "size", "sot"),
    ),
    "fig5b": (
        {"iteration", "distance", "eiou", "size", "sot", "target_size"},
        lambda f: _toy_descent(f, "Fig. 5b: descent with and without SOT", "size", "sot"),
    ),
    "lr_sweep": ({"lr", "claim", "holds"}, _toy_lr_sweep),
}


def make_toy_figures(
    toy_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Write every file of :func:`expected_toy_figures` from the toy CSV files."""
    written: list[Path] = []
    with style():
        for name in TOY_TABLES:
            path = Path(toy_dir) / name
            stem = Path(name).stem
            if path.exists():
                frame = pd.read_csv(path)
                needed, plotter = _TOY_PLOTTERS.get(stem, (None, None))
                if plotter is not None and needed <= set(frame.columns) and not frame.empty:
                    fig = plotter(frame)
                else:
                    fig = _toy_figure(stem, frame)
            else:
                fig = _placeholder(f"{name} not found in {toy_dir}")
            written += save(fig, out_dir, f"toy_{stem}")
    return written
