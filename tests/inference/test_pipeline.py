"""The live pipeline (decode -> infer -> render/write) and PyAV sources and sinks, on synthetic video.

Sources: a video written here with PyAV, and a fake camera (a generator producing frames faster than a
segmenter stub that sleeps before running a real tiny model). Every frame's index is known, so the tests
check which frames came out, in which order, and the written file's frame count and rate.
"""

from __future__ import annotations

import _thread
import itertools
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

import aticnet
from aticnet import build_model
from aticnet.data.cityscapes_labels import CLASS_COLORS, CLASS_NAMES
from aticnet.inference.pipeline import FrameQueue, StreamStats, run_pipeline
from aticnet.inference.video import VideoWriter, open_source, source_kind
from aticnet.models.weights import save_weights
from aticnet.utils.errors import DataError, UserError

av = pytest.importorskip("av", reason="PyAV is not installed (pip install av)")
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest
H, W = 32, 48


def picture(index: int) -> np.ndarray:
    """A frame whose content is its index: a flat grey level plus a little noise."""
    rng = np.random.default_rng(index)
    return np.clip(rng.integers(0, 40, (H, W, 3)) + 5 * index, 0, 255).astype(np.uint8)


def write_video(path, frames: int = 24, rate: int = 12):
    """A small H.264 file of ``frames`` pictures at ``rate`` frames/s."""
    writer = VideoWriter(path, Fraction(rate))
    for i in range(frames):
        writer.write(picture(i))
    writer.close()
    return path


def read_video(path) -> tuple[int, Fraction, tuple[int, int]]:
    """(decoded frames, frame rate, (H, W)) of a written file: it must open and decode to the end."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return len(frames), Fraction(stream.average_rate), frames[0].shape[:2] if frames else (0, 0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline_run")
    torch.manual_seed(0)
    save_weights(build_model("aticnet", num_classes=19, width=0.125), d / "model.safetensors",
                 {"classes": list(CLASS_NAMES), "colors": [list(c) for c in CLASS_COLORS], "dataset": "synthetic"})
    return d


@pytest.fixture(scope="module")
def seg(run_dir):
    return aticnet.load(run_dir, "cpu", backend="torch")


def slow(seg, seconds: float, fail_at: int | None = None):
    """``seg`` whose ``predict_batch`` first sleeps ``seconds`` (and raises on its call number ``fail_at``)."""
    calls = []

    class Slow(type(seg)):
        def predict_batch(self, images, batch_size=8, *, infer_scale=None):
            calls.append(len(images))
            if fail_at is not None and len(calls) == fail_at:
                raise RuntimeError("the engine failed")
            time.sleep(seconds)
            return super().predict_batch(images, batch_size, infer_scale=infer_scale)

    stub = Slow.__new__(Slow)
    stub.__dict__.update(seg.__dict__)
    stub.calls = calls
    return stub


class Recorder:
    """A sink keeping what it is given."""

    def __init__(self):
        self.pictures, self.timestamps, self.closed = [], [], False

    def write(self, picture, timestamp=None):
        self.pictures.append(picture)
        self.timestamps.append(timestamp)

    def close(self):
        self.closed = True


def overlay_of(seg, seen):
    """A render that notes each frame it gets and its labels."""

    def render(frame, labels):
        seen.append((frame, labels))
        return seg.overlay(frame.image, labels, 0.5)

    return render


def camera(frames: int, interval: float, stop_after: int | None = None):
    """A fake camera: ``frames`` pictures, one every ``interval`` seconds; Ctrl-C after ``stop_after``."""
    for i in range(frames):
        if stop_after is not None and i == stop_after:
            raise KeyboardInterrupt
        time.sleep(interval)
        yield picture(i)


def check_consistent(stats: StreamStats) -> None:
    assert stats.frames_in == stats.frames_out + stats.dropped
    assert set(stats.stage_ms) == {"decode", "infer", "render"}
    for timing in stats.stage_ms.values():
        assert 0 <= timing["median"] <= timing["p95"]
    lat = stats.latency_ms
    assert list(lat) == ["p50", "p95", "p99"] and 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert stats.fps == pytest.approx(stats.frames_out / stats.seconds)
    assert stats.to_dict()["fps"] == stats.fps and stats.to_dict()["frames_out"] == stats.frames_out


# ----------------------------------------------------------------------------- policies
def test_file_keeps_every_frame_in_order(seg, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", frames=24, rate=12)
    source = open_source(clip)
    assert (source.kind, source.live, source.rate, source.frame_count) == ("file", False, 12, 24)
    stub, seen = slow(seg, 0.005), []
    stats = run_pipeline(source.frames, stub, overlay_of(seg, seen), VideoWriter(tmp_path / "out.mp4", source.rate),
                         policy="file", name=str(clip), batch_size=3)
    assert (stats.frames_in, stats.frames_out, stats.dropped, stats.interrupted) == (24, 24, 0, False)
    check_consistent(stats)
    assert [f.index for f, _ in seen] == list(range(24))
    assert max(stub.calls) == 3 and sum(stub.calls) == 24  # frames waiting together ran as one batch
    for frame, labels in seen[::8]:  # the labels belong to the frame they came with
        assert (labels == seg.predict(frame.image)).float().mean() > 0.999
    assert read_video(tmp_path / "out.mp4") == (24, Fraction(12), (H, W))


def test_live_newest_frame_wins(seg):
    """A camera at 500 frames/s and a 25 ms segmenter: stale frames are dropped, latency stays bounded."""
    stub, seen, sink = slow(seg, 0.025), [], Recorder()
    stats = run_pipeline(camera(60, 0.002), stub, overlay_of(seg, seen), sink, policy="live", name="camera")
    check_consistent(stats)
    assert stats.frames_in == 60 and stats.dropped > 20 and stats.frames_out == len(sink.pictures) < 40
    indices = [f.index for f, _ in seen]
    assert all(a < b for a, b in itertools.pairwise(indices))  # each output frame newer than the one before
    assert indices[-1] == 59  # the newest frame is never dropped at the end
    assert all(stub.calls[i] == 1 for i in range(len(stub.calls)))  # live: one frame per pass
    # capture to output: at most one inference waiting plus one running, far below the 1.5 s a queue would build
    assert stats.latency_ms["p99"] < 250, stats.latency_ms
    stamps = sink.timestamps  # seconds since the first output's capture: a recording keeps real time
    assert stamps[0] == 0 and all(a < b for a, b in itertools.pairwise(stamps)) and stamps[-1] < stats.seconds


def test_file_policy_with_a_fast_camera_keeps_every_frame(seg):
    stats = run_pipeline(camera(20, 0.001), slow(seg, 0.01), lambda f, lab: seg.colorize(lab), Recorder(),
                         policy="file")
    assert (stats.frames_in, stats.frames_out, stats.dropped) == (20, 20, 0)


def test_frame_queue_policies():
    abort = threading.Event()
    newest = FrameQueue(1, True, abort)
    assert all(newest.put(i) for i in range(5))
    assert (newest.get(), newest.dropped) == (4, 4)
    newest3 = FrameQueue(3, True, abort)  # a deeper newest-wins queue drops the oldest, keeps the order
    assert all(newest3.put(i) for i in range(6))
    assert [newest3.get() for _ in range(3)] == [3, 4, 5] and newest3.dropped == 3
    blocking = FrameQueue(2, False, abort)
    assert blocking.put(0) and blocking.put(1)
    threading.Timer(0.2, abort.set).start()
    start = time.perf_counter()
    assert blocking.put(2) is False and time.perf_counter() - start > 0.15  # waited for room, then gave up
    blocking.close()
    assert [blocking.get(), blocking.get()] == [0, 1] and blocking.get() is not None
    assert blocking.put(3) is False


# ----------------------------------------------------------------------------- stopping
def test_ctrl_c_in_the_source_leaves_a_playable_file(seg, tmp_path):
    stats = run_pipeline(camera(40, 0.0, stop_after=10), slow(seg, 0.005), lambda f, lab: seg.overlay(f.image, lab),
                         VideoWriter(tmp_path / "cut.mp4", Fraction(15)), policy="file")
    assert stats.interrupted and (stats.frames_in, stats.frames_out, stats.dropped) == (10, 10, 0)
    assert read_video(tmp_path / "cut.mp4") == (10, Fraction(15), (H, W))


def test_ctrl_c_in_the_main_thread_drains_and_closes(seg, tmp_path):
    """SIGINT arrives as KeyboardInterrupt in the main thread while the stages run."""
    timer = threading.Timer(0.5, _thread.interrupt_main)  # as SIGINT does
    timer.start()
    sink = VideoWriter(tmp_path / "live.mp4", Fraction(30))
    stats = run_pipeline(camera(10_000, 0.005), slow(seg, 0.02), lambda f, lab: seg.overlay(f.image, lab), sink,
                         policy="live")
    timer.join()
    assert stats.interrupted and 5 < stats.frames_out < 100 and stats.frames_in < 200
    check_consistent(stats)
    frames, rate, size = read_video(tmp_path / "live.mp4")
    assert (frames, rate, size) == (stats.frames_out, Fraction(30), (H, W))


def test_max_frames(seg):
    stats = run_pipeline(camera(50, 0.0), seg, lambda f, lab: seg.colorize(lab), None, policy="file", max_frames=7)
    assert (stats.frames_in, stats.frames_out) == (7, 7)


def test_a_failing_engine_stops_and_closes_the_file(seg, tmp_path):
    sink = VideoWriter(tmp_path / "fail.mp4", Fraction(10))
    with pytest.raises(RuntimeError, match="the engine failed"):
        run_pipeline(camera(30, 0.0), slow(seg, 0.0, fail_at=6), lambda f, lab: seg.overlay(f.image, lab), sink,
                     policy="file")
    frames, _, _ = read_video(tmp_path / "fail.mp4")
    assert 1 <= frames <= 5  # what was done before the failure, in a file that opens


def test_a_broken_source_keeps_the_frames_before_it(seg, tmp_path):
    def broken():
        yield from (picture(i) for i in range(6))
        raise DataError("cam.mp4", "video decoding failed (corrupt)")

    sink = VideoWriter(tmp_path / "partial.mp4", Fraction(10))
    with pytest.raises(DataError, match="corrupt"):
        run_pipeline(broken(), seg, lambda f, lab: seg.overlay(f.image, lab), sink, policy="file")
    assert read_video(tmp_path / "partial.mp4")[0] == 6


# ----------------------------------------------------------------------------- sources and sinks
def test_source_kinds_and_bad_sources(tmp_path):
    assert [source_kind(s) for s in ("0", 3, "/dev/video2", "rtsp://cam/live", "UDP://1.2.3.4:5", "a.mp4")] == \
        ["camera", "camera", "camera", "url", "url", "file"]
    with pytest.raises(UserError, match=r"/dev/video97: no such camera"):
        open_source(97)
    with pytest.raises(UserError, match=r"gone\.mp4: no such video file"):
        open_source(tmp_path / "gone.mp4")
    (tmp_path / "junk.mp4").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match=r"junk\.mp4.*not a readable video"):
        open_source(tmp_path / "junk.mp4")
    with pytest.raises(UserError, match=r"cannot stream to http://"):
        VideoWriter("http://127.0.0.1:9/out", Fraction(10))


def test_file_read_live_is_paced_at_its_rate(tmp_path):
    clip = write_video(tmp_path / "paced.mp4", frames=6, rate=20)
    source = open_source(clip, live=True)
    start = time.perf_counter()
    assert source.live and sum(1 for _ in source.frames) == 6
    assert time.perf_counter() - start >= 5 / 20 - 0.01  # no faster than a camera at 20 frames/s


def test_udp_sink_to_udp_source(tmp_path):
    """A stream sent to udp:// (MPEG-TS) and read back from the same address: decoded at its size."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"udp://127.0.0.1:{port}"
    received = []

    def receive():
        source = open_source(url)
        received.append(source)
        for image in source.frames:
            received.append(image.shape)
            if len(received) > 5:
                break
        source.close()

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    time.sleep(0.5)  # the receiver listens before the first packet leaves
    writer = VideoWriter(url, Fraction(25))
    deadline = time.monotonic() + 15
    i = 0
    while reader.is_alive() and time.monotonic() < deadline:  # a live stream: sent until the reader has enough
        writer.write(picture(i % 40))
        i += 1
        time.sleep(0.01)
    writer.close()
    reader.join(1)
    assert received and received[0].kind == "url" and received[0].live
    assert received[1:] and set(received[1:]) == {(H, W, 3)}


def test_rtsp_sink_publishes_to_an_rtsp_source():
    """A stream published to rtsp:// by a VideoWriter in another process, read by ``open_source`` listening at that
    URL (``rtsp_flags=listen``, as ``aticnet stream URL --input-option rtsp_flags=listen`` does): decoded at its
    size, over TCP."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"rtsp://127.0.0.1:{port}/live"
    publisher = subprocess.Popen([sys.executable, "-c", f"""
import time
from fractions import Fraction
import numpy as np
from aticnet.inference.video import VideoWriter
from aticnet.utils.errors import UserError
for _ in range(75):  # until the reader listens
    try:
        writer = VideoWriter({url!r}, Fraction(25))
        break
    except UserError:
        time.sleep(0.2)
for i in range(750):
    writer.write(np.full(({H}, {W}, 3), i % 200, np.uint8))
    time.sleep(0.02)
writer.close()
"""])
    try:
        source = open_source(url, options={"rtsp_flags": "listen"})
        shapes = [image.shape for image in itertools.islice(source.frames, 6)]
        source.close()
    finally:
        publisher.kill()
        publisher.wait()
    assert source.kind == "url" and source.live
    assert shapes == [(H, W, 3)] * 6
