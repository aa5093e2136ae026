"""Loaders whose order and augmentation depend only on (seed, position): exact resume.

The training stream is an endless sequence of positions 0, 1, 2, ...; position p lies in
epoch p // n and picks the sample ``perm_epoch[p % n]`` of a permutation seeded by
(seed, epoch). Every sample is augmented under its own seed, derived from (seed, p), so
the data a step sees depends on neither the number of workers nor on when the run was
stopped and resumed. Step s of a run with global batch B reads positions [sB, (s+1)B),
and rank r of W takes the r-th contiguous share of them.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..utils.errors import DataError, UserError
from .transforms import normalize_uint8

log = logging.getLogger(__name__)


def sample_seed(seed: int, position: int) -> int:
    return (seed * 1_000_003 + position) % (2**63)


class StreamSampler(Sampler[tuple[int, int]]):
    """Endless (index, augmentation seed) pairs for one rank, starting at ``start_step``."""

    def __init__(self, size: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1, start_step: int = 0):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must divide among {world_size} processes")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.per_rank, self.start_step = rank, batch_size // world_size, start_step
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch) ^ 0x5EED)
            self._perm, self._perm_epoch = torch.randperm(self.size, generator=g), epoch
        return self._perm

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        while True:
            first = step * self.batch_size + self.rank * self.per_rank
            for p in range(first, first + self.per_rank):
                epoch, offset = divmod(p, self.size)
                yield int(self.permutation(epoch)[offset]), sample_seed(self.seed, p)
            step += 1


class Guarded(Dataset):
    """``dataset[i]``, or the ``DataError`` of an unreadable sample, returned instead of raised.

    In a worker process a raised error would reach the main process as a RuntimeError holding a
    traceback; the main process decides instead (skip and log, or stop when strict).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except DataError as e:
            return e


class SeededSamples(Guarded):
    """Item (index, seed) is ``dataset[index]`` (or its DataError) with the CPU generator seeded by ``seed``.

    Only the CPU generator is seeded and restored afterwards (``torch.manual_seed`` would reseed every CUDA
    generator too, so dropout on the GPU would repeat with the samples): the transforms draw on the CPU, and
    the training process's own random streams go on as if no sample had been read."""

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return super().__getitem__(index)


def collate_skipping(batch: list) -> tuple[torch.Tensor, ...]:
    """Stack the samples' tensors column by column ((image, label), or (image, label, draws) for augmentation on the
    GPU), leaving out the unreadable samples; returns (images, labels[, draws], their errors)."""
    good = [b for b in batch if not isinstance(b, DataError)]
    errors = [b for b in batch if isinstance(b, DataError)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), errors
    return (*(torch.stack(column) for column in zip(*good)), errors)


def handle_unreadable(errors: list[DataError], strict: bool) -> int:
    """In the main process: raise the first error when ``strict``, else log each; returns how many."""
    if errors and strict:
        raise errors[0]
    for e in errors:
        log.warning("skipped unreadable sample: %s", e)
    return len(errors)


def _ignore_stop_signals(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: a worker leaves SIGINT to the main process, which
    # checkpoints and then shuts the workers down. SIGTERM (also how the main process ends a
    # worker) exits cleanly: a worker killed by a signal would make the main process raise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))


def train_loader(
    dataset: Dataset, batch_size: int, *, seed: int, rank: int, world_size: int, start_step: int, workers: int
) -> DataLoader:
    """The endless, resumable training loader of one rank (``batch_size`` is the global batch).

    It yields ``(images, labels, errors)``: ``errors`` are the batch's unreadable samples, left
    out; ``TrainStream`` decides what to do with them.
    """
    sampler = StreamSampler(len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size, start_step=start_step)
    return DataLoader(
        SeededSamples(dataset),
        batch_size=batch_size // world_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skipping,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        # Its own generator: creating the iterator must not consume the global RNG.
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=_ignore_stop_signals,
    )


class TrainStream:
    """The training batches as ``train`` takes them, one call per step, read one batch ahead.

    Unreadable samples are left out and counted (``strict`` raises the first instead). Whether a batch has
    anything readable is known here before the step that uses it, so the trainer agrees with the other
    processes on it in the reduction it makes anyway (every process must skip the same steps, or the
    gradient all-reduce would wait forever); two epochs of empty batches in a row mean no sample is
    readable, and stop the run. With ``uint8`` the images travel as bytes and are normalised on ``device``
    (a quarter of the bytes over the bus to a GPU). ``loader`` is the training loader, or the batches made on the
    device from cached frames ([`DeviceBatches`][aticnet.data.cache.DeviceBatches]).
    """

    def __init__(self, loader: Iterable[tuple[Any, ...]], *, strict: bool, epoch_steps: int, device: torch.device, where: str,
                 normalize: tuple[torch.Tensor, torch.Tensor] | None = None, crop: tuple[int, int] | None = None) -> None:
        self.batches = iter(loader)
        self.strict, self.epoch_steps, self.device, self.where = strict, epoch_steps, device, where
        self.skipped = 0  # unreadable samples since the caller last reset it
        self.empty_in_a_row = 0
        self.normalize = None if normalize is None else tuple(t.to(device).view(1, -1, 1, 1) for t in normalize)
        self.crop = crop  # the crop of augmentation on the device, when the loader only draws

    def fetch(self, stop_requested: Callable[[], bool]) -> tuple[torch.Tensor, ...] | None:
        """The next batch as loaded on this process ((images, labels) or (images, labels, draws); maybe 0 images),
        or None when a stop signal ended the loader's workers."""
        try:
            *batch, errors = next(self.batches)
        except RuntimeError:
            if not stop_requested():
                raise
            return None  # the signal went to the whole process group and ended the loader's workers too
        self.skipped += handle_unreadable(errors, self.strict)
        return tuple(batch)

    def count_empty(self, empty_somewhere: bool) -> None:
        """Record the agreed verdict on a batch; raises after two epochs of batches with nothing readable."""
        self.empty_in_a_row = self.empty_in_a_row + 1 if empty_somewhere else 0
        if self.empty_in_a_row >= 2 * self.epoch_steps:
            raise UserError(f"{self.where}: {self.empty_in_a_row} batches in a row had no readable sample "
                            "(see the warnings above; aticnet check-data lists every bad file)")

    def to_device(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_to_device`` with this stream's device, normalisation and crop."""
        return batch_to_device(batch, self.device, self.normalize, self.crop)


def batch_to_device(batch: tuple[Any, ...], device: torch.device,
                    normalize: tuple[torch.Tensor, torch.Tensor] | None = None,
                    crop: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N x 3 x h x w images, N x h x w labels) on ``device``: float32 images (uint8 ones normalised there with
    ``normalize`` = (mean, std), each 1 x 3 x 1 x 1 on ``device``), int64 labels. A batch with draws (whole uint8
    frames: a tensor, or a list of frames of their own sizes) is augmented and cropped to ``crop`` there
    ([`augment_on_device`][aticnet.data.device_augment.augment_on_device])."""
    images, labels = (_to(batch[0], device), _to(batch[1], device))
    if len(batch) == 3:
        from .device_augment import augment_on_device

        mean, std = normalize
        return augment_on_device(images, labels, batch[2], crop, mean.flatten(), std.flatten())
    if normalize is not None and images.dtype == torch.uint8:
        images = normalize_uint8(images, *normalize)  # TrainTransform's float ops, on the device
    return images, labels


def _to(tensors: torch.Tensor | list[torch.Tensor], device: torch.device) -> torch.Tensor | list[torch.Tensor]:
    if isinstance(tensors, list):
        return [t.to(device, non_blocking=True) for t in tensors]
    return tensors.to(device, non_blocking=True)


class EvalLoader:
    """Batch-1 (image, label) pairs of one rank; an unreadable pair stops (``strict``) or is logged and
    skipped (``skipped`` counts them), decided in this process whatever the number of workers."""

    def __init__(self, loader: DataLoader, strict: bool) -> None:
        self.loader, self.strict, self.skipped = loader, strict, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, errors in self.loader:
            self.skipped += handle_unreadable(errors, self.strict)
            if images.numel():
                yield images, labels


def eval_loader(
    dataset: Dataset, *, rank: int = 0, world_size: int = 1, workers: int = 2, max_images: int | None = None,
    strict: bool = True, persistent: bool = False,
) -> EvalLoader:
    """Batch-1 loader over this rank's share of the data set (no padding, no duplicates); ``persistent`` keeps its
    worker processes between passes (a training run validates with one loader again and again)."""
    indices = list(range(len(dataset)))[:max_images][rank::world_size]
    # Its own generator: worker seeding must not consume the global RNG (dropout, exact resume).
    loader = DataLoader(torch.utils.data.Subset(Guarded(dataset), indices), batch_size=1, num_workers=workers,
                        collate_fn=collate_skipping, generator=torch.Generator(), pin_memory=torch.cuda.is_available(),
                        persistent_workers=persistent and workers > 0,
                        worker_init_fn=_ignore_stop_signals if workers > 0 else None)
    return EvalLoader(loader, strict)
