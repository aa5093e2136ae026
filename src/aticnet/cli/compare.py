"""``aticnet compare``: the paper's Fig. 4 for your images: image | ground truth | each model's prediction."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_device, subcommand


def add_parser(subparsers: Any) -> None:
    p = subcommand(subparsers, "compare", __doc__, "figure: image | ground truth | each model's prediction (Fig. 4)")
    p.add_argument("--weights", nargs="+", required=True, metavar="W", help="run directories, .safetensors or .onnx")
    p.add_argument("--images", nargs="+", required=True, metavar="FILE")
    p.add_argument("--labels", nargs="+", metavar="FILE",
                   help="ground truth per image: train-id PNGs, or Cityscapes *_labelIds.png")
    p.add_argument("--names", nargs="+", metavar="NAME", help="column titles, one per --weights")
    p.add_argument("--title", default=None)
    add_device(p)
    p.add_argument("--out", required=True, metavar="FIG.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..visualization.figures import compare_models

    out = compare_models(args.weights, args.images, args.out, labels=args.labels, names=args.names, device=args.device,
                  title=args.title)
    print(f"wrote {out}")
