"""Decoded training frames, kept so that no training step decodes a file: ``--cache memory`` and ``--cache device``.

A CPU core decodes a 1024x2048 PNG pair more slowly than a GPU trains on it. With ``--cache memory`` the data
set's frames and labels are decoded once into one file of uint8 pixels (``CACHE_DIR/KEY.frames``, indexed by
``KEY.json``) that every loader process memory-maps: the operating system keeps one copy in its page cache for
all of them, and ``dataset.read(i)`` copies a frame out of it instead of decoding two files. The batches are
exactly those of ``--cache none`` (the same pixels through the same transform under the same seeds). KEY hashes
the samples' paths, sizes, modification times and label tables, so an unchanged data set reuses its file and
a changed one builds another.

With ``--cache device`` the frames go on from that file to the training device
([`DeviceFrames`][aticnet.data.cache.DeviceFrames]) and
[`DeviceBatches`][aticnet.data.cache.DeviceBatches] makes every batch there: each sample's random choices
drawn from its own seed, then colour jitter, rescale, crop, flip and normalisation by the device
([`augment_on_device`][aticnet.data.device_augment.augment_on_device]); no loader process.

Each mode says what it needs before building and refuses, in one line, what does not fit: the decoded bytes
against the disk (the file), the host's available memory (``memory``) or the device's free memory less a
quarter of it, left for training (``device``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..utils.errors import DataError, UserError
from ..utils.io import atomic_write, file_lock, image_size, write_json
from .base import SegmentationDataset
from .loader import StreamSampler
from .transforms import TrainTransform

log = logging.getLogger(__name__)

CACHE_MODES = ("none", "memory", "device")
FORMAT = 1  # the layout of KEY.frames and KEY.json; a new layout is a new key
DEVICE_RESERVE = 0.25  # the share of a GPU's memory that --cache device leaves to training


def default_cache_dir() -> Path:
    """Where decoded frames are kept: ``$ATICNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/aticnet/frames``
    (``~/.cache/aticnet/frames``)."""
    if os.environ.get("ATICNET_CACHE_DIR"):
        return Path(os.environ["ATICNET_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "aticnet" / "frames"


def gib(n: float) -> str:
    """A byte count for people: "1.27 GiB", "310.0 MiB", "27 KiB"."""
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def host_memory_available() -> int:
    """Bytes of memory the host can give without swapping (Linux: MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def decoded_bytes(dataset: SegmentationDataset) -> int:
    """Bytes of the data set's frames and labels decoded (4 per pixel: RGB and a label), from the files' headers;
    a frame whose header cannot be read counts nothing (it is left out of training as unreadable)."""
    total = 0
    for image, _ in dataset.samples:
        try:
            height, width = image_size(image)
        except DataError:
            continue
        total += 4 * height * width
    return total


def dataset_key(dataset: SegmentationDataset) -> str:
    """A hash of what the decoded frames depend on: the data set's kind, every sample's files (path, size,
    modification time) in order, and the label table that maps each label file's values."""
    digest = hashlib.sha256(f"aticnet frames {FORMAT} {type(dataset).__name__}\n".encode())
    for image, label in dataset.samples:
        for path in (image, label):
            try:
                st = path.stat()
                stamp = f"{st.st_size} {st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            digest.update(f"{path.resolve()} {stamp}\n".encode())
        digest.update(dataset.lut_for(label).numpy().tobytes())
    return digest.hexdigest()[:24]


class DecodedFrames:
    """A data set's decoded pairs in one memory-mapped file: ``read(i)`` gives what the data set's ``read(i)``
    gives (or raises its DataError), with nothing decoded.

    Pickles as its path and index: a loader process maps the file itself, sharing the page cache.
    """

    def __init__(self, path: Path, index: dict[str, Any]) -> None:
        self.path = Path(path)
        self.entries: list[dict[str, Any]] = index["frames"]  # offset, height, width; or error: [path, problem]
        self.nbytes = int(index["bytes"])
        self._pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pixels": None}

    def pixels(self) -> np.ndarray:
        """The whole file as a flat uint8 array, mapped on first use."""
        if self._pixels is None:
            empty = self.nbytes == 0  # every sample unreadable: nothing to map
            self._pixels = np.empty(0, np.uint8) if empty else np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._pixels

    def error(self, i: int) -> DataError | None:
        """The error reading sample ``i`` gave when the frames were decoded, or None."""
        entry = self.entries[i]
        return DataError(*entry["error"]) if "error" in entry else None

    def read(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair ``i``: (3 x H x W uint8 image, H x W uint8 train ids or 255), copied out of the mapped file."""
        entry = self.entries[i]
        if "error" in entry:
            raise DataError(*entry["error"])
        offset, height, width = entry["offset"], entry["height"], entry["width"]
        area = height * width
        pair = torch.from_numpy(np.array(self.pixels()[offset : offset + 4 * area]))
        return pair[: 3 * area].view(3, height, width), pair[3 * area :].view(height, width)


class _Reads(Dataset):
    """``dataset.read(i)`` (no transform), or its DataError returned instead of raised."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | DataError:
        try:
            return self.dataset.read(i)
        except DataError as e:
            return e


def _as_is(item: Any) -> Any:
    return item


def _read_index(index_path: Path, data_path: Path) -> dict[str, Any] | None:
    """The index of a complete build (its file as long as it says), or None."""
    try:
        index = json.loads(index_path.read_text())
        if index.get("format") == FORMAT and data_path.stat().st_size == index["bytes"]:
            return index
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    return None


def _decode_all(dataset: SegmentationDataset, data_path: Path, workers: int) -> dict[str, Any]:
    """Decode every pair (in ``workers`` processes) into ``data_path``, in order; returns the index."""
    # its own generator: the processes' seeds must not come from the global RNG (the weights' init follows)
    loader = DataLoader(_Reads(dataset), batch_size=None, num_workers=workers, collate_fn=_as_is,
                        generator=torch.Generator())
    entries: list[dict[str, Any]] = []

    def write(tmp: str) -> None:
        offset = 0
        with open(tmp, "wb") as f:
            for item in tqdm(loader, total=len(dataset), desc="decoding frames", unit="frame", leave=False):
                if isinstance(item, DataError):
                    entries.append({"error": [str(item.path), item.problem]})
                    continue
                image, label = item
                f.write(image.numpy().tobytes())
                f.write(label.numpy().tobytes())
                entries.append({"offset": offset, "height": image.shape[1], "width": image.shape[2]})
                offset += 4 * image.shape[1] * image.shape[2]

    atomic_write(data_path, write)
    size = data_path.stat().st_size
    return {"format": FORMAT, "dataset": repr(dataset), "bytes": size, "frames": entries}


def check_fits(need: int, mode: str, device: torch.device, where: str) -> None:
    """Refuse, in one line, decoded frames that do not fit where ``mode`` keeps them."""
    if mode == "device" and device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        room = free - DEVICE_RESERVE * total
        if need > room:
            raise UserError(f"{where}: --cache device needs {gib(need)} on {device} for the decoded frames; it has "
                            f"{gib(free)} free, of which a quarter of its memory is left to training "
                            "(--cache memory keeps them in the host's memory instead)")
        return
    available = host_memory_available()
    if need > available:
        raise UserError(f"{where}: --cache {mode} needs {gib(need)} of memory for the decoded frames; the host has "
                        f"{gib(available)} available (--cache none decodes each sample instead)")


def open_frames(dataset: SegmentationDataset, mode: str, *, device: torch.device | str = "cpu",
                folder: str | Path | None = None, workers: int = 2,
                say: Callable[[str], None] = log.info) -> DecodedFrames:
    """The data set's decoded frames: reused from ``folder`` while the data set is unchanged, else decoded once.

    Args:
        dataset: the training set (its samples and label tables; its transform plays no part).
        mode: "memory" or "device": where the frames are to be kept, for the memory check.
        device: the training device (``device`` mode checks its free memory).
        folder: where the frames file lives (default: ``default_cache_dir()``).
        workers: processes that decode a new build.
        say: where the line saying what is needed (and whether it is reused) goes.

    Returns:
        The frames, to set as ``dataset.decoded`` (or to put on the device with ``DeviceFrames``).

    Raises:
        UserError: the frames do not fit the disk, the host's memory or the device.
    """
    folder = Path(folder) if folder else default_cache_dir()
    device = torch.device(device)
    key = dataset_key(dataset)
    index_path, data_path = folder / f"{key}.json", folder / f"{key}.frames"
    where = str(dataset.root)
    with file_lock(folder / f".{key}.lock"):
        index = _read_index(index_path, data_path)
        if index is not None:
            say(f"--cache {mode}: {len(dataset)} decoded frames of {where}, {gib(index['bytes'])}, from {data_path}")
            check_fits(index["bytes"], mode, device, where)
            return DecodedFrames(data_path, index)
        need = decoded_bytes(dataset)
        say(f"--cache {mode}: decoding {len(dataset)} frames of {where} once: {gib(need)} into {data_path}")
        check_fits(need, mode, device, where)
        free = shutil.disk_usage(folder).free
        if need > free:
            raise UserError(f"{folder}: --cache needs {gib(need)} of disk for the decoded frames and {gib(free)} are "
                            "free (--cache-dir names another folder)")
        index = _decode_all(dataset, data_path, workers)
        write_json(index_path, index)
    return DecodedFrames(data_path, index)


class DeviceFrames:
    """Every readable frame of a [`DecodedFrames`][aticnet.data.cache.DecodedFrames] resident on one device:
    one N x 3 x H x W uint8 tensor and one N x H x W label tensor when the frames share a size, one tensor each
    otherwise. ``errors`` keeps the unreadable samples' errors, by index."""

    def __init__(self, frames: DecodedFrames, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.errors = {i: e for i in range(len(frames)) if (e := frames.error(i)) is not None}
        readable = [i for i in range(len(frames)) if i not in self.errors]
        self.slot = {i: j for j, i in enumerate(readable)}
        shapes = {(frames.entries[i]["height"], frames.entries[i]["width"]) for i in readable}
        self.images: torch.Tensor | list[torch.Tensor]
        self.labels: torch.Tensor | list[torch.Tensor]
        if len(shapes) == 1:
            (height, width), n = shapes.pop(), len(readable)
            self.images = torch.empty((n, 3, height, width), dtype=torch.uint8, device=self.device)
            self.labels = torch.empty((n, height, width), dtype=torch.uint8, device=self.device)
            for j, i in enumerate(readable):
                image, label = frames.read(i)
                self.images[j].copy_(image)
                self.labels[j].copy_(label)
        else:
            pairs = [frames.read(i) for i in readable]
            self.images = [image.to(self.device) for image, _ in pairs]
            self.labels = [label.to(self.device) for _, label in pairs]

    def frame(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``i`` on the device: (3 x H x W uint8 image, H x W uint8 label), views, nothing copied."""
        j = self.slot[i]
        return self.images[j], self.labels[j]


class DeviceBatches:
    """The training batches of one process under ``--cache device``, as the loader's collation gives them:
    (frames, labels, N x ``Draws.WIDTH`` draws, unreadable samples' errors), the frames being views of
    [`DeviceFrames`][aticnet.data.cache.DeviceFrames]; an all-unreadable batch is (empty, empty, errors).

    The positions and seeds are the loader's ([`StreamSampler`][aticnet.data.loader.StreamSampler]), and each
    sample's draws come from its seed as in the loader's processes, so the choices equal those of any other
    mode: only the resize rounding of the device differs from the CPU's.
    """

    def __init__(self, frames: DeviceFrames, transform: TrainTransform, sampler: StreamSampler) -> None:
        self.frames, self.transform, self.sampler = frames, transform, sampler

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        pairs = iter(self.sampler)
        while True:
            images, labels, rows, errors = [], [], [], []
            for _ in range(self.sampler.per_rank):
                index, seed = next(pairs)
                if index in self.frames.errors:
                    errors.append(self.frames.errors[index])
                    continue
                image, label = self.frames.frame(index)
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(seed)
                    rows.append(self.transform.draw(*image.shape[-2:]).to_row())
                images.append(image)
                labels.append(label)
            if not rows:
                yield torch.empty(0), torch.empty(0, dtype=torch.long), errors
            else:
                yield images, labels, torch.stack(rows), errors
