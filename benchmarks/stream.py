"""``aticnet stream`` against the network alone, and a live source's latency, measured in one run.

    python benchmarks/stream.py --weights aticnet-camvid.int8.xml --frames-dir CAMVID/val \
        --size 960x720 --infer-scale 0.5 --json stream.json

1. A video of ``--frames`` frames at ``--size`` (WIDTHxHEIGHT) and ``--rate`` frames/s, made with PyAV from the
   pictures of ``--frames-dir`` (resized), in a temporary folder.
2. The network alone: ``aticnet.load(...).predict`` on the decoded frames, one at a time, labels at full size
   (what the pipeline's inference stage does): frames/s.
3. End to end, every frame kept: ``aticnet stream VIDEO --file --out OUT.mp4 --json`` (decode, inference and
   render/encode overlapped): frames/s, and its ratio to the network alone.
4. Live: ``aticnet stream VIDEO --live --json``, the file read at its frame rate as a camera delivers it, newest frame
   wins: capture-to-output latency percentiles and the frames dropped.

The commands run as a user types them, one after the other; run the script alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

import aticnet


def make_video(frames_dir: Path, out: Path, size: tuple[int, int], count: int, rate: int) -> list[np.ndarray]:
    """A video of ``count`` frames cycling through the pictures of ``frames_dir``; returns the frames written."""
    import av

    pictures = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not pictures:
        raise SystemExit(f"{frames_dir}: no pictures")
    frames = [np.asarray(Image.open(pictures[i % len(pictures)]).convert("RGB").resize(size, Image.BILINEAR))
              for i in range(count)]
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return frames


def network_alone(weights: str, frames: list[np.ndarray], infer_scale: float, warmup: int = 3) -> dict:
    """Frames/s of ``predict`` alone on the frames (labels at full size), one frame at a time."""
    segmenter = aticnet.load(weights, infer_scale=infer_scale)
    for frame in frames[:warmup]:
        segmenter.predict(frame)
    times = []
    for frame in frames:
        start = time.perf_counter()
        segmenter.predict(frame)
        times.append(time.perf_counter() - start)
    return {"frames": len(frames), "fps": len(frames) / sum(times), "median_ms": 1000 * statistics.median(times),
            "backend": segmenter.backend}


def stream(argv: list[str], stats: Path) -> dict:
    """``aticnet stream ARGV --json STATS`` in its own process; its stats."""
    cmd = [sys.executable, "-m", "aticnet", "stream", *argv, "--json", str(stats)]
    subprocess.run(cmd, check=True)
    return json.loads(stats.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--frames-dir", required=True, type=Path, help="pictures the test video is made of")
    parser.add_argument("--size", default="960x720", help="WIDTHxHEIGHT (default 960x720)")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rate", type=int, default=30, help="the video's frames/s: the live source's rate")
    parser.add_argument("--infer-scale", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="aticnet-stream-") as tmp:
        work = Path(tmp)
        video = work / "input.mp4"
        frames = make_video(args.frames_dir, video, size, args.frames, args.rate)
        alone = network_alone(args.weights, frames, args.infer_scale)
        common = [str(video), "--weights", args.weights, "--infer-scale", f"{args.infer_scale:g}"]
        end_to_end = stream([*common, "--file", "--out", str(work / "out.mp4")], work / "file.json")
        live = stream([*common, "--live"], work / "live.json")
    report = {"mode": "stream", "command": "python " + shlex.join(sys.argv), **aticnet.machine_info("cpu"),
              "size": list(size), "frames": args.frames, "rate": args.rate, "infer_scale": args.infer_scale,
              "weights": args.weights, "network_alone": alone, "end_to_end": end_to_end, "live": live,
              "end_to_end_over_network": end_to_end["fps"] / alone["fps"]}
    print(json.dumps({k: v for k, v in report.items() if k in ("network_alone", "end_to_end_over_network")}, indent=2))
    print(f"end to end {end_to_end['fps']:.1f} frames/s; live p95 {live['latency_ms']['p95']:.0f} ms, "
          f"{live['dropped']} of {live['frames_in']} dropped")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
