"""``aticnet check-data``: read every (image, label) pair of a data set before training on it.

Each pair is decoded by the data set's own reader (exactly what training sees): both files open,
the label has its image's size and holds only class values or the ignore value. Images and labels
without a partner are listed too. Prints each split's frames per drive and class pixel frequencies;
exits with code 2 and the list of bad files when any is bad.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .common import add_json, subcommand, write_report


def add_parser(subparsers: Any) -> None:
    p = subcommand(subparsers, "check-data", __doc__, "read every image and label of a data set; list the bad files")
    p.add_argument("--dataset", required=True, help="cityscapes, camvid, folder or synthetic")
    p.add_argument("--data-root", required=True, metavar="DIR")
    p.add_argument("--split", nargs="+", default=["train", "val"], metavar="S", help="splits (default: train val)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="decoding processes (0: this one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json(p, "the report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..data.check import check_split, format_table
    from ..utils.errors import UserError

    reports = {s: check_split(args.dataset, args.data_root, s, args.workers, not args.quiet) for s in args.split}
    for split, r in reports.items():
        sizes = ", ".join(f"{size} ({n})" for size, n in list(r["sizes"].items())[:3])
        sizes += " ..." if len(r["sizes"]) > 3 else ""
        sizes = f"; sizes {sizes}" if sizes else ""
        print(f"{args.dataset} {split}: {r['pairs']} pairs, {len(r['bad'])} bad files{sizes}")
        if r["drives"]:
            print("  frames per drive: " + ", ".join(f"{drive} {n}" for drive, n in r["drives"].items()))
    table = format_table(reports)
    if table:
        print(table)
    bad = list({(b["path"], b["problem"]): b for r in reports.values() for b in r["bad"]}.values())
    write_report(args.json, {"dataset": args.dataset, "data_root": args.data_root, "ok": not bad, "splits": reports})
    if bad:
        print(f"bad files ({len(bad)}):", file=sys.stderr)
        for b in bad:
            print(f"  {b['path']}: {b['problem']}", file=sys.stderr)
        raise UserError(f"{args.data_root}: {len(bad)} bad file{'s' if len(bad) > 1 else ''} (listed above)")
    print("every pair is readable")
