"""``aticnet stream SOURCE``: segment a camera, a network stream or a video file live.

SOURCE is a camera (/dev/video0, or an index: 0 means /dev/video0), an rtsp://, http:// or udp:// URL, or
a video file. Decoding, inference and rendering/encoding run as overlapped stages. A live source (cameras
and URLs by default, or --live) keeps only the newest frame when inference falls behind: stale frames are
dropped and counted, so the delay stays bounded; a file (or --file) keeps every frame. --out writes the
overlay (or the class colours) to a video file, or streams it to an rtsp:// server or a udp:// address
(MPEG-TS). At the end (the source's end, --max-frames, or Ctrl-C, which closes the output cleanly) it
prints per-stage timings, frames/s, dropped frames and capture-to-output latency percentiles.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import add_device, add_engine, add_json, subcommand, write_report

FORMATS = ("overlay", "color")


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"an FFmpeg option looks like KEY=VALUE (video_size=1280x720), not {text!r}")
    return key, value


def add_parser(subparsers: Any) -> None:
    p = subcommand(subparsers, "stream", __doc__, "segment a camera, RTSP/HTTP/UDP stream or video file live")
    p.add_argument("source", metavar="SOURCE", help="/dev/videoN or N (camera), rtsp:// http:// udp:// URL, or a file")
    p.add_argument("--weights", required=True, metavar="W",
                   help="shipped weights name, run directory, .safetensors, .onnx, OpenVINO .xml or TorchScript file")
    p.add_argument("--out", metavar="FILE_OR_URL",
                   help="a video file (.mp4 .mkv .mov: H.264; .avi: MPEG-4), rtsp://server/path or udp://host:port "
                        "(default: no output, measure only)")
    p.add_argument("--format", default="overlay", choices=FORMATS, help="what to write (default overlay)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity, 0..1 (default 0.5)")
    add_device(p)
    add_engine(p)
    policy = p.add_mutually_exclusive_group()
    policy.add_argument("--live", dest="live", action="store_true", default=None,
                        help="newest frame wins (default for cameras and URLs; a file is then read at its frame rate)")
    policy.add_argument("--file", dest="live", action="store_false", help="keep every frame (default for files)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames from the source")
    p.add_argument("--input-option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="an FFmpeg input option, repeatable (camera: video_size=1280x720, framerate=30, "
                        "input_format=mjpeg; rtsp_flags=listen: receive a stream published to SOURCE)")
    add_json(p, "the stats")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Open the source, load the model, run the pipeline and print (and write) its stats."""
    from ..inference.pipeline import run_pipeline
    from ..inference.segmenter import load
    from ..inference.video import VIDEO_EXTENSIONS, VideoWriter, is_url, open_source
    from ..utils.errors import UserError

    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be between 0 and 1, not {args.alpha}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, not {args.max_frames}")
    if args.precision == "16":
        raise UserError("stream runs fp32 or, on OpenVINO, bf16")
    if args.out and not is_url(args.out) and Path(args.out).suffix.lower() not in VIDEO_EXTENSIONS:
        raise UserError(f"--out {args.out}: a video file ({', '.join(VIDEO_EXTENSIONS)}) or an rtsp:// or udp:// URL")
    source = open_source(args.source, live=args.live, options=dict(args.input_option))  # a bad source fails first
    try:
        segmenter = load(args.weights, args.device, backend=args.backend, infer_scale=args.infer_scale,
                         precision=args.precision)
        sink = VideoWriter(args.out, source.rate) if args.out else None
    except BaseException:
        source.close()
        raise

    def render(frame: Any, labels: Any) -> Any:
        if args.format == "color":
            return segmenter.colorize(labels)
        return segmenter.overlay(frame.image, labels, args.alpha)

    policy = "live" if source.live else "file"
    print(f"aticnet stream: {source.name} ({source.kind}, {policy}: "
          f"{'newest frame wins' if source.live else 'every frame'}) -> {args.out or 'no output'}; "
          "Ctrl-C stops", flush=True)
    stats = run_pipeline(source.frames, segmenter, render, sink, policy=policy, name=source.name,
                         max_frames=args.max_frames)
    print(stats.summary(), flush=True)
    write_report(args.json, {**stats.to_dict(), "out": args.out, "model": segmenter.name,
                             "backend": segmenter.backend, "device": str(segmenter.device),
                             "infer_scale": segmenter.infer_scale})
