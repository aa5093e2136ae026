"""``aticnet app``: a local web page (Gradio) to try trained models on pictures, videos and a webcam.

* ``segment``: what the page does with an upload, as plain functions.
* ``media``: reading uploads safely (kinds, sizes, limits).
* ``ui``: the page itself (``build_app``, ``launch_app``); Gradio is imported only there.
"""

from .media import (
    MAX_FRAMES,
    MAX_MEGAPIXELS,
    MAX_SIDE,
    VIDEO_MAX_SIDE,
    Limits,
    UploadError,
    read_upload_image,
    upload_kind,
)
from .segment import (
    FrameRate,
    PageUpdate,
    SegmentResult,
    VideoResult,
    WebcamUpdate,
    class_shares,
    legend_html,
    load_segmenters,
    model_labels,
    process_upload,
    segment_image,
    segment_video,
    segment_webcam_frame,
    shared_infer_scale,
)
from .ui import build_app, launch_app

__all__ = ["MAX_FRAMES", "MAX_MEGAPIXELS", "MAX_SIDE", "VIDEO_MAX_SIDE", "FrameRate", "Limits", "PageUpdate",
           "SegmentResult", "UploadError", "VideoResult", "WebcamUpdate", "build_app", "class_shares", "launch_app",
           "legend_html", "load_segmenters", "model_labels", "process_upload", "read_upload_image", "segment_image",
           "segment_video", "segment_webcam_frame", "shared_infer_scale", "upload_kind"]
