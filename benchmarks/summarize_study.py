"""What a finished study resolves: every row's difference to its baseline, with intervals.

Usage (after ``snakemake --cores 2 --configfile config/study.yaml``)::

    python benchmarks/summarize_study.py --results-dir results --wall-minutes 63.5 \
        --output benchmarks/results/study_cpu.md

Reads ``results/plan_selected.json`` (the candidates each tuned row chose on its validation
split) and ``results/tables/comparisons.csv`` (the paired bootstrap over seeds and test
images, ``eiou compare``) and writes a Markdown report: per table and row, the chosen
candidate, the row's AP, and the differences in AP, AP75 and AP90 to the baseline with
their 95 % intervals, then which differences are resolved (interval excludes 0) and which
are not. Numbers are as measured; nothing is filtered.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

import pandas as pd
import torch

from eiou import io

METRICS = ("AP", "AP75", "AP90")


def _cell(row: pd.Series) -> str:
    if math.isnan(row["diff"]):
        return ""
    mark = " *" if row["resolved"] else ""
    return f"{row['diff']:+.1f} [{row['low']:+.1f}, {row['high']:+.1f}]{mark}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--wall-minutes", type=float, required=True, help="measured wall time")
    parser.add_argument("--note", default="", help="what else ran on the machine, etc.")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/study_cpu.md"))
    args = parser.parse_args(argv)
    plan = json.loads((args.results_dir / "plan_selected.json").read_text(encoding="utf-8"))
    comparisons = pd.read_csv(args.results_dir / "tables" / "comparisons.csv")
    lines = [
        "# The study preset: what the suite resolves at CPU scale",
        "",
        "Command: `snakemake --cores 2 --configfile config/study.yaml` then "
        f"`python benchmarks/summarize_study.py --wall-minutes {args.wall_minutes:g}`",
        "",
        f"Preset: {plan['description']}",
        "",
        f"Measured: {args.wall_minutes:.1f} minutes wall for the whole workflow "
        f"({len(plan['runs'])} trainings); {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads visible, torch {torch.__version__}, "
        f"Python {platform.python_version()}. {args.note}".rstrip(),
        "",
        "Cells: the row minus the table's baseline (same detector), percent points, with the "
        "95 % percentile interval of a paired bootstrap that resamples the seeds "
        f"({', '.join(str(t['seeds']) for t in plan['tables'])} per table) and the test images "
        "(the same images for both models); `*`: the interval excludes 0. "
        "The row's candidate was chosen by its mean validation AP over seeds, on images held "
        "out of its training data, never on the test split.",
        "",
    ]
    resolved, unresolved = [], []
    for table in plan["tables"]:
        lines += [f"## {table['title']}", ""]
        lines += ["| row | detector | chosen | AP | " + " | ".join(f"Δ{m}" for m in METRICS) + " |"]
        lines += ["|---|---|---|---:|" + "---|" * len(METRICS)]
        frame = comparisons[comparisons["table"] == table["name"]]
        for position, row in enumerate(table["rows"], start=1):
            mine = frame[frame["row"] == position].set_index("metric")
            if mine.empty:
                continue
            ap = mine.loc["AP", "value"] if "AP" in mine.index else math.nan
            chosen = (row.get("chosen") or {}).get("label", "")
            cells = [_cell(mine.loc[m]) if m in mine.index else "" for m in METRICS]
            if row["variant"] == table["baseline"]:
                cells = ["baseline"] * len(METRICS)
            lines.append(
                f"| {row['label']} | {row['detector']} | {chosen} | {ap:.1f} | "
                + " | ".join(cells)
                + " |"
            )
            if row["variant"] == table["baseline"]:
                continue
            for m in METRICS:
                if m not in mine.index or math.isnan(mine.loc[m, "diff"]):
                    continue
                what = (
                    f"{table['name']} {row['label']} ({row['detector']}) {m}: {_cell(mine.loc[m])}"
                )
                (resolved if mine.loc[m, "resolved"] else unresolved).append(what)
        lines.append("")
    lines += [
        f"## Resolved: {len(resolved)} of {len(resolved) + len(unresolved)} differences",
        "",
        *(f"- {r}" for r in resolved),
        "",
        f"## Not resolved: {len(unresolved)} (the interval contains 0)",
        "",
        *(f"- {u}" for u in unresolved),
        "",
    ]
    text = "\n".join(lines)
    io.write_text(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
