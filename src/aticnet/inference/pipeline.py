"""A live video pipeline: decode, inference and render/encode as overlapped stages with bounded queues.

Three threads (PyAV and the inference engines release the GIL) pass frames along two queues:

    source --decode--> [inbox] --infer--> [outbox] --render + write--> sink

Policies:

* ``live`` (cameras, network streams): the inbox holds one frame and the newest wins; a frame the
  inference stage has not taken when the next one arrives is dropped and counted, so latency stays bounded
  when inference is slower than the source.
* ``file``: every frame is kept; a full queue makes the stage before it wait.

Each frame carries its capture time (when it left the decoder); ``StreamStats`` reports per-stage
timings, end-to-end frames/s, dropped frames and capture-to-output latency percentiles, kept in fixed memory
(``RunningPercentiles``) however long the stream runs. Ctrl-C (a
KeyboardInterrupt in the main thread, or one raised by the source) stops the source, lets the frames in
flight through and closes the sink, so an output file stays playable; a second Ctrl-C skips the frames in
flight but still closes the sink.
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from torch import Tensor

from ..utils.errors import UserError
from .segmenter import Segmenter

POLICIES = ("live", "file")
FILE_QUEUE_FRAMES = 4  # frames a file policy's queue holds: enough to overlap the stages, little memory
STAGES = ("decode", "infer", "render")
_END = object()  # what a closed queue gives once it is empty
POLL_S = 0.1  # how often a waiting stage looks at the stop flags
STUCK_SOURCE_S = 2.0  # after a stop, how long the decoder may take to notice before its queue is closed for it


@dataclass
class Frame:
    """A decoded picture: its position in the source, H x W x 3 uint8 pixels and its capture time
    (``time.perf_counter()`` when it left the decoder)."""

    index: int
    image: np.ndarray
    captured: float


class Sink(Protocol):
    """Where rendered pictures go (a ``aticnet.inference.video.VideoWriter``, a folder of PNGs, ...)."""

    def write(self, picture: np.ndarray, timestamp: float | None = None) -> None: ...

    def close(self) -> None: ...


Render = Callable[[Frame, Tensor], np.ndarray]  # (frame, H x W labels) -> the picture to write


@dataclass
class StreamStats:
    """What a run measured. ``stage_ms``: per stage, per frame, the median and p95 in ms: "decode" (getting
    the next frame from the source: for a live source mostly waiting for it), "infer" (a batch's time shared
    by its frames), "render" (the picture and writing it); ``latency_ms``: capture-to-output p50, p95 and p99
    in ms."""

    source: str
    policy: str
    frames_in: int = 0  # frames the decoder handed on
    frames_out: int = 0  # frames written to the sink
    dropped: int = 0  # stale frames a live policy skipped
    seconds: float = 0.0  # from the start to the last frame written
    interrupted: bool = False  # stopped by Ctrl-C
    stage_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        """End-to-end frames written per second."""
        return self.frames_out / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The stats as plain values (for JSON), with ``fps``."""
        return {**asdict(self), "fps": self.fps}

    def summary(self) -> str:
        """Several lines for a terminal: frames, frames/s, stages and latency."""
        stages = ", ".join(f"{name} {t['median']:.1f} ms (p95 {t['p95']:.1f})" for name, t in self.stage_ms.items())
        latency = ", ".join(f"{k} {v:.0f} ms" for k, v in self.latency_ms.items())
        stop = " (stopped by Ctrl-C)" if self.interrupted else ""
        return (f"{self.source}: {self.frames_out} of {self.frames_in} frames written, {self.dropped} dropped, "
                f"{self.seconds:.1f} s, {self.fps:.1f} frames/s{stop}\n"
                f"  per frame: {stages or 'no frames'}\n  capture to output: {latency or 'no frames'}")


class RunningPercentiles:
    """Percentiles of a stream of durations in fixed memory, however long the stream runs.

    Values (seconds) go into log-spaced bins 0.5% wide from 1 us to 3 hours (about 4,600 counters, as HdrHistogram
    does); a percentile is the nearest rank's bin, within 0.5% of the exact value and clamped to the smallest and
    largest value seen. A 30 frames/s camera running for a day keeps the same 4,600 counters per stage.
    """

    LOW, HIGH, STEP = 1e-6, 1e4, 0.005  # seconds, seconds, relative bin width

    def __init__(self) -> None:
        self.bins = math.ceil(math.log(self.HIGH / self.LOW) / math.log1p(self.STEP)) + 1
        self.counts = np.zeros(self.bins, np.int64)
        self.count, self.low, self.high = 0, math.inf, -math.inf

    def add(self, value: float) -> None:
        """Count one value (seconds)."""
        clamped = min(max(value, self.LOW), self.HIGH)
        self.counts[int(math.log(clamped / self.LOW) / math.log1p(self.STEP))] += 1
        self.count += 1
        self.low, self.high = min(self.low, value), max(self.high, value)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) by nearest rank; 0.0 before any value."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q / 100 * self.count))
        if rank in (1, self.count):  # the extremes are known exactly
            return self.low if rank == 1 else self.high
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        middle = self.LOW * (1 + self.STEP) ** (index + 0.5)
        return min(max(middle, self.low), self.high)

    def __len__(self) -> int:
        return self.count


def _percentiles(values: RunningPercentiles, points: dict[str, float]) -> dict[str, float]:
    if not len(values):
        return {}
    return {name: values.percentile(q) for name, q in points.items()}


class FrameQueue:
    """A bounded queue between two stages; ``newest_wins`` makes a full put drop the oldest item (counted)
    instead of waiting. ``close`` ends it: ``get`` gives what is left, then ``_END``."""

    def __init__(self, capacity: int, newest_wins: bool, abort: threading.Event) -> None:
        self.items: collections.deque = collections.deque()
        self.capacity, self.newest_wins, self.abort = capacity, newest_wins, abort
        self.cond = threading.Condition()
        self.closed = False
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Hand ``item`` on; False when the queue is closed or the run aborted (the item is not taken)."""
        with self.cond:
            while len(self.items) >= self.capacity and not self.newest_wins:
                if self.closed or self.abort.is_set():
                    return False
                self.cond.wait(POLL_S)
            if self.closed or self.abort.is_set():
                return False
            if len(self.items) >= self.capacity:
                self.items.popleft()
                self.dropped += 1
            self.items.append(item)
            self.cond.notify_all()
            return True

    def get(self, timeout: float = POLL_S) -> Any:
        """The oldest item, ``_END`` once closed and empty; raises queue.Empty after ``timeout`` seconds."""
        with self.cond:
            if not self.items and not self.closed:
                self.cond.wait(timeout)
            if self.items:
                item = self.items.popleft()
                self.cond.notify_all()
                return item
            if self.closed:
                return _END
            raise queue.Empty

    def close(self) -> None:
        """No more puts; waiting stages wake up."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class Pipeline:
    """One run of source -> segmenter -> render -> sink (see the module docstring); ``run`` returns the
    ``StreamStats``."""

    def __init__(self, frames: Iterable[np.ndarray], segmenter: Segmenter, render: Render, sink: Sink | None, *,
                 policy: str = "file", name: str = "source", batch_size: int = 1, infer_scale: float | None = None,
                 max_frames: int | None = None, on_output: Callable[[Frame], None] | None = None) -> None:
        if policy not in POLICIES:
            raise UserError(f"the frame policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.frames, self.segmenter, self.render, self.sink = iter(frames), segmenter, render, sink
        self.live = policy == "live"
        self.batch_size = 1 if self.live else max(1, batch_size)  # live: the newest frame, alone
        self.infer_scale, self.max_frames, self.on_output = infer_scale, max_frames, on_output
        self.stopping, self.abort = threading.Event(), threading.Event()
        self.inbox = FrameQueue(1 if self.live else FILE_QUEUE_FRAMES, self.live, self.abort)
        self.outbox = FrameQueue(2 if self.live else FILE_QUEUE_FRAMES, False, self.abort)
        self.stats = StreamStats(name, policy)
        # bounded whatever the stream's length: a camera may run for days
        self.times = {stage: RunningPercentiles() for stage in STAGES}
        self.latency = RunningPercentiles()
        self.errors: list[BaseException] = []
        self.start = self.first_capture = self.last_output = 0.0

    # ------------------------------------------------------------------------- stages
    def _decode(self) -> None:
        try:
            while not self.stopping.is_set():
                if self.max_frames is not None and self.stats.frames_in >= self.max_frames:
                    break
                begin = time.perf_counter()
                image = next(self.frames, None)
                if image is None:
                    break
                now = time.perf_counter()
                if not self.inbox.put(Frame(self.stats.frames_in, image, now)):
                    break
                self.times["decode"].add(now - begin)
                self.stats.frames_in += 1
        except KeyboardInterrupt:  # a source may be stopped this way too
            self.stats.interrupted = True
        except BaseException as e:  # noqa: BLE001 (a broken stream: what is in flight goes out, then the error)
            self.errors.append(e)
        finally:
            self.inbox.close()
            close = getattr(self.frames, "close", None)
            if close:
                close()

    def _next_batch(self) -> list[Frame] | None:
        """Up to ``batch_size`` frames (waiting for the first only); None at the end or on abort."""
        batch: list[Frame] = []
        while not self.abort.is_set():
            try:
                item = self.inbox.get(POLL_S if not batch else 0.0)
            except queue.Empty:
                if batch:
                    return batch
                continue
            if item is _END:
                return batch or None
            batch.append(item)
            if len(batch) == self.batch_size:
                return batch
        return None

    def _infer(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                begin = time.perf_counter()
                labels = self.segmenter.predict_batch([f.image for f in batch], batch_size=len(batch),
                                                      infer_scale=self.infer_scale)
                per_frame = (time.perf_counter() - begin) / len(batch)
                for frame, lab in zip(batch, labels):
                    self.times["infer"].add(per_frame)
                    if not self.outbox.put((frame, lab)):
                        return
        except BaseException as e:  # noqa: BLE001 (raised again in the main thread once the sink is closed)
            self.errors.append(e)
            self.abort.set()
        finally:
            self.outbox.close()

    def _write(self) -> None:
        try:
            while not self.abort.is_set():
                try:
                    item = self.outbox.get()
                except queue.Empty:
                    continue
                if item is _END:
                    break
                frame, labels = item
                begin = time.perf_counter()
                if not self.stats.frames_out:
                    self.first_capture = frame.captured
                picture = self.render(frame, labels)
                if self.sink is not None:
                    # a live recording keeps real time: dropped frames leave gaps, not a faster film
                    self.sink.write(picture, frame.captured - self.first_capture if self.live else None)
                self.last_output = time.perf_counter()
                self.times["render"].add(self.last_output - begin)
                self.latency.add(self.last_output - frame.captured)
                self.stats.frames_out += 1
                if self.on_output:
                    self.on_output(frame)
        except BaseException as e:  # noqa: BLE001 (raised again in the main thread once the sink is closed)
            self.errors.append(e)
            self.abort.set()
        finally:
            if self.sink is not None:
                try:
                    self.sink.close()
                except BaseException as e:  # noqa: BLE001 (raised again in the main thread)
                    self.errors.append(e)

    # ------------------------------------------------------------------------- running
    def _wait(self, threads: list[threading.Thread]) -> None:
        """Wait for the stages; Ctrl-C here stops the source (a second one aborts the frames in flight)."""
        decoder = threads[0]
        stopped_at = None
        while any(t.is_alive() for t in threads[1:]):
            try:
                for t in threads[1:]:
                    t.join(POLL_S)
                if self.stopping.is_set() and decoder.is_alive():
                    stopped_at = stopped_at or time.perf_counter()
                    if time.perf_counter() - stopped_at > STUCK_SOURCE_S:
                        self.inbox.close()  # a source blocked in a read: go on without it
            except KeyboardInterrupt:
                if self.stopping.is_set():
                    self.abort.set()
                self.stopping.set()
                self.stats.interrupted = True

    def run(self) -> StreamStats:
        """Run until the source ends, ``max_frames`` frames are read, Ctrl-C or an error; the sink is closed
        in every case. Returns the stats; raises the first stage's error after closing."""
        self.start = time.perf_counter()
        threads = [threading.Thread(target=stage, name=f"aticnet-{stage.__name__[1:]}", daemon=True)
                   for stage in (self._decode, self._infer, self._write)]
        for t in threads:
            t.start()
        self._wait(threads)
        threads[0].join(STUCK_SOURCE_S)
        self.stats.dropped = self.inbox.dropped
        self.stats.seconds = (self.last_output or time.perf_counter()) - self.start
        self.stats.stage_ms = {stage: {k: 1000 * v for k, v in _percentiles(t, {"median": 50, "p95": 95}).items()}
                               for stage, t in self.times.items() if len(t)}
        self.stats.latency_ms = {k: 1000 * v for k, v in
                                 _percentiles(self.latency, {"p50": 50, "p95": 95, "p99": 99}).items()}
        if self.errors:
            raise self.errors[0]
        return self.stats


def run_pipeline(frames: Iterable[np.ndarray], segmenter: Segmenter, render: Render, sink: Sink | None = None,
                 **options: Any) -> StreamStats:
    """Segment a stream of frames through the three overlapped stages.

    Args:
        frames: H x W x 3 uint8 pictures (a ``aticnet.inference.video.VideoSource``'s ``frames``, or any
            iterator; closed at the end when it has ``close``).
        segmenter: any loaded model (any backend; its ``infer_scale`` unless ``infer_scale`` is given).
        render: (frame, H x W labels) -> the H x W x 3 (or H x W) picture for the sink.
        sink: where the pictures go (``write(picture, timestamp)``, ``close()``); None: nowhere (measuring).
        **options: ``policy`` ("live": newest frame wins; "file": every frame), ``name``, ``batch_size``
            (file policy), ``infer_scale``, ``max_frames``, ``on_output`` (called with each frame written).
    Returns:
        The ``StreamStats`` (frames_in == frames_out + dropped, unless a stage failed or a second Ctrl-C
        skipped the frames in flight).
    """
    return Pipeline(frames, segmenter, render, sink, **options).run()
