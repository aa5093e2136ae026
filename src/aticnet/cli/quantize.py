"""``aticnet quantize``: post-training static int8 of a trained model, calibrated on images of a data set or a
folder; per-channel weights. Writes the deployable file (OpenVINO IR by default, or an onnxruntime QDQ .onnx)
and FILE.json beside it (calibration, time, layers kept in float). Run it with any command that takes
--weights: aticnet predict/evaluate/benchmark --weights model.int8.xml. Needs pip install 'aticnet[deploy]'.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_json, parse_size, subcommand, write_report


def add_parser(subparsers: Any) -> None:
    p = subcommand(subparsers, "quantize", __doc__, "post-training int8 (OpenVINO + NNCF, or onnxruntime), calibrated")
    p.add_argument("--weights", required=True, metavar="W", help="a run directory or a .safetensors file")
    p.add_argument("--out", required=True, metavar="FILE", help="model.int8.xml (openvino) or model.int8.onnx")
    p.add_argument("--backend", default="openvino", choices=["openvino", "onnxruntime"],
                   help="openvino (NNCF; the fastest on Intel and AMD CPUs here) or onnxruntime (QDQ)")
    p.add_argument("--overflow-fix", default="enable", choices=["enable", "first_layer"],
                   help="openvino: 7-bit weights in every layer (enable, default: no 16-bit saturation on AVX2-only CPUs) or "
                        "only in the first (first_layer, NNCF's default: for IRs that run on VNNI/AMX CPUs only)")
    p.add_argument("--dataset", help="calibrate on this data set's images (cityscapes, camvid, folder, synthetic)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--split", default="train", help="its split (default train)")
    p.add_argument("--drive", nargs="+", metavar="D", help="only the frames of these drives (CamVid prefixes, cities)")
    p.add_argument("--images-dir", metavar="DIR", help="or calibrate on the pictures in this folder")
    p.add_argument("--images", type=int, default=32, help="calibration images, spread over the set (default 32)")
    p.add_argument("--size", type=parse_size, default=None, help="resize calibration images to HxW (default: their own)")
    add_json(p, "the report (also written beside the model as FILE.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..utils.errors import UserError

    try:
        from ..deploy.quantize import quantize
    except ImportError as e:
        raise UserError(f"quantize needs the deploy extra: pip install 'aticnet[deploy]' ({e})") from None
    report = quantize(args.weights, args.out, route=args.backend, overflow_fix=args.overflow_fix,
                      dataset=args.dataset, data_root=args.data_root, split=args.split, drives=args.drive,
                      images_dir=args.images_dir, count=args.images, size=args.size)
    write_report(args.json, report)
