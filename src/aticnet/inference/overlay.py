"""Label maps as pictures: class colours, and colours blended over the image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Palette = Sequence[Sequence[int]]


def as_numpy(x: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def colorize(labels: Any, palette: Palette, ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Class ids as colours.

    Args:
        labels: H x W class ids (tensor or array); ids outside the palette (255: ignore) get ``ignore_color``.
        palette: one RGB triple per class.
    Returns:
        H x W x 3 uint8.
    """
    labels = as_numpy(labels).astype(np.int64)
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:] = ignore_color
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return table[np.clip(labels, 0, 255)]


def overlay(image: Any, labels: Any, palette: Palette, alpha: float = 0.5) -> np.ndarray:
    """The class colours blended over the image; pixels of ids outside the palette stay as they are.

    Args:
        image: H x W x 3 (or 3 x H x W) uint8. labels: H x W class ids. palette: one RGB triple per class.
        alpha: the colours' opacity (1: the colours alone).
    Returns:
        H x W x 3 uint8.
    """
    image = as_numpy(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    labels_np = as_numpy(labels)
    colors = colorize(labels_np, palette).astype(np.float32)
    mixed = (1 - alpha) * image.astype(np.float32) + alpha * colors
    keep = (labels_np >= len(palette))[..., None]
    return np.where(keep, image, mixed.round()).astype(np.uint8)


