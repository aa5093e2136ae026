"""``aticnet demo``: the main job on the embedded synthetic street scenes (nothing to download).

Draws the scenes, trains ICNet and AtICNet on them with the same small recipe (configs/synthetic.yaml),
scores both and writes a report with the training curves and the side-by-side figure.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_json, subcommand, write_report


def add_parser(subparsers: Any) -> None:
    p = subcommand(subparsers, "demo", __doc__,
                   "the main job: train ICNet and AtICNet on synthetic scenes and compare them")
    p.add_argument("--out", default="runs/demo", help="where the data, runs and report go (default runs/demo)")
    add_json(p, "{model: {miou, params, latency_ms, ...}}")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default: the demo recipe's)")
    p.add_argument("--latency-runs", type=int, default=3, help="timed passes at 1024x2048 per model (0 skips)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=float, default=0.5, help="channel width of both models (default 0.5, as released)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..demo import run_demo

    results = run_demo(args.out, steps=args.steps, latency_runs=args.latency_runs, seed=args.seed, width=args.width)
    keys = ("miou", "params", "latency_ms", "pixel_accuracy", "train_seconds", "per_class_iou")
    write_report(args.json, {name: {k: r[k] for k in keys} for name, r in results.items()})
    print(f"report, curves and comparison figure in {args.out}/")
