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
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError, UserError
from ..faults import all_agree

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
    """``dataset[i]``, or the :class:`DataError` of an unreadable sample, returned instead of raised.

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
    """Item (index, seed) is ``dataset[index]`` (or its DataError) under ``torch.manual_seed(seed)``."""

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return super().__getitem__(index)


def collate_skipping(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[DataError]]:
    """Stack (image, label) pairs, leaving out the unreadable ones; returns (images, labels, their errors)."""
    good = [b for b in batch if not isinstance(b, DataError)]
    errors = [b for b in batch if isinstance(b, DataError)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), errors
    images, labels = zip(*good)
    return torch.stack(images), torch.stack(labels), errors


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
    out; :class:`TrainStream` decides what to do with them.
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
    """The training batches as ``train`` takes them, one call per step.

    Unreadable samples are left out and counted (``strict`` raises the first instead). A step
    whose batch has nothing readable on some process is skipped by every process (they must
    agree, or the gradient all-reduce would wait forever); two epochs of such steps in a row
    mean no sample is readable, and stop the run.
    """

    def __init__(self, loader: DataLoader, *, strict: bool, epoch_steps: int, device: torch.device, where: str) -> None:
        self.batches = iter(loader)
        self.strict, self.epoch_steps, self.device, self.where = strict, epoch_steps, device, where
        self.skipped = 0  # unreadable samples since the caller last reset it
        self.empty_in_a_row = 0

    def next(self, stop_requested: Callable[[], bool]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The next (images, labels) on ``device``; None for a step to skip, or when a stop signal ended the workers."""
        try:
            images, labels, errors = next(self.batches)
        except RuntimeError:
            if not stop_requested():
                raise
            return None  # the signal went to the whole process group and ended the loader's workers too
        self.skipped += handle_unreadable(errors, self.strict)
        if not all_agree(images.shape[0] > 0, self.device):
            self.empty_in_a_row += 1
            if self.empty_in_a_row >= 2 * self.epoch_steps:
                raise UserError(f"{self.where}: {self.empty_in_a_row} batches in a row had no readable sample "
                                "(see the warnings above; aticnet check-data lists every bad file)")
            return None
        self.empty_in_a_row = 0
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


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
    strict: bool = True,
) -> EvalLoader:
    """Batch-1 loader over this rank's share of the data set (no padding, no duplicates)."""
    indices = list(range(len(dataset)))[:max_images][rank::world_size]
    # Its own generator: worker seeding must not consume the global RNG (dropout, exact resume).
    loader = DataLoader(torch.utils.data.Subset(Guarded(dataset), indices), batch_size=1, num_workers=workers,
                        collate_fn=collate_skipping, generator=torch.Generator(),
                        worker_init_fn=_ignore_stop_signals if workers > 0 else None)
    return EvalLoader(loader, strict)
