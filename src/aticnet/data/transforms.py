"""Training augmentation and evaluation preprocessing, on torchvision ``transforms.v2``.

Both take ``(image uint8 3xHxW, label uint8 HxW)`` and return ``(float32 3xhxw image
normalised with mean/std of [0, 1] pixels, int64 hxw label)``. Every random choice is drawn
from torch's global RNG, so ``torch.manual_seed(s)`` before a call fixes the output (the
loader seeds each sample this way for exact resume).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .base import IGNORE


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale_range`` (aspect ratio kept).

    Images: bilinear with antialiasing (done on uint8, torchvision's fast path). Masks:
    nearest, the pixel-centre-aligned variant so labels stay registered with the image.
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        low, high = self.scale_range
        factor = low + (high - low) * float(torch.rand(()))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            mask = inpt.as_subclass(torch.Tensor)
            resized = F.resize_image(mask.unsqueeze(0), params["size"], interpolation=InterpolationMode.NEAREST_EXACT)
            return tv_tensors.wrap(resized.reshape(resized.shape[-2:]) if mask.ndim == 2 else resized, like=inpt)
        return F.resize(inpt, params["size"], interpolation=InterpolationMode.BILINEAR, antialias=True)

    # torchvision < 0.21 calls the private names.
    _get_params = make_params
    _transform = transform


def pair_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


def normalisation(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    """uint8 image -> float32 in [0, 1] -> (x - mean) / std; masks untouched."""
    to_float = v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)
    return [to_float, v2.Normalize(mean=list(mean), std=list(std))]


def to_output(image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Plain tensors: tv_tensors must not leak into collation and the model.
    return image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor).to(torch.int64)


class TrainTransform:
    """Random scale, horizontal flip, normalise, pad (image 0, label 255) and random crop.

    ``(uint8 3xHxW, uint8 HxW) -> (float32 3xhxw, int64 hxw)`` with (h, w) = ``crop_size``.
    Padding comes after normalisation, so padded image pixels are 0 = the mean colour.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        *,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.crop_size = pair_size(crop_size)
        steps: list[v2.Transform] = [RandomScale(tuple(scale_range))]
        if flip:
            steps.append(v2.RandomHorizontalFlip(0.5))
        steps += normalisation(mean, std)
        fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE}
        steps.append(v2.RandomCrop(self.crop_size, pad_if_needed=True, fill=fill))
        self.steps = v2.Compose(steps)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return to_output(*self.steps(tv_tensors.Image(image), tv_tensors.Mask(label)))

    def __repr__(self) -> str:
        return f"TrainTransform({self.steps})"


class EvalTransform:
    """Normalise only, full resolution: ``(uint8 3xHxW, uint8 HxW) -> (float32 3xHxW, int64 HxW)``."""

    def __init__(self, *, mean: Sequence[float], std: Sequence[float]) -> None:
        self.steps = v2.Compose(normalisation(mean, std))

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return to_output(*self.steps(tv_tensors.Image(image), tv_tensors.Mask(label)))

    def __repr__(self) -> str:
        return f"EvalTransform({self.steps})"
