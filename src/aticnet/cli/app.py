"""``aticnet app``: a local web page where a person uploads an image or a short video and gets each model's
overlay (two runs: side by side, the paper's Fig. 4 on their own picture), a class legend with each class's
pixel share, and the latency. It listens on 127.0.0.1 unless --host says otherwise; Gradio's analytics are
off and no public share link is made. Needs the app extra: pip install 'aticnet[app]'.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..utils.errors import UserError
from .common import add_device, subcommand

DEFAULT_WEIGHTS = "aticnet-camvid"  # the shipped AtICNet: the page opens on a real street model


def add_parser(subparsers: Any) -> None:
    from ..app.media import MAX_FRAMES, MAX_MEGAPIXELS, MAX_SIDE, VIDEO_MAX_SIDE

    p = subcommand(subparsers, "app", __doc__, "a local web page: upload an image or a video, see each model's overlay")
    p.add_argument("--weights", nargs="+", default=None, metavar="W",
                   help="one or more shipped names (aticnet weights), run directories, weights files, exported models "
                        "(.onnx, OpenVINO .xml), Hub folders or Hub repo ids (two: side by side); default: "
                        f"{DEFAULT_WEIGHTS}")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    add_device(p)
    p.add_argument("--infer-scale", type=float, default=None,
                   help="run the networks at this multiple of each image's size; the page can change it (default: "
                        "the scale each model was trained for, 1 unless its weights say otherwise)")
    p.add_argument("--alpha", type=float, default=0.5, help="starting overlay opacity, 0..1 (default 0.5)")
    p.add_argument("--max-side", type=int, default=MAX_SIDE, help=f"downscale larger images to this side (default {MAX_SIDE})")
    p.add_argument("--max-megapixels", type=float, default=MAX_MEGAPIXELS,
                   help=f"refuse larger images (default {MAX_MEGAPIXELS:g})")
    p.add_argument("--max-frames", type=int, default=MAX_FRAMES, help=f"video frames processed (default {MAX_FRAMES})")
    p.add_argument("--video-max-side", type=int, default=VIDEO_MAX_SIDE,
                   help=f"downscale video frames to this side (default {VIDEO_MAX_SIDE})")
    p.add_argument("--max-file-size", default="200mb", help="largest upload Gradio accepts (default 200mb)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Load the models, start the page, print its address and serve until Ctrl+C."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the app needs Gradio: pip install 'aticnet[app]'") from None
    from ..app import Limits, launch_app, load_segmenters

    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be between 0 and 1, not {args.alpha}")
    if min(args.max_side, args.max_frames, args.video_max_side) < 1 or args.max_megapixels <= 0:
        raise UserError("--max-side, --max-megapixels, --max-frames and --video-max-side must be positive")
    weights = args.weights or [DEFAULT_WEIGHTS]
    segmenters = load_segmenters(weights, args.device, infer_scale=args.infer_scale)
    limits = Limits(max_side=args.max_side, max_megapixels=args.max_megapixels, max_frames=args.max_frames,
                    video_max_side=args.video_max_side)
    launch_app(segmenters, host=args.host, port=args.port, alpha=args.alpha, limits=limits,
               max_file_size=args.max_file_size, open_browser=args.open, block=True)
