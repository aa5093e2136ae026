"""``aticnet app``: a local web page to try trained models on your own pictures and videos.

Upload an image or a short video; the page shows the overlay of each loaded model side by
side (with two runs: the paper's Fig. 4 on your own picture), a legend of the classes found
(colour swatch, name, each model's share of the pixels) and the latency. Bad uploads (not an
image or video, too large, an empty or unreadable video) give a message on the page.

The processing is plain functions (:func:`segment_image`, :func:`segment_video`,
:func:`process_upload`), testable without a browser; :func:`build_app` wires them to Gradio
(an optional extra: ``pip install 'aticnet[app]'``) and :func:`launch_app` serves it on
127.0.0.1 with analytics off and no share link.
"""

from __future__ import annotations

import html
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch import Tensor

from .api import Segmenter
from .io import IMAGE_EXTENSIONS
from .app_media import (
    MAX_FRAMES,
    MAX_MEGAPIXELS,
    MAX_SIDE,
    VIDEO_EXTENSIONS,
    VIDEO_MAX_SIDE,
    Limits,
    UploadError,
    fit_size,
    make_workdir,
    read_upload_image,
    upload_kind,
)
from .errors import UserError

__all__ = ["MAX_FRAMES", "MAX_MEGAPIXELS", "MAX_SIDE", "VIDEO_MAX_SIDE", "Limits", "PageUpdate", "SegmentResult",
           "UploadError", "VideoResult", "build_app", "class_shares", "fit_size", "launch_app", "legend_html",
           "load_segmenters", "model_labels", "process_upload", "read_upload_image", "segment_image", "segment_video",
           "shared_infer_scale", "upload_kind"]

INFER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)


class SegmentResult(NamedTuple):
    """What one image gives: per model, the overlay, class shares, latency (ms) and labels."""

    overlays: list[np.ndarray]
    legend_html: str
    shares: list[dict[str, float]]
    latency_ms: list[float]
    labels: list[Tensor]


# ----------------------------------------------------------------------------- models
def load_segmenters(specs: Sequence[str | Path], device: str = "cpu", fast: bool = True,
                    infer_scale: float = 1.0) -> list[Segmenter]:
    """Load each run directory, weights file, exported model (.onnx, .xml) or Hub folder; a spec that is no
    path is a Hub repo id. ``infer_scale`` is the scale the page starts at."""
    from .api import load

    out = []
    for spec in specs:
        if Path(spec).exists():
            out.append(load(spec, device, fast=fast, infer_scale=infer_scale))
        else:
            from .hub import from_pretrained

            seg = from_pretrained(spec, device=device, fast=fast)
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


# ----------------------------------------------------------------------------- results
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
    model's overlay side by side. An unreadable or empty video raises :class:`UploadError`."""
    from .errors import DataError
    from .predict import VideoWriter, video_frames

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


# ----------------------------------------------------------------------------- one upload, start to end
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


# ----------------------------------------------------------------------------- Gradio
def build_app(segmenters: Sequence[Segmenter], *, alpha: float = 0.5, limits: Limits | None = None,
              workdir: str | Path | None = None) -> Any:
    """The Gradio Blocks of the page (not started); ``alpha`` is the opacity slider's starting value."""
    import gradio as gr

    limits = limits or Limits()
    names = model_labels(segmenters)
    workdir = Path(workdir) if workdir else make_workdir()
    start_scale = shared_infer_scale(segmenters)
    # delete_cache: Gradio's copies of uploads and results older than an hour go, checked hourly
    with gr.Blocks(title="aticnet: street-scene segmentation", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(f"## aticnet: street-scene segmentation\nModels: {', '.join(f'**{n}**' for n in names)}. "
                    f"Upload an image or a short video (the first {limits.max_frames} frames are used); images "
                    f"larger than {limits.max_side} px a side are downscaled.")
        with gr.Row():
            upload = gr.File(label="image or video", file_types=[*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS],
                             elem_id="upload", scale=2)
            with gr.Column(scale=1):
                opacity = gr.Slider(0.0, 1.0, value=alpha, step=0.05, label="overlay opacity", elem_id="opacity")
                scale = gr.Dropdown([f"{s:g}" for s in sorted({*INFER_SCALES, start_scale})], value=f"{start_scale:g}",
                                    label="inference scale", elem_id="infer-scale")
                again = gr.Button("Segment again", elem_id="again")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            shown = gr.Image(label="input", format="png", interactive=False, elem_id="input-image")
            outs = [gr.Image(label=n, format="png", interactive=False, elem_id=f"overlay-{i}")
                    for i, n in enumerate(names)]
        video = gr.Video(label="input | " + " | ".join(names), interactive=False, visible=False, elem_id="video")
        legend = gr.HTML(elem_id="legend")

        def run(path: str | None, a: float, s: str, progress: Any = gr.Progress()) -> list[Any]:  # noqa: B008
            try:
                update = process_upload(segmenters, path, alpha=float(a), infer_scale=float(s),
                                        limits=limits, workdir=workdir, progress=lambda f, d: progress(f, desc=d))
            except Exception as e:  # a bug reaches the page as a message (and the log), not as a bare "Error"
                logging.getLogger(__name__).exception("segmenting %s failed", path)
                update = PageUpdate("error", f"**Something went wrong:** {html.escape(f'{type(e).__name__}: {e}')}")
            is_video = update.kind == "video"
            overlays = update.overlays or [None] * len(outs)
            return [update.status, gr.update(value=update.image, visible=not is_video),
                    *[gr.update(value=o, visible=not is_video) for o in overlays],
                    gr.update(value=update.video, visible=is_video), update.legend]

        outputs = [status, shown, *outs, video, legend]
        for event in (upload.upload, again.click):
            event(run, inputs=[upload, opacity, scale], outputs=outputs, concurrency_limit=1,
                  concurrency_id="segment")
    return blocks


def launch_app(segmenters: Sequence[Segmenter], *, host: str = "127.0.0.1", port: int | None = None,
               alpha: float = 0.5, limits: Limits | None = None, max_file_size: str = "200mb", open_browser: bool = False,
               block: bool = True) -> tuple[Any, str]:
    """Serve the page on ``host`` (127.0.0.1: this machine only); returns (blocks, local URL).

    Gradio's analytics are off and no share link is made. With ``block`` this waits until Ctrl+C."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    warm_up(segmenters)
    workdir = make_workdir()
    blocks = build_app(segmenters, alpha=alpha, limits=limits, workdir=workdir)
    blocks.queue(default_concurrency_limit=1)
    blocks.launch(server_name=host, server_port=port, share=False, inbrowser=open_browser, prevent_thread_lock=True,
                  quiet=True, show_error=True, max_file_size=max_file_size, allowed_paths=[str(workdir)])
    url = blocks.local_url
    if block:
        print(f"aticnet app: open {url} in a browser (Ctrl+C stops it)", flush=True)
        try:
            blocks.block_thread()
        finally:
            blocks.close()
    return blocks, url
