"""What the web page does with an upload or a webcam frame, as plain functions testable without a browser:
load the models, segment an image, a video or a camera frame with each of them, the class legend, the
latency line and the frames/s a webcam stream reaches."""

from __future__ import annotations

import html
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch import Tensor

from ..inference.segmenter import Segmenter
from ..utils.errors import UserError
from .media import (
    VIDEO_MAX_SIDE,
    Limits,
    UploadError,
    fit_size,
    make_workdir,
    read_upload_image,
    upload_kind,
)


class SegmentResult(NamedTuple):
    """What one image gives: per model, the overlay, class shares, latency (ms) and labels."""

    overlays: list[np.ndarray]
    legend_html: str
    shares: list[dict[str, float]]
    latency_ms: list[float]
    labels: list[Tensor]


def load_segmenters(specs: Sequence[str | Path], device: str = "cpu", fast: bool = True,
                    infer_scale: float | None = None) -> list[Segmenter]:
    """Load each shipped name, run directory, weights file, exported model (.onnx, .xml) or Hub folder; a spec that
    is none of these is a Hub repo id. ``infer_scale`` is the scale the page starts at (None: each model's own, the
    scale it was trained for)."""
    from ..inference.segmenter import load
    from ..models.pretrained import is_weights_name

    out = []
    for spec in specs:
        if Path(spec).exists() or is_weights_name(str(spec)):
            out.append(load(spec, device, fast=fast, infer_scale=infer_scale))
        else:
            from ..deploy.hub import from_pretrained

            seg = from_pretrained(spec, device=device, fast=fast)
            if infer_scale is not None:
                seg.infer_scale = float(infer_scale)
            out.append(seg)
    return out


def model_labels(segmenters: Sequence[Segmenter]) -> list[str]:
    """Display names: the model's name and its run folder, made unique."""
    labels = []
    for seg in segmenters:
        src = Path(seg.source) if seg.source else None
        folder = (src.parent if src and src.suffix else src).name if src else ""
        label = f"{seg.name} ({folder})" if folder and folder != seg.name else seg.name
        labels.append(label if label not in labels else f"{label} #{len(labels) + 1}")
    return labels


def shared_infer_scale(segmenters: Sequence[Segmenter]) -> float:
    """The scale the models were loaded with when they share one (the page's starting value), else 1."""
    scales = {s.infer_scale for s in segmenters}
    return scales.pop() if len(scales) == 1 else 1.0


def warm_up(segmenters: Sequence[Segmenter]) -> None:
    """One small pass per model, so the first latency shown is not the cold start's."""
    image = np.zeros((64, 64, 3), np.uint8)
    for seg in segmenters:
        seg.predict(image)


def class_shares(labels: Any, classes: Sequence[str]) -> dict[str, float]:
    """Each class's share of the pixels (classes present only, largest first); ids past the list are left out."""
    flat = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1).astype(np.int64)
    if flat.size == 0:
        return {}
    counts = np.bincount(flat, minlength=len(classes))[: len(classes)]
    order = sorted((i for i in range(len(classes)) if counts[i]), key=lambda i: (-counts[i], i))
    return {classes[i]: float(counts[i] / flat.size) for i in order}


def _swatch(color: Sequence[int]) -> str:
    r, g, b = (int(c) for c in color[:3])
    return (f'<span style="display:inline-block;width:1.1em;height:1.1em;vertical-align:middle;'
            f'border:1px solid #8888;border-radius:3px;background:rgb({r},{g},{b})"></span>')


def legend_html(classes: Sequence[str], colors: Sequence[Sequence[int]], shares: Sequence[dict[str, float]],
                names: Sequence[str]) -> str:
    """A legend table: swatch, class name and each model's share (%) for every class any model found."""
    present = {c for s in shares for c in s}
    rows = sorted((i for i, c in enumerate(classes) if c in present),
                  key=lambda i: (-max(s.get(classes[i], 0.0) for s in shares), i))
    head = "".join(f'<th style="text-align:right;padding:2px 8px">{html.escape(n)}</th>' for n in names)
    body = []
    for i in rows:
        cells = "".join(f'<td style="text-align:right;padding:2px 8px">{100 * s.get(classes[i], 0.0):.1f} %</td>'
                        for s in shares)
        body.append(f'<tr data-class="{html.escape(classes[i])}"><td style="padding:2px 6px">{_swatch(colors[i])}</td>'
                    f'<td style="padding:2px 8px">{html.escape(classes[i])}</td>{cells}</tr>')
    absent = len(classes) - len(rows)
    foot = f'<p style="margin:4px 0;opacity:.7">{absent} other classes not found in this picture.</p>' if absent else ""
    return ('<div class="aticnet-legend"><table style="border-collapse:collapse">'
            f'<thead><tr><th></th><th style="text-align:left;padding:2px 8px">class</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{foot}</div>')


def _legend(segmenters: Sequence[Segmenter], shares: Sequence[dict[str, float]], names: Sequence[str]) -> str:
    """One legend when the models share classes and colours, else one per model."""
    first = segmenters[0]
    if all(s.classes == first.classes and s.colors == first.colors for s in segmenters):
        return legend_html(first.classes, first.colors, shares, names)
    return "".join(f"<h4>{html.escape(n)}</h4>" + legend_html(s.classes, s.colors, [sh], [n])
                   for s, sh, n in zip(segmenters, shares, names))


def segment_image(segmenters: Sequence[Segmenter], image: np.ndarray, *, alpha: float = 0.5,
                  infer_scale: float | None = None) -> SegmentResult:
    """Segment one H x W x 3 uint8 image with each model: overlays (``alpha`` = colour opacity; 1.0 gives the
    plain class colours), the legend's HTML, class shares and milliseconds per model.

    ``infer_scale`` (None: each model's own) sets the size the networks run at."""
    if not segmenters:
        raise UserError("no model loaded")
    overlays, shares, latency, labels = [], [], [], []
    for seg in segmenters:
        start = time.perf_counter()
        lab = seg.predict(image, infer_scale=infer_scale)
        latency.append(1000 * (time.perf_counter() - start))
        labels.append(lab)
        overlays.append(seg.overlay(image, lab, alpha=alpha))
        shares.append(class_shares(lab, seg.classes))
    return SegmentResult(overlays, _legend(segmenters, shares, model_labels(segmenters)), shares, latency, labels)


@dataclass
class VideoResult:
    """What a video gives: the side-by-side video, frames done, class shares over all frames, ms per frame."""

    path: Path
    frames: int
    legend_html: str
    shares: list[dict[str, float]]
    latency_ms: list[float]
    note: str


def segment_video(segmenters: Sequence[Segmenter], path: str | Path, out: str | Path, *, alpha: float = 0.5,
                  infer_scale: float | None = None, limits: Limits | None = None,
                  progress: Callable[[float, str], None] | None = None) -> VideoResult:
    """Segment the first ``limits.max_frames`` frames of a video; write ``out`` (H.264 mp4) with the frame and each
    model's overlay side by side. An unreadable or empty video raises ``UploadError``."""
    from ..inference.video import VideoWriter, video_frames
    from ..utils.errors import DataError

    limits = limits or Limits()
    name = Path(path).name
    try:
        frames, rate, total = video_frames(Path(path))
    except DataError as e:
        raise UploadError(f"{name} is not a video this app can read ({e.problem})") from None
    counts = [np.zeros(len(s.classes), np.int64) for s in segmenters]
    times = [0.0] * len(segmenters)
    done, size_note, writer = 0, "", None
    try:
        for frame in frames:
            if done >= limits.max_frames:
                break
            h, w = frame.shape[:2]
            th, tw = fit_size(h, w, limits.video_max_side)
            if (th, tw) != (h, w):
                from PIL import Image

                frame = np.array(Image.fromarray(frame).resize((tw, th), Image.Resampling.BILINEAR))
                size_note = f"frames downscaled from {w}x{h} to {tw}x{th}"
            panels = [frame]
            for k, seg in enumerate(segmenters):
                start = time.perf_counter()
                lab = seg.predict(frame, infer_scale=infer_scale)
                times[k] += time.perf_counter() - start
                counts[k] += np.bincount(lab.reshape(-1).numpy().astype(np.int64), minlength=len(seg.classes))[: len(counts[k])]
                panels.append(seg.overlay(frame, lab, alpha=alpha))
            if writer is None:
                writer = VideoWriter(Path(out), rate)
            writer.write(np.concatenate(panels, axis=1))
            done += 1
            if progress:
                progress(done / min(limits.max_frames, total or limits.max_frames), f"frame {done}")
    except DataError as e:
        raise UploadError(f"{name}: decoding failed after {done} frames ({e.problem})") from None
    finally:
        if writer is not None:
            writer.close()
    if done == 0:
        raise UploadError(f"{name} has no video frames")
    shares = [{s.classes[i]: float(c[i] / c.sum()) for i in np.argsort(-c, kind="stable") if c[i]} for s, c in
              zip(segmenters, counts)]
    notes = [n for n in (size_note, f"first {done} of {total} frames" if total > done else "") if n]
    return VideoResult(Path(out), done, _legend(segmenters, shares, model_labels(segmenters)), shares,
                       [1000 * t / done for t in times], "; ".join(notes))


@dataclass
class PageUpdate:
    """What the page shows after an upload: ``kind`` is 'image', 'video' or 'error'."""

    kind: str
    status: str
    image: np.ndarray | None = None
    overlays: list[np.ndarray] | None = None
    video: str | None = None
    legend: str = ""
    shares: list[dict[str, float]] | None = None


def latency_text(names: Sequence[str], latency_ms: Sequence[float], what: str) -> str:
    """'icnet: 41 ms, aticnet: 52 ms per image at 360x480 (cpu)'."""
    return ", ".join(f"**{n}**: {ms:.0f} ms" for n, ms in zip(names, latency_ms)) + f" {what}"


def process_upload(segmenters: Sequence[Segmenter], path: str | Path | None, *, alpha: float = 0.5,
                   infer_scale: float | None = None, limits: Limits | None = None, workdir: str | Path | None = None,
                   progress: Callable[[float, str], None] | None = None) -> PageUpdate:
    """Everything one upload gives, as plain values; a bad upload gives ``kind='error'`` and the message."""
    limits = limits or Limits()
    if not path:
        return PageUpdate("error", "Upload an image (PNG, JPEG, ...) or a short video (MP4, ...).")
    names = model_labels(segmenters)
    device = segmenters[0].device if segmenters else "cpu"
    try:
        if upload_kind(path) == "image":
            image, note = read_upload_image(path, limits)
            res = segment_image(segmenters, image, alpha=alpha, infer_scale=infer_scale)
            h, w = image.shape[:2]
            status = latency_text(names, res.latency_ms, f"per image at {h}x{w} ({device})")
            return PageUpdate("image", status + (f". Note: {note}." if note else ""), image=image,
                              overlays=res.overlays, legend=res.legend_html, shares=res.shares)
        workdir = Path(workdir) if workdir else make_workdir()
        workdir.mkdir(parents=True, exist_ok=True)
        for old in sorted(workdir.glob("video_*.mp4"), key=os.path.getmtime)[:-4]:
            old.unlink(missing_ok=True)  # keep the last few results only
        out = workdir / f"video_{time.time_ns()}.mp4"
        res = segment_video(segmenters, path, out, alpha=alpha, infer_scale=infer_scale, limits=limits,
                            progress=progress)
        status = latency_text(names, res.latency_ms, f"per frame, {res.frames} frames ({device}); "
                              f"left to right: input, {', '.join(names)}")
        return PageUpdate("video", status + (f". Note: {res.note}." if res.note else ""), video=str(res.path),
                          legend=res.legend_html, shares=res.shares)
    except UploadError as e:
        return PageUpdate("error", f"**Cannot use this upload:** {html.escape(str(e))}")


# ----------------------------------------------------------------------------- webcam
class FrameRate:
    """Frames/s over the last ``window`` frames; a pause longer than ``gap_s`` (a new recording) starts over."""

    def __init__(self, window: int = 30, gap_s: float = 2.0) -> None:
        self.times: deque[float] = deque(maxlen=window)
        self.gap_s = gap_s

    def tick(self, now: float | None = None) -> float:
        """Note a frame done at ``now`` (default: the clock); returns the rate over the frames noted."""
        now = time.perf_counter() if now is None else now
        if self.times and now - self.times[-1] > self.gap_s:
            self.times.clear()
        self.times.append(now)
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0


@dataclass
class WebcamUpdate:
    """What one camera frame gives: each model's overlay side by side (H x W*models x 3 uint8, None when no
    frame came), the status line, the frames/s reached and each model's milliseconds."""

    overlay: np.ndarray | None
    status: str
    fps: float
    latency_ms: list[float]


def segment_webcam_frame(segmenters: Sequence[Segmenter], frame: np.ndarray | None, rate: FrameRate, *,
                         alpha: float = 0.5, infer_scale: float | None = None,
                         max_side: int = VIDEO_MAX_SIDE) -> WebcamUpdate:
    """Segment one frame of the browser's camera with every model.

    Args:
        segmenters: the loaded models. frame: H x W x 3 uint8 (RGB), or None before the camera sends one.
        rate: the stream's ``FrameRate``, ticked once per frame.
        alpha: the colours' opacity. infer_scale: the networks' scale (None: each model's own).
        max_side: larger frames are downscaled to this side first (a camera's 1080p costs 5x a 480p frame).
    Returns:
        The ``WebcamUpdate``.
    """
    if frame is None:
        return WebcamUpdate(None, "Allow the camera, then press the record button.", 0.0, [])
    if not segmenters:
        raise UserError("no model loaded")
    frame = np.asarray(frame)[..., :3]  # a browser may send RGBA
    h, w = frame.shape[:2]
    th, tw = fit_size(h, w, max_side)
    if (th, tw) != (h, w):
        from PIL import Image

        frame = np.array(Image.fromarray(frame).resize((tw, th), Image.Resampling.BILINEAR))
    overlays, latency = [], []
    for seg in segmenters:
        start = time.perf_counter()
        labels = seg.predict(frame, infer_scale=infer_scale)
        latency.append(1000 * (time.perf_counter() - start))
        overlays.append(seg.overlay(frame, labels, alpha=alpha))
    fps = rate.tick()
    frames = len(rate.times)
    status = (f"**{fps:.1f} frames/s** over the last {frames} frame{'s' if frames != 1 else ''}; "
              + latency_text(model_labels(segmenters), latency, f"per frame at {th}x{tw}"))
    return WebcamUpdate(np.concatenate(overlays, axis=1), status, fps, latency)
