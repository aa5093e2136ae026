"""Label maps as pictures: class colours, and colours blended over the image.

Both run once per frame in a live stream, so they work in uint8/uint16 with ``np.take`` lookups rather than
float arithmetic and fancy indexing (``python benchmarks/stream.py`` times the stage they run in).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..utils.errors import UserError

Palette = Sequence[Sequence[int]]
ALPHA_STEPS = 256  # the overlay's opacity in 1/256 steps: the blend stays in 16-bit integers


def as_numpy(x: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _ids(labels: Any) -> np.ndarray:
    """H x W class ids as uint8, an id outside 0..255 as 255 (ignore)."""
    labels = as_numpy(labels)
    if labels.dtype == np.uint8:
        return labels
    return np.where((labels >= 0) & (labels <= 255), labels, 255).astype(np.uint8)


def _table(palette: Palette, fill: Sequence[int]) -> np.ndarray:
    """256 x 3 uint8: the palette's colours, then ``fill`` for every id past it."""
    table = np.empty((256, 3), dtype=np.uint8)
    table[:] = fill
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return table


def colorize(labels: Any, palette: Palette, ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Class ids drawn as colours: a colour mask.

    Examples:
        >>> import aticnet
        >>> m = aticnet.load("aticnet-camvid")
        >>> mask = aticnet.colorize(m.predict("street.png"), m.colors)     # what m.colorize(labels) gives

    Args:
        labels: H x W class ids (a torch tensor or a numpy array).
        palette: one RGB triple per class, in class-id order (a segmenter's ``colors``).
        ignore_color: the RGB colour of ids outside the palette (255, ignore, among them).

    Returns:
        An H x W x 3 uint8 RGB numpy array.
    """
    return np.take(_table(palette, ignore_color), _ids(labels), axis=0)


def overlay(image: Any, labels: Any, palette: Palette, alpha: float = 0.5) -> np.ndarray:
    """The class colours blended over the image; pixels of ids outside the palette stay as they are.

    Each pixel is ``(1 - alpha) * image + alpha * colour``, rounded, with ``alpha`` taken in 1/256 steps (within
    one level of the float blend).

    Args:
        image: H x W x 3 (or 3 x H x W) uint8 RGB, a numpy array or a torch tensor.
        labels: its H x W class ids.
        palette: one RGB triple per class, in class-id order (a segmenter's ``colors``).
        alpha: the colours' opacity, 0 to 1 (1: the colours alone).

    Returns:
        An H x W x 3 uint8 RGB numpy array.

    Raises:
        UserError: ``alpha`` is outside 0 to 1.
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"the overlay opacity (alpha) must be between 0 and 1, not {alpha}")
    image = as_numpy(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    ids = _ids(labels)
    weight = round(alpha * ALPHA_STEPS)
    # colour * weight + half a step, per id: what is added to image * (256 - weight) before the shift rounds
    colors = _table(palette, (0, 0, 0)).astype(np.uint16) * weight + ALPHA_STEPS // 2
    mixed = image.astype(np.uint16)
    mixed *= ALPHA_STEPS - weight
    mixed += np.take(colors, ids, axis=0)
    mixed >>= 8
    out = mixed.astype(np.uint8)
    if len(palette) < 256 and ids.max(initial=0) >= len(palette):
        np.copyto(out, image, where=(ids >= len(palette))[..., None])
    return out
