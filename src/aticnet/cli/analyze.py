"""``aticnet analyze``: parameters (per part), GFLOPs, receptive fields and a CPU latency of each model."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_json, parse_size, subcommand, write_report


def add_parser(subparsers: Any) -> None:
    from ..models import MODEL_NAMES, PEER_NAMES

    p = subcommand(subparsers, "analyze", __doc__, "parameters, GFLOPs, receptive fields and latency of a model")
    p.add_argument("--model", nargs="+", default=["aticnet"], choices=(*MODEL_NAMES, *PEER_NAMES), metavar="NAME",
                   help=f"one or more of: {', '.join((*MODEL_NAMES, *PEER_NAMES))}")
    p.add_argument("--width", type=float, default=None, help="channel multiplier (default: the model's own)")
    p.add_argument("--size", type=parse_size, default=(1024, 2048), help="input HxW (default 1024x2048)")
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--runs", type=int, default=3, help="timed forward passes for the latency (0 skips)")
    add_json(p, "the report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..benchmark.analyze import analyze, format_report
    from ..models import build_model

    overrides = {"width": args.width} if args.width else {}
    reports = []
    for name in args.model:
        report = analyze(build_model(name, num_classes=args.num_classes, **overrides), args.size, runs=args.runs)
        print(format_report(report))
        reports.append(report)
    write_report(args.json, reports[0] if len(reports) == 1 else reports)
