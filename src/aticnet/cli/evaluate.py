"""``aticnet evaluate``: mIoU, per-class IoU and accuracies of trained weights on a labelled split, or of
saved Cityscapes label-id predictions (scored as cityscapesScripts scores them)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_device, add_engine, add_json, subcommand, write_report


def add_parser(subparsers: Any) -> None:
    p = subcommand(subparsers, "evaluate", __doc__, "mIoU of trained weights, or of saved Cityscapes predictions")
    p.add_argument("--weights", metavar="W",
                   help="a run directory, .safetensors, .onnx (fp32 or int8), OpenVINO .xml or TorchScript file")
    p.add_argument("--predictions", metavar="DIR", help="score label-id PNGs named as the Cityscapes evaluator expects")
    p.add_argument("--dataset", required=True, help="cityscapes, camvid, folder or synthetic")
    p.add_argument("--data-root", required=True, metavar="DIR")
    p.add_argument("--split", default="val", help="split to score; several joined by '+' (default val)")
    p.add_argument("--drive", nargs="+", default=None, metavar="D", help="score only the frames of these drives")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image")
    p.add_argument("--scales", type=float, nargs="+", default=None,
                   help="multi-scale inference: the network at these multiples of each image's size, e.g. 0.75 1 1.25 "
                        "(default: the scale the weights were trained for)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    add_device(p)
    add_engine(p)
    add_json(p, "the scores")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..evaluation.metrics import format_scores
    from ..utils.errors import UserError

    if args.predictions:
        if args.dataset != "cityscapes":
            raise UserError("--predictions scores label-id PNGs against Cityscapes; use --dataset cityscapes")
        from ..evaluation.cityscapes import evaluate_cityscapes_predictions

        scores = evaluate_cityscapes_predictions(args.predictions, args.data_root, args.split)
        title = f"{args.predictions} on cityscapes {args.split}"
    else:
        if not args.weights:
            raise UserError("give --weights (a run directory or .safetensors) or --predictions DIR")
        from ..evaluation.evaluate import evaluate

        scores = evaluate(args.weights, args.dataset, args.data_root, args.split, device=args.device,
                                  workers=args.workers, max_images=args.max_images, flip=args.flip, scales=args.scales,
                                  precision=args.precision, drives=args.drive, backend=args.backend,
                                  infer_scale=args.infer_scale)
        title = f"{args.weights} on {args.dataset} {args.split}"
    print(format_scores(scores, title=title))
    print(f"{scores['num_images']} images in {scores['seconds']:.1f} s")
    write_report(args.json, scores)
