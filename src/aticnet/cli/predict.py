"""``aticnet predict``: segment images, folders (recursive) and videos with trained weights.

Formats: trainid (one-channel PNG of the model's class ids), labelid (Cityscapes label ids),
color, overlay (--alpha), cityscapes (label-id PNGs named {city}_{seq}_{frame}_pred.png, as the
official evaluator and `aticnet evaluate --predictions` read them). A video becomes a video
(color, overlay) or a folder of per-frame PNGs (trainid, labelid); PyAV reads and writes it.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_device, add_engine, subcommand


def add_parser(subparsers: Any) -> None:
    from ..predict import FORMATS

    p = subcommand(subparsers, "predict", __doc__, "segment images, folders and videos with trained weights")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or videos")
    p.add_argument("--weights", required=True, metavar="W",
                   help="a run directory, .safetensors, .onnx, OpenVINO .xml or TorchScript file")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--format", default="color", choices=FORMATS, help="what to write (default color)")
    p.add_argument("--batch-size", type=int, default=4, help="same-size images per forward pass (default 4)")
    add_device(p)
    add_engine(p)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..api import load
    from ..errors import UserError
    from ..predict import predict_files

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.precision == "16":
        raise UserError("predict runs fp32 or, on OpenVINO, bf16")
    segmenter = load(args.weights, args.device, backend=args.backend, infer_scale=args.infer_scale,
                     precision=args.precision)
    predict_files(segmenter, args.inputs, args.out, fmt=args.format, batch_size=args.batch_size, alpha=args.alpha,
                  progress=not args.quiet)
