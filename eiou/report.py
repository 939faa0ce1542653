"""The Markdown summary under ``reports/``: the preset, its notice, every table and figure.

The HTML report is Snakemake's (``--report``); this file is the plain-text companion that
reads well on a code-hosting site and in a terminal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eiou.experiments import PAPER_TABLE_CAPTIONS
from eiou.io import write_text
from eiou.tables import notice

__all__ = ["summary_markdown", "write_summary"]


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def summary_markdown(
    plan: Mapping[str, Any],
    tables_dir: str | os.PathLike[str],
    figures_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
) -> str:
    """The summary's text; links are relative to ``output``'s folder."""
    here = Path(output).parent
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    runs = plan["runs"]
    scored = [rid for rid, spec in runs.items() if spec["data"]["has_ground_truth"]]
    server = [rid for rid in runs if rid not in scored]
    lines = [
        f"# EIoU reproduction: preset `{plan['preset']}`",
        "",
        f"> {notice(plan)}",
        "",
        plan.get("description") or "",
        "",
        f"- unique runs: {len(runs)} ({len(scored)} scored locally with the COCO protocol, "
        f"{len(server)} for the COCO evaluation server)",
        f"- tables: {', '.join(t['name'] for t in plan['tables'])}",
        "- datasets: " + ", ".join(f"{n} ({d['kind']})" for n, d in plan["datasets"].items()),
        "",
        "Numbers are percent. AP is averaged over IoU 0.50:0.05:0.95 (COCO protocol, also on "
        "VOC, as in the paper); AP90 is the AP at IoU 0.90 alone. Each difference to a "
        "table's baseline carries a 95% interval from a paired bootstrap over the test images "
        "and the seeds, and is marked `*` only where the interval excludes 0 (all rows and "
        f"metrics: [comparisons.csv]({_relative(tables_dir / 'comparisons.csv', here)})).",
        "",
        "## Tables",
        "",
    ]
    for table in plan["tables"]:
        md = tables_dir / f"{table['name']}.md"
        if md.exists():
            lines += [md.read_text(encoding="utf-8").rstrip(), ""]
        else:
            lines += [f"### {table['title']}", "", "(not written yet)", ""]
        name = table["name"]
        files = ", ".join(
            f"[{ext}]({_relative(tables_dir / f'{name}.{ext}', here)})"
            for ext in ("csv", "md", "tex")
        )
        lines += [f"Files: {files}", ""]
        if table.get("paper_table") == "IV" or any(
            not r["has_ground_truth"] for r in table["rows"]
        ):
            lines += [
                "Rows without ground truth are scored by the COCO evaluation server: upload "
                "the run's `predictions.json` (results format).",
                "",
            ]
    scoring = tables_dir / "scoring.md"
    if scoring.exists():  # IoU-head runs under every scoring method (eiou.rescoring)
        files = ", ".join(
            f"[{ext}]({_relative(scoring.with_suffix(f'.{ext}'), here)})" for ext in ("csv", "md")
        )
        lines += [scoring.read_text(encoding="utf-8").rstrip(), "", f"Files: {files}", ""]
    figures = sorted(figures_dir.glob("*.png")) if figures_dir.exists() else []
    if figures:
        lines += ["## Figures", ""]
        for png in figures:
            pdf = png.with_suffix(".pdf")
            link = f" ([pdf]({_relative(pdf, here)}))" if pdf.exists() else ""
            lines += [f"### {png.stem}", "", f"![{png.stem}]({_relative(png, here)}){link}", ""]
    lines += [
        "## Runs",
        "",
        "| run id | dataset | detector | backbone | loss | seed |",
        "|---|---|---|---|---|---|",
    ]
    for rid, spec in runs.items():
        loss = spec["model"]["box_loss"]
        name = loss["name"] + (f" p={loss['power']}" if loss.get("power") not in (None, 1) else "")
        name += " +SOT" if loss.get("sot") else ""
        head = spec["model"]["iou_head"]
        name += " +IoU head" if head.get("enabled") else ""
        name += (
            " (trained on negatives too)" if head.get("enabled") and head.get("negatives") else ""
        )
        lines.append(
            f"| `{rid}` | {spec['data']['name']} | {spec['model']['detector']} | "
            f"{spec['model']['backbone']} | {name} | {spec['seed']} |"
        )
    lines += ["", "## Paper tables referred to", ""]
    used = sorted({t["paper_table"] for t in plan["tables"] if t.get("paper_table")})
    lines += [f"- {PAPER_TABLE_CAPTIONS[key]}" for key in used] or ["- none"]
    lines.append("")
    return "\n".join(lines)


def write_summary(
    plan: Mapping[str, Any],
    tables_dir: str | os.PathLike[str],
    figures_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
) -> Path:
    """Write :func:`summary_markdown` to ``output`` atomically."""
    write_text(output, summary_markdown(plan, tables_dir, figures_dir, output))
    return Path(output)
