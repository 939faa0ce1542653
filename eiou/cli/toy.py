"""`eiou toy`: the paper's toy experiments (Figs. 3-5) and the learning-rate sweep, as CSVs."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from eiou import io, toy
from eiou.cli import UserError, add_output

HELP = "Run the paper's toy experiments (Figs. 3, 4, 5 and an lr sweep) and write CSVs."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output(parser, "folder for the CSVs and settings.json")
    parser.add_argument(
        "--lr",
        type=float,
        default=toy.DEFAULT_LR,
        help="learning rate of Figs. 4c and 5 (default %(default)s)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=toy.DEFAULT_ITERATIONS,
        help="gradient-descent iterations (default %(default)s)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=toy.DEFAULT_TOLERANCE,
        help="convergence tolerance relative to the target size (default %(default)s)",
    )
    parser.add_argument(
        "--sweep-lrs",
        type=float,
        nargs="+",
        default=list(toy.SWEEP_LRS),
        help="learning rates of the sweep (default: 13 from 1e-3 to 1)",
    )


def run(args: argparse.Namespace) -> int:
    if args.lr <= 0 or args.iterations < 1 or args.tolerance <= 0:
        raise UserError("--lr, --iterations and --tolerance must be positive")
    out: Path = args.output
    jobs = {
        "fig3.csv": toy.fig3_giou_counter_example,
        "fig4_surface.csv": toy.fig4_surfaces,
        "fig4c_descent.csv": lambda: toy.fig4c_descent(args.lr, args.iterations),
        "fig5a.csv": lambda: toy.fig5_descent("a", args.lr, args.iterations),
        "fig5b.csv": lambda: toy.fig5_descent("b", args.lr, args.iterations),
        "lr_sweep.csv": lambda: toy.lr_sweep(args.sweep_lrs, args.iterations, args.tolerance),
    }
    assert [*jobs, "settings.json"] == list(toy.OUTPUT_FILES)
    for name, job in tqdm(jobs.items(), desc="toy experiments", unit="figure"):
        io.write_text(out / name, job().to_csv(index=False))
    io.write_json(
        out / "settings.json",
        {
            "lr": args.lr,
            "iterations": args.iterations,
            "tolerance": args.tolerance,
            "sweep_lrs": args.sweep_lrs,
            "free_coordinates": ["x2", "y2"],
            "update": "p <- p - lr * g, g scaled by U_e when SOT is on (Eq. 28, 2 in lr)",
        },
    )
    return 0
