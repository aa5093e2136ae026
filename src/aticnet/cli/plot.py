"""``aticnet plot``: the paper's Fig. 3: training loss and val mIoU of several runs on one figure; a round
warm-started (--init) from another listed run continues that run's x axis."""

from __future__ import annotations

import argparse
from typing import Any

from .common import subcommand


def add_parser(subparsers: Any) -> None:
    p = subcommand(subparsers, "plot", __doc__, "figure: loss and val mIoU of runs; warm-started rounds continue (Fig. 3)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="legend entry per run (default: directory names)")
    p.add_argument("--out", required=True, metavar="FIG.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..visualization.figures import plot_runs

    print(f"wrote {plot_runs(args.runs, args.out, labels=args.labels)}")
