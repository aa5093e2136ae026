"""What ``predict`` takes as an image, and the small helpers of batching and resizing it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..utils.errors import UserError
from ..utils.io import read_image


def to_image_tensor(image: Any) -> Tensor:
    """Any accepted image -> 3 x H x W tensor, uint8 (0..255) or float32 (0..1), on the CPU."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if type(image).__module__.startswith("PIL."):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise UserError(f"an image array must be H x W x 3 (RGB), not {'x'.join(map(str, image.shape))}")
        image = np.ascontiguousarray(image[..., :3])
        image = torch.from_numpy(image if image.flags.writeable else image.copy()).permute(2, 0, 1)
    if not isinstance(image, Tensor):
        raise UserError(f"cannot read an image from a {type(image).__name__}: give a path, a PIL image, "
                        "an H x W x 3 uint8 array or a 3 x H x W tensor")
    if image.ndim == 3 and image.shape[0] != 3 and image.shape[-1] == 3:
        image = image.permute(2, 0, 1)
    if image.ndim != 3 or image.shape[0] != 3:
        raise UserError(f"an image tensor must be 3 x H x W, not {'x'.join(map(str, image.shape))}")
    if image.dtype == torch.uint8:
        return image.cpu()
    if image.is_floating_point():
        return image.detach().float().cpu()
    raise UserError(f"an image tensor must be uint8 or float in [0, 1], not {image.dtype}")


def as_float(images: Sequence[Tensor]) -> Tensor:
    """Same-size 3 x H x W images -> N x 3 x H x W float in [0, 1]."""
    return torch.stack([im.float() / 255 if im.dtype == torch.uint8 else im.float() for im in images])


def group_by_size(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size`` same-size images (first-seen size order)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, size in enumerate(sizes):
        groups[tuple(size)].append(i)
    step = max(1, batch_size)
    return [idx[k : k + step] for idx in groups.values() for k in range(0, len(idx), step)]


def default_palette(n: int) -> list[list[int]]:
    """The Cityscapes colours for 19 classes, otherwise distinct generated colours."""
    from ..data.cityscapes_labels import CLASS_COLORS

    if n <= len(CLASS_COLORS):
        return [list(c) for c in CLASS_COLORS[:n]]
    rng = np.random.default_rng(0)
    return [list(c) for c in CLASS_COLORS] + rng.integers(0, 256, (n - len(CLASS_COLORS), 3)).tolist()


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """(H, W) times ``scale``, rounded, at least 1 pixel."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
