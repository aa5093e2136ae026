"""``aticnet app``: a local web page to try trained models on your own pictures and videos.

Upload an image or a short video; the page shows the overlay of each loaded model side by
side (with two runs: the paper's Fig. 4 on your own picture), a legend of the classes found
(colour swatch, name, each model's share of the pixels) and the latency. Bad uploads (not an
image or video, too large, an empty or unreadable video) give a message on the page. The webcam
tab streams the browser's camera through the models (Gradio streaming) and shows the overlay and
the frames/s reached over the last frames.

The processing is plain functions (``segment_image``, ``segment_video``,
``process_upload``, ``segment_webcam_frame``), testable without a browser;
``build_app`` wires them to Gradio (an optional extra: ``pip install 'aticnet[app]'``) and
``launch_app`` serves it on 127.0.0.1 with analytics off and no share link.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..inference.segmenter import Segmenter
from ..utils.io import IMAGE_EXTENSIONS
from .media import (
    VIDEO_EXTENSIONS,
    Limits,
    make_workdir,
)
from .segment import (
    FrameRate,
    PageUpdate,
    model_labels,
    process_upload,
    segment_webcam_frame,
    shared_infer_scale,
    warm_up,
)

INFER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
WEBCAM_STREAM_EVERY = 0.05  # seconds between the frames a browser sends: up to 20 frames/s asked
WEBCAM_TIME_LIMIT_S = 600  # a webcam stream ends after this (press record again), so no tab holds the model forever


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
        with gr.Tab("Image or video", elem_id="upload-tab"):
            with gr.Row():
                upload = gr.File(label="image or video", file_types=[*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS],
                                 elem_id="upload", scale=2)
                with gr.Column(scale=1):
                    opacity = gr.Slider(0.0, 1.0, value=alpha, step=0.05, label="overlay opacity", elem_id="opacity")
                    scale = gr.Dropdown([f"{s:g}" for s in sorted({*INFER_SCALES, start_scale})],
                                        value=f"{start_scale:g}", label="inference scale", elem_id="infer-scale")
                    again = gr.Button("Segment again", elem_id="again")
            status = gr.Markdown(elem_id="status")
            with gr.Row():
                shown = gr.Image(label="input", format="png", interactive=False, elem_id="input-image")
                outs = [gr.Image(label=n, format="png", interactive=False, elem_id=f"overlay-{i}")
                        for i, n in enumerate(names)]
            video = gr.Video(label="input | " + " | ".join(names), interactive=False, visible=False,
                             elem_id="video")
            legend = gr.HTML(elem_id="legend")

            def run(path: str | None, a: float, s: str, progress: Any = gr.Progress()) -> list[Any]:  # noqa: B008
                try:
                    update = process_upload(segmenters, path, alpha=float(a), infer_scale=float(s),
                                            limits=limits, workdir=workdir, progress=lambda f, d: progress(f, desc=d))
                except Exception as e:  # a bug reaches the page as a message (and the log), not as a bare "Error"
                    logging.getLogger(__name__).exception("segmenting %s failed", path)
                    update = PageUpdate("error",
                                        f"**Something went wrong:** {html.escape(f'{type(e).__name__}: {e}')}")
                is_video = update.kind == "video"
                overlays = update.overlays or [None] * len(outs)
                return [update.status, gr.update(value=update.image, visible=not is_video),
                        *[gr.update(value=o, visible=not is_video) for o in overlays],
                        gr.update(value=update.video, visible=is_video), update.legend]

            outputs = [status, shown, *outs, video, legend]
            for event in (upload.upload, again.click):
                event(run, inputs=[upload, opacity, scale], outputs=outputs, concurrency_limit=1,
                      concurrency_id="segment")
        with gr.Tab("Webcam", elem_id="webcam-tab"):
            webcam_tab(segmenters, names, alpha, start_scale, limits)
    return blocks


def webcam_tab(segmenters: Sequence[Segmenter], names: Sequence[str], alpha: float, start_scale: float,
               limits: Limits) -> None:
    """The webcam tab's components and its stream (inside an open ``gr.Tab``): the browser sends a camera frame
    every ``WEBCAM_STREAM_EVERY`` s, each model's overlay comes back with the frames/s reached."""
    import gradio as gr

    gr.Markdown(f"Allow the camera, then press the record button: every frame is segmented by "
                f"{', '.join(f'**{n}**' for n in names)} (frames larger than {limits.video_max_side} px a side are "
                f"downscaled; a stream stops after {WEBCAM_TIME_LIMIT_S // 60} minutes).")
    with gr.Row():
        # Not mirrored: a street camera's frames are segmented as the scene is, with the kerb on its true side.
        camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="camera", elem_id="webcam",
                          webcam_options=gr.WebcamOptions(mirror=False))
        shown = gr.Image(label=" | ".join(names), format="jpeg", interactive=False, elem_id="webcam-overlay")
        with gr.Column(scale=0, min_width=200):
            opacity = gr.Slider(0.0, 1.0, value=alpha, step=0.05, label="overlay opacity", elem_id="webcam-opacity")
            scale = gr.Dropdown([f"{s:g}" for s in sorted({*INFER_SCALES, start_scale})], value=f"{start_scale:g}",
                                label="inference scale", elem_id="webcam-infer-scale")
    status = gr.Markdown(elem_id="webcam-fps")
    rate = gr.State(FrameRate())  # one per browser tab (Gradio copies it)

    def step(frame: Any, a: float, s: str, meter: FrameRate) -> list[Any]:
        try:
            update = segment_webcam_frame(segmenters, frame, meter, alpha=float(a), infer_scale=float(s),
                                          max_side=limits.video_max_side)
        except Exception as e:  # a bug reaches the page as a message (and the log); the stream goes on
            logging.getLogger(__name__).exception("segmenting a webcam frame failed")
            return [gr.skip(), f"**Something went wrong:** {html.escape(f'{type(e).__name__}: {e}')}", meter]
        return [update.overlay if update.overlay is not None else gr.skip(), update.status, meter]

    # each frame queues with the uploads: one model call at a time (an OpenVINO model has one infer request)
    camera.stream(step, inputs=[camera, opacity, scale, rate], outputs=[shown, status, rate],
                  stream_every=WEBCAM_STREAM_EVERY, time_limit=WEBCAM_TIME_LIMIT_S, concurrency_limit=1,
                  concurrency_id="segment", show_progress="hidden")


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
