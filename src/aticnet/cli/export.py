"""``aticnet export``: weights to ONNX or TorchScript, the file run once more and checked against PyTorch;
or (--format pretrained) to a Hugging Face Hub folder: model.safetensors, config.json and a model card.

The ONNX graph takes ``image`` (float N x 3 x H x W, normalised as the model expects) and returns
``logits`` (N x K x H x W); its metadata carries the classes, colours, mean, std and model config,
so ``aticnet predict --weights model.onnx`` and ``aticnet.load`` need nothing else. With --dynamic the
graph holds for any batch and size (checked at a second size). Above --tolerance the command fails.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_json, parse_size, subcommand, write_report


def add_parser(subparsers: Any) -> None:
    from ..deploy.export import FORMATS, MIN_DYNAMO_OPSET

    p = subcommand(subparsers, "export", __doc__, "export weights to ONNX or TorchScript, checked against PyTorch")
    p.add_argument("--weights", required=True, metavar="W", help="a run directory or a .safetensors file")
    p.add_argument("--format", default="onnx", choices=[*FORMATS, "pretrained"],
                   help="onnx, torchscript, openvino (an IR: NAME.xml + NAME.bin), or pretrained (a Hugging Face Hub "
                        "folder with a model card)")
    p.add_argument("--out", required=True, metavar="FILE", help="the .onnx or TorchScript (.ts, .pt) file to write")
    p.add_argument("--opset", type=int, default=MIN_DYNAMO_OPSET,
                   help=f"ONNX opset (default {MIN_DYNAMO_OPSET}; below {MIN_DYNAMO_OPSET} uses the legacy exporter)")
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "legacy"],
                   help="ONNX exporter: torch.export based (dynamo) or TorchScript based (legacy); auto picks by opset")
    p.add_argument("--dynamic", action="store_true", help="free batch, height and width (checked at two sizes)")
    p.add_argument("--lowres", action="store_true",
                   help="onnx: end at the low-res logits (1/4 for ICNet); aticnet.load does the labels step faster "
                        "(openvino always does)")
    p.add_argument("--size", type=parse_size, default=(1024, 2048), help="HxW traced and checked (default 1024x2048)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest max-abs difference accepted (default 1e-3)")
    p.add_argument("--verbose", action="store_true", help="show the exporter's own messages")
    p.add_argument("--latency-runs", type=int, default=0,
                   help="pretrained: time this many passes at --size for the model card (default 0: not measured)")
    p.add_argument("--license", default=None, help="pretrained: the weights' license for the card (e.g. mit)")
    add_json(p, "the export report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    if args.format == "pretrained":
        return run_pretrained(args)
    from ..deploy.export import export

    report = export(args.weights, args.format, args.out, size=args.size, dynamic=args.dynamic, opset=args.opset,
                    exporter=args.exporter, tolerance=args.tolerance, verbose=args.verbose, lowres=args.lowres)
    write_report(args.json, report)


def run_pretrained(args: argparse.Namespace) -> None:
    from ..utils.errors import UserError

    try:
        from ..deploy.hub import export_pretrained
    except ImportError:
        raise UserError("--format pretrained needs huggingface_hub: pip install 'aticnet[hub]'") from None
    report = export_pretrained(args.weights, args.out, size=args.size, latency_runs=args.latency_runs,
                               license=args.license)
    config = report["config"]
    latency = report["latency"]
    print(f"wrote {config['model_type']} ({config['num_classes']} classes) to {args.out}/: {', '.join(report['files'])}"
          + (f"; {latency['ms']:.1f} ms at {args.size[0]}x{args.size[1]}" if latency else ""))
    print(f"load it with aticnet.from_pretrained({str(args.out)!r}); push it with "
          f"huggingface_hub.HfApi().upload_folder(folder_path={str(args.out)!r}, repo_id=...)")
    write_report(args.json, report)
