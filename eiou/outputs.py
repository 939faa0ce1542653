"""The files each stage writes, as lists: the workflow declares them, the stages write them.

This module imports nothing beyond the standard library, so that the Snakefile (parsed by
the driver and again by every job) lists every output without loading torch, pandas or
pycocotools. :mod:`eiou.toy`, :mod:`eiou.figures` and :mod:`eiou.tables` write exactly
these files and re-export the names below.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CANDIDATE_ENGINES",
    "FIGURE_FORMATS",
    "SCORING_TABLE",
    "TABLE_FORMATS",
    "TOY_OUTPUT_FILES",
    "TOY_TABLES",
    "difference_stem",
    "expected_figures",
    "expected_table_files",
    "expected_toy_figures",
    "experiment_figure_stems",
    "figure_kind",
    "rescored_runs",
]

#: What ``eiou toy --output DIR`` writes: one CSV per figure, the sweep, the settings used.
TOY_OUTPUT_FILES: tuple[str, ...] = (
    "fig3.csv",
    "fig4_surface.csv",
    "fig4c_descent.csv",
    "fig5a.csv",
    "fig5b.csv",
    "lr_sweep.csv",
    "settings.json",
)
#: CSV files written by ``eiou toy`` (paper Figs 3-5 and the learning-rate sweep).
TOY_TABLES: tuple[str, ...] = tuple(name for name in TOY_OUTPUT_FILES if name.endswith(".csv"))
#: Every figure is saved in each of these formats.
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")
#: Every table is written in each of these formats.
TABLE_FORMATS: tuple[str, ...] = ("csv", "md", "tex")
#: The table of the scoring methods side by side (``<name>.csv`` and ``.md``).
SCORING_TABLE = "scoring"
#: Engines whose predictions record candidates, so that their runs can be rescored.
CANDIDATE_ENGINES: tuple[str, ...] = ("torchvision",)


def rescored_runs(plan: Mapping[str, Any]) -> list[str]:
    """Ids of the plan's runs that are rescored (``eiou rescore``): an IoU head, local
    ground truth and an engine of :data:`CANDIDATE_ENGINES`."""
    return [
        rid
        for rid, spec in plan["runs"].items()
        if spec["model"]["iou_head"]["enabled"]
        and spec["data"]["has_ground_truth"]
        and spec["model"].get("engine", "torchvision") in CANDIDATE_ENGINES
    ]


def _both(stem: str, out_dir: str) -> list[str]:
    return [f"{out_dir}/{stem}.{ext}" for ext in FIGURE_FORMATS]


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
    """``ablation_<name>`` for a table of the paper's Table I, else ``differences_<name>``:
    the figure of each row's difference to the baseline with its interval."""
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


def expected_table_files(plan: Mapping[str, Any], out_dir: str = "results/tables") -> list[str]:
    """Every file ``eiou tables`` writes for ``plan``: ``runs.csv``, each table in each of
    :data:`TABLE_FORMATS`, and the scoring table where runs are rescored."""
    files = [f"{out_dir}/runs.csv"]
    for table in plan["tables"]:
        files += [f"{out_dir}/{table['name']}.{ext}" for ext in TABLE_FORMATS]
    if rescored_runs(plan):
        files += [f"{out_dir}/{SCORING_TABLE}.{ext}" for ext in ("csv", "md")]
    return files
