"""Video files, cameras and network streams with PyAV (FFmpeg): decoding frames, encoding pictures
(``pip install av``).

Sources (``open_source``): a camera (``/dev/video0``, or an index ``N`` meaning ``/dev/videoN``, read
through FFmpeg's v4l2 input), an RTSP/HTTP/UDP URL (low-delay options, RTSP over TCP) or a file. Live
sources decode with slice threading, since frame threading holds back one frame per thread; files use
FFmpeg's automatic threading. Sinks (``VideoWriter``): a video file (H.264 or MPEG-4), or an RTSP
URL (published to an RTSP server) or a UDP URL (MPEG-TS), both encoded for low delay.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.errors import DataError, UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
VIDEO_CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".avi": "mpeg4"}
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "rtp", "tcp", "srt")
SINK_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "udp": "mpegts", "rtp": "rtp_mpegts", "tcp": "mpegts",
                "srt": "mpegts"}
# FFmpeg demuxer options that keep a network stream's delay low: no input buffering, no reordering wait, a
# 1 s probe (FFmpeg waits 5 s) before the first frame.
LOW_DELAY_INPUT = {"fflags": "nobuffer", "flags": "low_delay", "analyzeduration": "1000000"}
OPEN_TIMEOUT_S, READ_TIMEOUT_S = 10.0, 10.0
# libx264's preset for files: encoding runs beside inference on the same cores, and veryfast encodes a
# 960x720 street video faster than x264's default (medium), into a file of about the same size
FILE_PRESET = "veryfast"


def require_av(path: Path | str) -> Any:
    """The ``av`` module, or a UserError naming ``path`` and how to install it."""
    try:
        import av
    except ImportError:
        raise UserError(f"{path}: reading and writing video needs PyAV (pip install av, or the video extra: "
                        "pip install 'aticnet[video]'); extract the frames as images instead") from None
    return av


def _unreadable(path: Path | str, e: Exception) -> DataError:
    return DataError(path, f"not a readable video ({e.__class__.__name__}: {str(e)[:120]})")


def video_frame_count(path: Path) -> int:
    """Frames in a video as its header says (0 when unknown); an unreadable file is a DataError."""
    av = require_av(path)
    try:
        with av.open(str(path)) as container:
            return int(container.streams.video[0].frames or 0)
    except (av.FFmpegError, IndexError, OSError) as e:
        raise _unreadable(path, e) from None


def video_frames(path: Path) -> tuple[Iterator[np.ndarray], Fraction, int]:
    """(frames as H x W x 3 uint8, frame rate, frame count or 0 when unknown) of a video file."""
    source = open_source(path, live=False)
    return source.frames, source.rate, source.frame_count


# ----------------------------------------------------------------------------- sources
def source_kind(spec: str | int | Path) -> str:
    """'camera' (an index or /dev/video*), 'url' (rtsp://, http://, udp://, ...) or 'file'."""
    text = str(spec)
    if text.isdigit() or re.fullmatch(r"/dev/video\d+", text):
        return "camera"
    if re.match(rf"^({'|'.join(NETWORK_SCHEMES)})://", text, re.IGNORECASE):
        return "url"
    return "file"


def is_url(spec: str | Path) -> bool:
    """Whether ``spec`` names a network stream rather than a file."""
    return source_kind(spec) == "url"


@dataclass
class VideoSource:
    """An opened source: ``frames`` yields H x W x 3 uint8 (RGB) pictures until the source ends; ``close``
    stops it. ``live`` sources are cameras and streams (or a file paced at its frame rate)."""

    name: str
    kind: str
    live: bool
    rate: Fraction
    frame_count: int  # 0 when unknown (always for live sources)
    frames: Iterator[np.ndarray] = field(repr=False)
    container: Any = field(default=None, repr=False)

    def close(self) -> None:
        """Stop decoding and release the device, connection or file (also when no frame was read)."""
        close = getattr(self.frames, "close", None)
        if close:
            close()
        if self.container is not None:
            self.container.close()


def _open_input(av: Any, spec: str, kind: str, options: dict[str, str]) -> Any:
    """The FFmpeg input container of a camera, URL or file."""
    if kind == "camera":
        device = f"/dev/video{spec}" if spec.isdigit() else spec
        if "video4linux2,v4l2" not in av.formats_available:
            raise UserError(f"{device}: this FFmpeg build (PyAV) has no v4l2 input for cameras")
        if not Path(device).exists():
            raise UserError(f"{device}: no such camera (ls /dev/video*)")
        return av.open(device, format="v4l2", options=options, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))
    if kind == "url":
        net = dict(LOW_DELAY_INPUT)
        if spec.lower().startswith(("rtsp://", "rtsps://")):
            net["rtsp_transport"] = "tcp"  # no lost UDP packets, no smeared frames
            if "listen" in options.get("rtsp_flags", ""):  # FFmpeg's default (-1: forever) fails to open its socket
                net["listen_timeout"] = str(round(OPEN_TIMEOUT_S))
        return av.open(spec, options={**net, **options}, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))
    if not Path(spec).is_file():
        raise UserError(f"{spec}: no such video file")
    return av.open(spec, options=options)


def open_source(spec: str | int | Path, *, live: bool | None = None,
                options: dict[str, str] | None = None) -> VideoSource:
    """Open a camera, a network stream or a video file for decoding.

    Args:
        spec: ``/dev/video0`` or a camera index (``0``), an ``rtsp://``, ``http://``, ``udp://``... URL, or a
            file path.
        live: the frame policy the caller uses; None: live for cameras and URLs, not for files. A file read
            live is paced at its frame rate, as a camera would deliver it.
        options: FFmpeg input options (``video_size``, ``framerate``, ``input_format`` for a camera, ...).
    Returns:
        The ``VideoSource``; an unreadable source is a DataError naming it.
    """
    text = str(spec)
    kind = source_kind(text)
    live = kind != "file" if live is None else live
    av = require_av(text)
    try:
        container = _open_input(av, text, kind, dict(options or {}))
        stream = container.streams.video[0]
    except (av.FFmpegError, IndexError, OSError) as e:
        raise _unreadable(text, e) from None
    # Frame threading delays output by a frame per thread: live sources split each frame into slices instead.
    stream.thread_type = "SLICE" if kind != "file" else "AUTO"
    rate = Fraction(stream.average_rate or stream.guessed_rate or Fraction(25))
    pace = kind == "file" and live

    def frames() -> Iterator[np.ndarray]:
        start = time.perf_counter()
        try:
            for index, frame in enumerate(container.decode(stream)):
                if pace:  # a file standing in for a camera: no faster than its frame rate
                    time.sleep(max(0.0, start + float(index / rate) - time.perf_counter()))
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as e:
            raise DataError(text, f"video decoding failed ({str(e)[:120]})") from None
        finally:
            container.close()

    count = int(stream.frames or 0) if kind == "file" else 0
    return VideoSource(text, kind, live, rate, count, frames(), container)


# ----------------------------------------------------------------------------- sinks
class VideoWriter:
    """Frames (H x W x 3 uint8) to a video file or a network stream; odd sizes are padded by one pixel
    (yuv420p).

    A file gets H.264 (x264's ``veryfast`` preset; MPEG-4 Part 2 for .avi, or where libx264 is missing); an
    ``rtsp://`` URL is published to an RTSP server (over TCP), a ``udp://``, ``tcp://`` or ``srt://`` URL gets
    MPEG-TS. Network streams are encoded for low delay (no B-frames, no look-ahead)."""

    def __init__(self, path: Path | str, rate: Fraction) -> None:
        self.av = require_av(path)
        self.rate = Fraction(rate)
        self.url = is_url(path)
        self.path: Path | str = str(path) if self.url else Path(path)
        try:
            if self.url:
                scheme = str(path).split("://", 1)[0].lower()
                if scheme not in SINK_FORMATS:
                    raise UserError(f"{path}: cannot stream to {scheme}:// (use rtsp://, udp://, tcp:// or srt://)")
                options = {"rtsp_transport": "tcp"} if SINK_FORMATS[scheme] == "rtsp" else {}
                self.container = self.av.open(str(path), mode="w", format=SINK_FORMATS[scheme],
                                              options=options, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))
            else:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.container = self.av.open(str(path), mode="w")
        except self.av.FFmpegError as e:
            raise UserError(f"{path}: cannot open for writing ({str(e)[:160]})") from None
        self.stream: Any = None
        self.last_pts = -1

    def _add_stream(self, width: int, height: int) -> None:
        suffix = "" if self.url else Path(self.path).suffix.lower()
        codec = VIDEO_CODECS.get(suffix, "libx264")
        if codec not in self.av.codecs_available:
            codec = "mpeg4"
        self.stream = self.container.add_stream(codec, rate=self.rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            self.stream.bit_rate = 8_000_000
        if self.url:  # each frame leaves the encoder as soon as it is in; a viewer joining waits at most 1 s
            self.stream.codec_context.gop_size = max(1, round(self.rate))
            if codec == "libx264":
                self.stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        elif codec == "libx264":
            self.stream.options = {"preset": FILE_PRESET}

    def write(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Encode one picture.

        Args:
            frame: H x W x 3 uint8 RGB.
            timestamp: seconds since the stream's start (a live source's capture time), so a recording
                keeps real time when frames are dropped; None: the next frame at the constant rate.
        """
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self.stream is None:
            self._add_stream(frame.shape[1], frame.shape[0])
        video_frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        pts = self.last_pts + 1 if timestamp is None else max(self.last_pts + 1, round(timestamp * self.rate))
        video_frame.pts, video_frame.time_base = pts, 1 / self.rate
        self.last_pts = pts
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the container (a file is playable from here on)."""
        try:
            if self.stream is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
