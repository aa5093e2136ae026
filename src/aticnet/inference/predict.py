"""Segmenting images, folders and videos with trained weights (``aticnet predict``).

Inputs are image files, folders (searched recursively for image files) and videos
(.mp4, .avi, .mov, .mkv; decoded and written with PyAV, ``pip install av``). Each output
keeps its input's size and its path relative to the folder it was found in (a file given
directly lands at the top of ``--out``), with a ``.png`` suffix.

Formats:

* ``trainid``: one-channel PNG of train ids (0..K-1), the model's own classes.
* ``labelid``: one-channel PNG of Cityscapes label ids (19-class Cityscapes models only).
* ``color``: RGB PNG in the classes' colours.
* ``overlay``: the image with the colours blended over it (``--alpha``).
* ``cityscapes``: label-id PNGs named ``{city}_{seq}_{frame}_pred.png`` (from inputs named
  like ``aachen_000000_000019_leftImg8bit.png``), in the input's city folder: what the
  official evaluator, the benchmark server and ``aticnet evaluate --predictions`` read.

A video becomes a video (``overlay`` or ``color``, same container, H.264 or MPEG-4) or,
for ``trainid`` and ``labelid``, a folder of per-frame PNGs; it runs through the pipeline of
``pipeline`` with its file policy (decoding, inference and encoding overlap; every frame is kept;
Ctrl-C closes the output, which stays playable). Same-size images run in
batches of ``--batch-size``; a progress bar runs and the throughput is printed at the end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..utils.errors import DataError, UserError
from ..utils.io import IMAGE_EXTENSIONS, image_size, read_image
from .images import group_by_size
from .pipeline import run_pipeline
from .segmenter import Segmenter
from .video import VIDEO_EXTENSIONS, VideoWriter, open_source, video_frame_count

FORMATS = ("trainid", "labelid", "color", "overlay", "cityscapes")
CITYSCAPES_NAME = re.compile(r"^([a-z_]+?)_(\d{6})_(\d{6})")  # {city}_{seq}_{frame}


@dataclass
class Item:
    source: Path  # the input file
    rel: Path  # its path relative to the folder it was found in


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Item], list[Item]]:
    """(images, videos) named by ``inputs``: files, or folders searched recursively."""
    images: list[Item] = []
    videos: list[Item] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
            if not found:
                raise UserError(f"{path}: no images or videos in this folder ({', '.join(IMAGE_EXTENSIONS)})")
            for p in found:
                (videos if p.suffix.lower() in VIDEO_EXTENSIONS else images).append(Item(p, p.relative_to(path)))
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix in VIDEO_EXTENSIONS:
                videos.append(Item(path, Path(path.name)))
            elif suffix in IMAGE_EXTENSIONS:
                images.append(Item(path, Path(path.name)))
            else:
                raise UserError(f"{path}: not an image or a video (extensions: "
                                f"{', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
        else:
            raise UserError(f"{path}: no such file or folder")
    return images, videos


def cityscapes_name(path: Path) -> str:
    """``aachen_000000_000019_leftImg8bit.png`` -> ``aachen_000000_000019_pred.png``."""
    match = CITYSCAPES_NAME.match(path.name)
    if not match:
        raise DataError(path, "--format cityscapes needs Cityscapes names like aachen_000000_000019_leftImg8bit.png")
    return f"{match.group(1)}_{match.group(2)}_{match.group(3)}_pred.png"


def output_path(out: Path, rel: Path, fmt: str) -> Path:
    if fmt == "cityscapes":
        return out / rel.parent / cityscapes_name(rel)
    return out / rel.with_suffix(".png")


class Renderer:
    """Train ids -> the picture a format asks for (H x W or H x W x 3 uint8)."""

    def __init__(self, segmenter: Segmenter, fmt: str, alpha: float, source: str) -> None:
        self.segmenter, self.fmt, self.alpha = segmenter, fmt, alpha
        self.lut: np.ndarray | None = None
        if fmt in ("labelid", "cityscapes"):
            from ..data.cityscapes_labels import CLASS_NAMES, train_id_to_label_id_lut

            if segmenter.num_classes != len(CLASS_NAMES):
                raise UserError(f"{source}: --format {fmt} maps the {len(CLASS_NAMES)} Cityscapes train ids to label ids; "
                                f"this model predicts {segmenter.num_classes} classes (use trainid, color or overlay)")
            self.lut = train_id_to_label_id_lut().numpy()

    def __call__(self, image: np.ndarray, labels: Tensor) -> np.ndarray:
        labels_np = labels.numpy()
        if self.fmt == "trainid":
            return labels_np.astype(np.uint8) if self.segmenter.num_classes <= 256 else labels_np.astype(np.uint16)
        if self.lut is not None:
            return self.lut[labels_np]
        if self.fmt == "color":
            return self.segmenter.colorize(labels_np)
        return self.segmenter.overlay(image, labels_np, self.alpha)


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ----------------------------------------------------------------------------- images and videos to files
def predict_files(
    segmenter: Segmenter,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    fmt: str = "trainid",
    batch_size: int = 4,
    alpha: float = 0.5,
    progress: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Segment every input into ``out``; returns {"images", "frames", "seconds", "outputs"}."""
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = Path(out)
    images, videos = collect_inputs(inputs)
    render = Renderer(segmenter, fmt, alpha, segmenter.source)
    if fmt == "cityscapes" and videos:
        raise UserError(f"{videos[0].source}: --format cityscapes is for Cityscapes images, not video")

    # Every output path first: clashes and bad names fail before any work.
    targets: dict[Path, Path] = {}
    jobs: list[tuple[Item, Path]] = []
    for item in images + videos:
        is_video = item.source.suffix.lower() in VIDEO_EXTENSIONS
        if is_video:
            target = out / (item.rel if fmt in ("color", "overlay") else item.rel.with_suffix(""))
        else:
            target = output_path(out, item.rel, fmt)
        if target in targets:
            raise UserError(f"{item.source} and {targets[target]} would both be written to {target}; "
                            "give their folders separately or rename one")
        targets[target] = item.source
        jobs.append((item, target))
    image_jobs = jobs[: len(images)]
    video_jobs = jobs[len(images) :]
    sizes = [image_size(item.source) for item, _ in image_jobs]
    frame_counts = [video_frame_count(item.source) for item, _ in video_jobs]

    bar = tqdm(total=len(images) + sum(frame_counts), unit="img", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    done_images = done_frames = 0
    outputs: list[str] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: list[Future] = []
        batches = group_by_size(sizes, batch_size)
        read = lambda idx: [read_image(image_jobs[i][0].source).permute(1, 2, 0).numpy() for i in idx]  # noqa: E731
        next_read = pool.submit(read, batches[0]) if batches else None
        for b, idx in enumerate(batches):
            pixels = next_read.result()
            next_read = pool.submit(read, batches[b + 1]) if b + 1 < len(batches) else None
            for i, img in zip(idx, pixels):
                if img.shape[:2] != sizes[i]:  # EXIF-rotated or otherwise odd files
                    raise DataError(image_jobs[i][0].source, f"decoded as {img.shape[:2]}, header says {sizes[i]}")
            labels = segmenter.predict_batch(pixels, batch_size=len(pixels))
            for i, img, lab in zip(idx, pixels, labels):
                target = image_jobs[i][1]
                pending.append(pool.submit(write_png, target, render(img, lab)))
                outputs.append(str(target))
            done_images += len(idx)
            bar.update(len(idx))
            for f in [f for f in pending if f.done()]:
                f.result()  # a failed write stops the run here
                pending.remove(f)
        for f in pending:
            f.result()
        for (item, target), _ in zip(video_jobs, frame_counts):
            done_frames += _predict_video(segmenter, item.source, target, fmt, render, batch_size, bar)
            outputs.append(str(target))
    bar.close()
    seconds = time.perf_counter() - start
    total = done_images + done_frames
    what = f"{done_images} images" + (f" and {done_frames} video frames" if videos else "")
    log(f"{what} in {seconds:.1f} s ({total / max(seconds, 1e-9):.2f} images/s, {segmenter.backend} on "
        f"{segmenter.device}) -> {out}/")
    return {"images": done_images, "frames": done_frames, "seconds": seconds, "outputs": outputs}


class PngFolder:
    """A sink writing each picture as ``{index:06d}.png`` in a folder (a video's trainid or labelid frames)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0

    def write(self, picture: np.ndarray, timestamp: float | None = None) -> None:
        write_png(self.folder / f"{self.count:06d}.png", picture)
        self.count += 1

    def close(self) -> None:
        """Nothing to finish: every PNG is complete when written."""


def _predict_video(segmenter: Segmenter, source: Path, target: Path, fmt: str, render: Renderer, batch_size: int,
                   bar: Any) -> int:
    """One video through the pipeline's file policy (every frame kept, decode/infer/encode overlapped)."""
    video = open_source(source, live=False)
    try:
        sink = VideoWriter(target, video.rate) if fmt in ("color", "overlay") else PngFolder(target)
    except BaseException:
        video.close()
        raise
    stats = run_pipeline(video.frames, segmenter, lambda frame, labels: render(frame.image, labels), sink,
                         policy="file", name=str(source), batch_size=batch_size, on_output=lambda _: bar.update(1))
    if stats.interrupted:  # the file is closed and playable; the run itself stops here
        raise KeyboardInterrupt
    if stats.frames_out == 0:
        raise DataError(source, "the video has no frames")
    return stats.frames_out
