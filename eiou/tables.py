"""Per-table aggregation with pandas: measured numbers beside the paper's, and each row's
difference to its baseline with a confidence interval.

:func:`gather_runs` reads every run's ``metrics.json`` into one frame (one row per run);
:func:`build_table` turns one planned table into a frame with, per metric, the mean over
seeds, the sample standard deviation, the paper's number and the delta to it, and, from the
comparisons ``eiou compare`` computed (:mod:`eiou.statistics`), the difference to the
table's baseline variant with its interval and whether the interval excludes 0.
:func:`write_table` writes CSV (full precision), Markdown and LaTeX.
The scoring table (:func:`scoring_table`) puts each IoU-head run's AP, AP50, AP75 and AP90
under every scoring method side by side (``scoring.csv`` / ``scoring.md``; the rescored
metrics of :mod:`eiou.rescoring`).

Conventions:

- ``metrics.json`` holds fractions in ``[0, 1]`` (pycocotools' convention) unless it says
  ``"units": "percent"``; tables are in percent, like the paper.
- A difference is marked (``*``) only when its interval excludes 0; the legend says what the
  interval is (seeds x test images, the confidence, the number of bootstrap replicates).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from eiou.experiments import PAPER_TABLE_CAPTIONS
from eiou.io import write_text
from eiou.outputs import SCORING_TABLE, TABLE_FORMATS, expected_table_files
from eiou.rescoring import RESCORED_DIR, rescored_runs, scoring_methods
from eiou.statistics import DIFFERENCE_METRICS, read_comparisons

__all__ = [
    "SCALAR_METRICS",
    "build_table",
    "expected_files",
    "gather_runs",
    "notice",
    "scoring_table",
    "to_latex",
    "to_markdown",
    "write_scoring_table",
    "write_table",
    "write_tables",
]

SCALAR_METRICS: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "AP90",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
)
FORMATS = TABLE_FORMATS
expected_files = expected_table_files
#: The metrics of the scoring table (its file name: :data:`eiou.outputs.SCORING_TABLE`).
SCORING_METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "AP90")


def _percent(metrics: Mapping[str, Any], value: Any) -> float:
    if value is None:
        return math.nan
    value = float(value)
    return value if metrics.get("units") == "percent" else 100.0 * value


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """One ``metrics.json``."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def gather_runs(plan: Mapping[str, Any], runs_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per planned run: its axes and its scalar metrics in percent (NaN if absent)."""
    records = []
    for rid, spec in plan["runs"].items():
        record: dict[str, Any] = {
            "run_id": rid,
            "dataset": spec["data"]["name"],
            "detector": spec["model"]["detector"],
            "backbone": spec["model"]["backbone"],
            "box_loss": spec["model"]["box_loss"]["name"],
            "power": spec["model"]["box_loss"].get("power"),
            "sot": spec["model"]["box_loss"].get("sot"),
            "iou_head": spec["model"]["iou_head"].get("enabled"),
            "scoring": spec["model"]["scoring"]["method"],
            "seed": spec["seed"],
            "max_iter": spec["train"]["max_iter"],
            "has_metrics": False,
        }
        path = Path(runs_dir) / rid / "metrics.json"
        metrics = read_metrics(path) if path.exists() else {}
        record["has_metrics"] = bool(metrics)
        for name in SCALAR_METRICS:
            record[name] = _percent(metrics, metrics.get(name))
        records.append(record)
    return pd.DataFrame.from_records(records)


def _mean_std(values: pd.Series) -> tuple[float, float, int]:
    values = values.dropna()
    n = int(values.size)
    if n == 0:
        return math.nan, math.nan, 0
    std = float(values.std(ddof=1)) if n >= 2 else math.nan
    return float(values.mean()), std, n


def build_table(
    table: Mapping[str, Any], runs: pd.DataFrame, comparisons: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One planned table as a frame: a row per table row, per metric ``m`` the columns
    ``m`` (mean over seeds), ``m_std``, ``m_paper``, ``m_delta`` (measured - paper); plus
    ``n_seeds``, ``n_measured`` and ``is_baseline``.

    With ``comparisons`` (:func:`eiou.statistics.compare_plan`'s frame), per metric it
    holds: ``m_diff`` (row - baseline, percent points), ``m_low`` / ``m_high`` (its
    interval), ``m_resolved`` (+1 / -1 where the interval excludes 0, else 0) and
    ``m_half_width`` (half the length of the row's own interval); NaN / NA elsewhere. The
    baseline of a row is the row of the table's baseline variant with the same detector,
    backbone, dataset and schedule (:func:`eiou.statistics.baseline_rows`).
    """
    by_id = runs.set_index("run_id") if len(runs) else runs
    metrics = list(table["metrics"])
    rows = []
    for position, row in enumerate(table["rows"], start=1):
        record: dict[str, Any] = {
            "row": position,
            "variant": row["variant"],
            "label": row["label"],
            "detector": row["detector"],
            "backbone": row["backbone"],
            "dataset": row["dataset"],
            "schedule": row["schedule"],
            "n_seeds": len(row["run_ids"]),
            "run_ids": " ".join(row["run_ids"]),
            "chosen": (row.get("chosen") or {}).get("label", ""),
            "n_candidates": len(row.get("candidates") or [None]),
            "has_ground_truth": bool(row.get("has_ground_truth", True)),
            "is_baseline": row["variant"] == table["baseline"],
        }
        present = [rid for rid in row["run_ids"] if rid in by_id.index]
        measured = by_id.loc[present] if present else None
        n_measured = 0
        for m in metrics:
            if measured is not None and m in measured.columns:
                mean, std, n = _mean_std(measured[m])
            else:
                mean, std, n = math.nan, math.nan, 0
            n_measured = max(n_measured, n)
            paper = (row.get("paper") or {}).get(m, math.nan)
            record[m] = mean
            record[f"{m}_std"] = std
            record[f"{m}_paper"] = float(paper)
            record[f"{m}_delta"] = mean - float(paper)
        record["n_measured"] = n_measured
        rows.append(record)
    frame = pd.DataFrame.from_records(rows)
    mine = (
        comparisons[comparisons["table"] == table["name"]]
        if comparisons is not None
        else pd.DataFrame(columns=["row", "metric"])
    )
    compared = [m for m in metrics if m in set(mine["metric"])]
    for m in compared:
        part = mine[mine["metric"] == m].set_index("row")
        for column, source in (("diff", "diff"), ("low", "low"), ("high", "high"),
                               ("half_width", "half_width")):  # fmt: skip
            frame[f"{m}_{column}"] = frame["row"].map(part[source]).astype(float)
        frame[f"{m}_resolved"] = frame["row"].map(part["resolved"]).astype("Int64")
    frame.attrs["interval"] = _interval_facts(mine)
    return frame


def _interval_facts(comparisons: pd.DataFrame) -> dict[str, Any]:
    """What the legend says about the intervals: confidence, replicates, test images."""
    if comparisons.empty or "replicates" not in comparisons or comparisons["diff"].isna().all():
        return {}
    known = comparisons[comparisons["diff"].notna()]
    images = sorted({int(n) for n in known["n_images"].dropna()})
    return {
        "confidence": float(known["confidence"].iloc[0]),
        "replicates": int(known["replicates"].iloc[0]),
        "images": images,
        "seeds": sorted({int(n) for n in known["n_seeds"]}),
    }


# --------------------------------------------------------------------------- rendering
def notice(plan: Mapping[str, Any]) -> str:
    """The sentence every table of a reduced preset carries."""
    if plan.get("paper_setting"):
        return (
            f"Preset `{plan['preset']}`: the paper's setting (Section V-A). "
            "Deltas compare with the paper's numbers."
        )
    return (
        f"NOT the paper's setting: preset `{plan['preset']}` "
        f"({plan.get('description') or 'reduced data, model and schedule'}). "
        "Paper numbers are printed for reference only; the deltas are not a reproduction check."
    )


def _fmt(value: Any, digits: int = 1, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = round(float(value), digits) or 0.0  # no "-0.0"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _difference_metrics(frame: pd.DataFrame, table: Mapping[str, Any]) -> list[str]:
    """The metrics whose difference to the baseline a table prints."""
    return [m for m in DIFFERENCE_METRICS if m in table["metrics"] and f"{m}_diff" in frame]


def _difference_cell(r: pd.Series, m: str) -> str:
    """``+1.2 [-0.3, +2.6]``, with `` *`` where the interval excludes 0."""
    if r["is_baseline"]:
        return "baseline"
    diff = _fmt(r[f"{m}_diff"], signed=True)
    if not diff:
        return ""
    low, high = _fmt(r[f"{m}_low"], signed=True), _fmt(r[f"{m}_high"], signed=True)
    flag = r[f"{m}_resolved"]
    mark = " *" if flag is not pd.NA and int(flag) != 0 else ""
    return f"{diff} [{low}, {high}]{mark}"


def _cells(
    frame: pd.DataFrame, table: Mapping[str, Any], pm: str
) -> tuple[list[str], list[list[str]]]:
    metrics = list(table["metrics"])
    compared = _difference_metrics(frame, table)
    header = ["#", "Variant", "Detector", "Backbone", "Dataset"]
    header += [f"{m} (paper, delta)" for m in metrics]
    header += [f"Δ{m} vs {table['baseline']}" for m in compared]
    body = []
    for _, r in frame.iterrows():
        label = str(r["label"]) + (f" [{r['chosen']}]" if r.get("chosen") else "")
        cells = [str(r["row"]), label, r["detector"], r["backbone"], r["dataset"]]
        for m in metrics:
            mean = _fmt(r[m])
            if not mean:
                mean = "pending" if r.get("has_ground_truth", True) else "server"
            elif not math.isnan(r[f"{m}_std"]):
                mean = f"{mean} {pm} {_fmt(r[f'{m}_std'])}"
            paper = _fmt(r[f"{m}_paper"])
            if paper:
                delta = _fmt(r[f"{m}_delta"], signed=True)
                mean += f" ({paper}, {delta})" if delta else f" ({paper})"
            cells.append(mean)
        cells += [_difference_cell(r, m) for m in compared]
        body.append(cells)
    return header, body


def _legend(frame: pd.DataFrame, table: Mapping[str, Any]) -> str:
    seeds = table["seeds"]
    text = (
        f"Cells: measured mean{' ± sample std' if seeds >= 2 else ''} over {seeds} seed(s), "
        "then (paper, measured - paper)."
    )
    tuning = table.get("tuning")
    if tuning:
        budget = max(len(r.get("candidates") or [None]) for r in table["rows"])
        text += (
            f" Tuned on equal terms: each variant chose [in brackets] among {budget} "
            f"candidates by its mean {tuning['metric']} over seeds on a validation split "
            f"holding {tuning['holdout_fraction']:g} of the training images (seed "
            f"{tuning['holdout_seed']}), never the test split; every run of this table "
            "trained on the rest, and the cells are the chosen candidate's test numbers."
        )
    facts = frame.attrs.get("interval") or {}
    if not facts:
        return text + " No differences to the baseline with intervals yet (`eiou compare`)."
    if not _difference_metrics(frame, table):
        return text
    images = "/".join(str(n) for n in facts["images"])
    text += (
        f" Δ: the row minus the baseline `{table['baseline']}` (same detector, backbone, "
        f"dataset and schedule), percent points, with its {facts['confidence']:.0%} interval "
        f"[low, high]: percentile interval of {facts['replicates']} bootstrap replicates that "
        f"resample the {images} test images (the same images for both models) and the seeds "
        "(seeds x images). `*`: the interval excludes 0, so the sign is resolved; without `*` "
        "the data do not tell whether the row is better or worse."
    )
    if min(facts["seeds"], default=seeds) < 2:
        text += (
            " One seed per row: the interval covers test-image sampling only, not training "
            "noise (another seed of the same row may land outside it)."
        )
    elif min(facts["seeds"], default=seeds) < 3:
        text += " Two seeds per row: the seed part of the interval rests on two values."
    return text


def to_markdown(frame: pd.DataFrame, table: Mapping[str, Any], plan: Mapping[str, Any]) -> str:
    """A Markdown table with title, the preset notice and a legend."""
    header, body = _cells(frame, table, "±")
    lines = [f"### {table['title']}", ""]
    if table.get("paper_table"):
        lines += [f"Compared with {PAPER_TABLE_CAPTIONS[table['paper_table']]} (Peng & Yu).", ""]
    lines += [f"> {notice(plan)}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    lines += ["", _legend(frame, table), ""]
    return "\n".join(lines)


_LATEX_ESCAPES = {
    ">": "$>$",
    "<": "$<$",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
}


def _tex(text: str) -> str:
    escaped = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text).replace("±", r"$\pm$")
    escaped = escaped.replace("Δ", r"$\Delta$")
    return re.sub(r"`([^`]*)`", r"\\texttt{\1}", escaped).replace("|", r"$|$")


def to_latex(frame: pd.DataFrame, table: Mapping[str, Any], plan: Mapping[str, Any]) -> str:
    """A booktabs ``table`` environment; the caption carries the preset notice."""
    header, body = _cells(frame, table, "±")
    caption = f"{table['title']}. {notice(plan)} {_legend(frame, table)}"
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{_tex(caption)}}}",
        rf"\label{{tab:{table['name']}}}",
        r"\begin{tabular}{" + "l" * 5 + "r" * (len(header) - 5) + "}",
        r"\toprule",
        " & ".join(_tex(h) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_tex(c) for c in cells) + r" \\" for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def write_table(
    frame: pd.DataFrame,
    table: Mapping[str, Any],
    plan: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
) -> list[Path]:
    """Write ``<name>.csv`` (with a ``notice`` column), ``.md`` and ``.tex``."""
    out = Path(out_dir)
    csv = frame.copy()
    csv.insert(0, "table", table["name"])
    csv.insert(1, "preset", plan["preset"])
    csv.insert(2, "paper_setting", bool(plan.get("paper_setting")))
    csv["notice"] = notice(plan)
    paths = [out / f"{table['name']}.{ext}" for ext in FORMATS]
    write_text(paths[0], csv.to_csv(index=False))
    write_text(paths[1], to_markdown(frame, table, plan))
    write_text(paths[2], to_latex(frame, table, plan))
    return paths


# --------------------------------------------------------------------------- scoring
def scoring_table(plan: Mapping[str, Any], runs_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per rescored run (an IoU head, local ground truth): its variant and axes,
    its own scoring method (``configured``) and, per metric ``m`` of
    :data:`SCORING_METRICS` and scoring method ``s``, the column ``"m s"``: ``m`` in
    percent of the run's predictions rescored with ``s``
    (``<run>/rescored/<s>/metrics.json``; NaN until it exists). Every column of a row comes
    from the same trained model and the same network outputs."""
    variants: dict[str, tuple[str, str]] = {}
    for table in plan["tables"]:
        for row in table["rows"]:
            for rid in row["run_ids"]:
                variants.setdefault(rid, (row["variant"], row["label"]))
            for candidate in row.get("candidates") or ():  # a tuned row's other candidates
                for rid in candidate["run_ids"]:
                    label = f"{row['label']} ({candidate['label']})"
                    variants.setdefault(rid, (row["variant"], label))
    records = []
    for rid in rescored_runs(plan):
        spec = plan["runs"][rid]
        variant, label = variants.get(rid, ("", ""))
        record: dict[str, Any] = {
            "run_id": rid,
            "variant": variant,
            "label": label,
            "dataset": spec["data"]["name"],
            "detector": spec["model"]["detector"],
            "backbone": spec["model"]["backbone"],
            "box_loss": spec["model"]["box_loss"]["name"],
            "iou_head_negatives": bool(spec["model"]["iou_head"].get("negatives", False)),
            "seed": spec["seed"],
            "configured": spec["model"]["scoring"]["method"],
        }
        metrics = {}
        for method in scoring_methods():
            path = Path(runs_dir) / rid / RESCORED_DIR / method / "metrics.json"
            metrics[method] = read_metrics(path) if path.exists() else {}
        for m in SCORING_METRICS:
            for method in scoring_methods():
                record[f"{m} {method}"] = _percent(metrics[method], metrics[method].get(m))
        records.append(record)
    return pd.DataFrame.from_records(records)


def scoring_markdown(frame: pd.DataFrame, plan: Mapping[str, Any]) -> str:
    """:func:`scoring_table` as Markdown; the run's own method is marked ``*``."""
    methods = scoring_methods()
    lines = [
        "### Scoring methods on the same trained models (IoU-head runs)",
        "",
        f"> {notice(plan)}",
        "",
    ]
    header = ["Variant", "Detector", "Dataset", "Seed"]
    header += [f"{m} {method}" for m in SCORING_METRICS for method in methods]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for _, r in frame.iterrows():
        cells = [str(r["label"] or r["run_id"]), r["detector"], r["dataset"], str(r["seed"])]
        for m in SCORING_METRICS:
            for method in methods:
                value = _fmt(r[f"{m} {method}"]) or "pending"
                cells.append(value + ("*" if method == r["configured"] else ""))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += [
        "",
        "Percent. Each row is one trained model; its columns evaluate the same candidates "
        "(one network pass, `eiou predict --candidates`) under each scoring method "
        "(`eiou rescore`), so they differ only by the scoring. `*`: the run's own method "
        "(its `metrics.json`). `cls`: the class score alone, i.e. what the model gives "
        "without using the IoU head at inference.",
        "",
    ]
    return "\n".join(lines)


def write_scoring_table(
    plan: Mapping[str, Any], runs_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Write ``scoring.csv`` (with a ``notice`` column) and ``scoring.md``."""
    frame = scoring_table(plan, runs_dir)
    out = Path(out_dir)
    csv = frame.copy()
    csv.insert(0, "preset", plan["preset"])
    csv.insert(1, "paper_setting", bool(plan.get("paper_setting")))
    csv["notice"] = notice(plan)
    paths = [out / f"{SCORING_TABLE}.csv", out / f"{SCORING_TABLE}.md"]
    write_text(paths[0], csv.to_csv(index=False))
    write_text(paths[1], scoring_markdown(frame, plan))
    return paths


def write_tables(
    plan: Mapping[str, Any],
    runs_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    tables: Sequence[str] | None = None,
    comparisons: str | os.PathLike[str] | pd.DataFrame | None = None,
) -> list[Path]:
    """Gather the runs (``runs.csv``) and write every table of ``plan``, and the scoring
    table where the plan has IoU-head runs (``tables``: only these names); ``comparisons``
    (``eiou compare``'s CSV or its frame) adds the differences to the baseline with their
    intervals."""
    if comparisons is not None and not isinstance(comparisons, pd.DataFrame):
        comparisons = read_comparisons(comparisons)
    runs = gather_runs(plan, runs_dir)
    written = [Path(out_dir) / "runs.csv"]
    write_text(written[0], runs.to_csv(index=False))
    for table in plan["tables"]:
        if tables and table["name"] not in tables:
            continue
        frame = build_table(table, runs, comparisons)
        written += write_table(frame, table, plan, out_dir)
    if rescored_runs(plan) and (not tables or SCORING_TABLE in tables):
        written += write_scoring_table(plan, runs_dir, out_dir)
    return written
