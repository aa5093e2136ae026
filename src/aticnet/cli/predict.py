"""``aticnet predict``: segment images, folders (recursive) and videos with trained weights.

Formats: trainid (one-channel PNG of the model's class ids), labelid (Cityscapes label ids),
color, overlay (--alpha), cityscapes (label-id PNGs named {city}_{seq}_{frame}_pred.png, as the
official evaluator and `aticnet evaluate --predictions` read them). A video becomes a video
(color, overlay) or a folder of per-frame PNGs (trainid, labelid); PyAV reads and writes it.

--ray [ADDRESS] runs on Ray Data: --workers actors (--cpus-per-worker each, or a GPU each with
--device cuda) segment the images of folders, globs and list files (.txt: one path a line) on a
local Ray, or on the cluster at ADDRESS (give --ray after the inputs, or as --ray=ADDRESS). The
outputs are plain predict's; an index (--index, default OUT/index.jsonl) lists each one; a rerun
skips finished outputs. Install: pip install "aticnet[batch]".
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_device, add_engine, subcommand


def add_parser(subparsers: Any) -> None:
    from ..inference.predict import FORMATS

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
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray Data: a local Ray, or the cluster at ADDRESS (auto, HOST:6379, ray://HOST:10001)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="with --ray: actors in the pool (default 1)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                   help="with --ray: CPUs each actor reserves and uses (default 1)")
    p.add_argument("--index", metavar="FILE", help="with --ray: the JSON-lines index (default OUT/index.jsonl)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..inference.predict import predict_files
    from ..inference.segmenter import load
    from ..utils.errors import UserError

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.precision == "16":
        raise UserError("predict runs fp32 or, on OpenVINO, bf16")
    if args.ray is not None:
        return run_on_ray(args)
    segmenter = load(args.weights, args.device, backend=args.backend, infer_scale=args.infer_scale,
                     precision=args.precision)
    predict_files(segmenter, args.inputs, args.out, fmt=args.format, batch_size=args.batch_size, alpha=args.alpha,
                  progress=not args.quiet)


def run_on_ray(args: argparse.Namespace) -> None:
    from ..utils.errors import UserError

    if args.workers < 1 or args.cpus_per_worker <= 0:
        raise UserError(f"--workers must be at least 1 and --cpus-per-worker positive, not {args.workers} and "
                        f"{args.cpus_per_worker:g}")
    try:
        from ..serving.batch import predict_on_ray
    except ImportError as e:
        raise UserError(f"predict --ray needs Ray Data ({e.name} is missing): pip install \"aticnet[batch]\"") from None
    device = "cuda" if args.device == "cuda" else "cpu"  # each actor takes a GPU only when asked for one
    predict_on_ray(args.weights, args.inputs, args.out, fmt=args.format, alpha=args.alpha, batch_size=args.batch_size,
                   workers=args.workers, cpus_per_worker=args.cpus_per_worker, device=device, backend=args.backend,
                   infer_scale=args.infer_scale, precision=args.precision,
                   ray_address=None if args.ray == "local" else args.ray, index=args.index)
