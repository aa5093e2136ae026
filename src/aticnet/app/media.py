"""Reading what a person uploads to the app: images (size limits, EXIF rotation) and videos.

Every problem is an ``UploadError`` whose message the page shows.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.errors import UserError

MAX_SIDE = 2048  # longer images are downscaled to this side (the models' usual 1024x2048 input)
MAX_MEGAPIXELS = 64.0  # larger images are refused before decoding
MAX_FRAMES = 150  # frames of a video processed (about 5 s at 30 fps)
VIDEO_MAX_SIDE = 640  # video frames are downscaled to this side
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# FFmpeg demuxers taken as video containers (FFmpeg also "reads" text files as video through its tty demuxer)
VIDEO_FORMATS = {"mov", "mp4", "matroska", "webm", "avi", "mpeg", "mpegts", "flv", "ogg", "asf", "m4v", "h264", "hevc"}
INFER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)


class UploadError(UserError):
    """An upload the app cannot use; the message is shown on the page."""


@dataclass(frozen=True)
class Limits:
    """Size limits of the app's inputs."""

    max_side: int = MAX_SIDE
    max_megapixels: float = MAX_MEGAPIXELS
    max_frames: int = MAX_FRAMES
    video_max_side: int = VIDEO_MAX_SIDE


def make_workdir() -> Path:
    """A private temporary folder for the app's video results, removed when the process ends."""
    path = Path(tempfile.mkdtemp(prefix="aticnet-app-"))
    atexit.register(shutil.rmtree, path, True)
    return path


# ----------------------------------------------------------------------------- reading uploads
def fit_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    """(H, W) scaled down so the longer side is at most ``max_side`` (unchanged when it fits)."""
    scale = max_side / max(h, w)
    if scale >= 1:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


def read_upload_image(path: str | Path, limits: Limits | None = None) -> tuple[np.ndarray, str]:
    """An uploaded image as H x W x 3 uint8 (EXIF-rotated, downscaled to ``limits.max_side``) and a note.

    Raises ``UploadError`` for a file that is not an image or is over ``limits.max_megapixels``
    (checked from the header, before decoding)."""
    from torchvision.transforms.v2 import functional as F

    from ..utils.errors import DataError
    from ..utils.io import image_size, read_image

    limits = limits or Limits()
    name = Path(path).name
    try:
        h, w = image_size(path)
        if h * w / 1e6 > limits.max_megapixels:
            raise UploadError(f"{name} is {w}x{h} ({h * w / 1e6:.0f} megapixels); this app takes images up to "
                              f"{limits.max_megapixels:g} megapixels: make it smaller first")
        image = read_image(path, exif=True)
    except DataError as e:
        raise UploadError(f"{name} is not an image this app can read ({e.problem})") from None
    h0, w0 = image.shape[-2:]
    th, tw = fit_size(h0, w0, limits.max_side)
    note = ""
    if (th, tw) != (h0, w0):
        image = F.resize(image, [th, tw], antialias=True)
        note = f"downscaled from {w0}x{h0} to {tw}x{th} (the app's limit is {limits.max_side} px a side)"
    return image.permute(1, 2, 0).numpy(), note


def upload_kind(path: str | Path) -> str:
    """'image' or 'video', by trying to open the file (the extension only breaks ties)."""
    from PIL import Image, UnidentifiedImageError

    name = Path(path).name
    if not Path(path).is_file():
        raise UploadError(f"{name} was not found on the server (upload it again)")
    if Path(path).stat().st_size == 0:
        raise UploadError(f"{name} is empty")
    is_video_name = Path(path).suffix.lower() in VIDEO_EXTENSIONS
    if not is_video_name:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path):
                    return "image"
        except Image.DecompressionBombError:
            return "image"  # read_upload_image refuses it with the size
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            pass
    try:
        import av
    except ImportError:
        if is_video_name:
            raise UploadError(f"{name}: videos need PyAV on the server (pip install av)") from None
        raise UploadError(f"{name} is not an image this app can read") from None
    try:
        with av.open(str(path)) as container:
            if container.streams.video and VIDEO_FORMATS & set(container.format.name.split(",")):
                return "video"
    except (av.FFmpegError, OSError, ValueError):
        pass
    what = "a video" if is_video_name else "an image or a video"
    raise UploadError(f"{name} is not {what} this app can read")
