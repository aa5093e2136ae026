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
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError

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


class SeededSamples(Dataset):
    """Wraps a data set: item (index, seed) is ``dataset[index]`` under ``torch.manual_seed(seed)``.

    A sample that cannot be read is logged and returned as None (the batch is made of the
    others) unless ``strict``.
    """

    def __init__(self, dataset: Dataset, *, strict: bool = False) -> None:
        self.dataset, self.strict = dataset, strict

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            except DataError as e:
                if self.strict:
                    raise
                log.warning("skipped unreadable sample: %s", e)
                return None


def collate_skipping(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack (image, label) pairs, leaving out the unreadable ones; returns (images, labels, skipped)."""
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images, labels = zip(*good)
    return torch.stack(images), torch.stack(labels), skipped


def train_loader(
    dataset: Dataset, batch_size: int, *, seed: int, rank: int, world_size: int, start_step: int, workers: int, strict: bool
) -> DataLoader:
    """The endless, resumable training loader of one rank (``batch_size`` is the global batch)."""
    sampler = StreamSampler(len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size, start_step=start_step)
    return DataLoader(
        SeededSamples(dataset, strict=strict),
        batch_size=batch_size // world_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skipping,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        # Its own generator: creating the iterator must not consume the global RNG.
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=2 if workers > 0 else None,
    )


def eval_loader(dataset: Dataset, *, rank: int = 0, world_size: int = 1, workers: int = 2, max_images: int | None = None):
    """Batch-1 loader over this rank's share of the data set (no padding, no duplicates)."""
    indices = list(range(len(dataset)))[:max_images][rank::world_size]
    # Its own generator: worker seeding must not consume the global RNG (dropout, exact resume).
    return DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=1, num_workers=workers, generator=torch.Generator())
