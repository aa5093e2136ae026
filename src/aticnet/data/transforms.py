"""Training augmentation and evaluation preprocessing, on torchvision ``transforms.v2``.

Both take ``(image uint8 3xHxW, label uint8 HxW)`` and return ``(float32 3xhxw image
normalised with mean/std of [0, 1] pixels, int64 hxw label)``. Every random choice is drawn
from torch's global RNG, so ``torch.manual_seed(s)`` before a call fixes the output (the
loader seeds each sample this way for exact resume).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .base import IGNORE
from .resample import enlarge_window, resize_label_window


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale_range`` (aspect ratio kept).

    Images: bilinear with antialiasing (done on uint8, torchvision's fast path). Masks:
    nearest, the pixel-centre-aligned variant so labels stay registered with the image.

    Args:
        scale_range: (low, high) of the factor, 0 < low <= high.

    Raises:
        ValueError: a range that is not 0 < low <= high.
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"size": self.draw_size(*v2.query_size(flat_inputs))}

    def draw_size(self, height: int, width: int) -> list[int]:
        """The rescaled size of a frame: one draw of the global RNG.

        Args:
            height: the frame's height.
            width: the frame's width.

        Returns:
            [height, width] after the rescale, each at least 1.
        """
        low, high = self.scale_range
        factor = low + (high - low) * float(torch.rand(()))
        return [max(1, round(height * factor)), max(1, round(width * factor))]

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


def normalize_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 ``(x / 255 - mean) / std``, wherever the images are.

    The float operations of ``v2.ToDtype(scale=True)`` and ``v2.Normalize``, in their order, so a device that
    normalises bytes gives the bits the CPU transforms give.

    Args:
        images: uint8, channels at dim -3 (3 x H x W or N x 3 x H x W), on any device.
        mean: per-channel means of [0, 1] pixels, shaped to broadcast (3 x 1 x 1 or 1 x 3 x 1 x 1), on that device.
        std: per-channel standard deviations, shaped like ``mean``.

    Returns:
        float32 images of the same shape.
    """
    return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


@dataclass(frozen=True)
class Draws:
    """The random choices of one training sample, in the order ``TrainTransform`` draws them.

    ``jitter`` holds torchvision's ``ColorJitter`` parameters (None without colour jitter), ``size`` the
    rescaled (height, width), ``flipped`` the mirror, (``top``, ``left``) the crop's offset in the padded,
    rescaled (and mirrored) frame. ``to_row`` packs them into one float64 row, so that a batch of them
    crosses a loader's process boundary as one tensor (``aticnet.data.device_augment`` unpacks it).
    """

    size: tuple[int, int]
    flipped: bool
    top: int
    left: int
    jitter: dict[str, Any] | None = None

    JITTER_KEYS = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
    WIDTH = 13  # height, width, top, left, flipped, 4 jitter steps in order, 4 jitter factors

    def to_row(self) -> torch.Tensor:
        """The draws as a float64 tensor of ``WIDTH`` values (no jitter: order -1, factors NaN)."""
        order, factors = [-1] * 4, [math.nan] * 4
        if self.jitter is not None:
            order = [int(i) for i in self.jitter["fn_idx"]]
            factors = [math.nan if self.jitter[k] is None else self.jitter[k] for k in self.JITTER_KEYS]
        values = [*self.size, self.top, self.left, int(self.flipped), *order, *factors]
        return torch.tensor(values, dtype=torch.float64)

    @classmethod
    def from_row(cls, row: Sequence[float]) -> Draws:
        """The inverse of ``to_row`` (``row`` as a list of floats)."""
        height, width, top, left, flipped = (int(v) for v in row[:5])
        jitter = None
        if row[5] >= 0:
            factors = [None if math.isnan(v) else float(v) for v in row[9:13]]
            jitter = {"fn_idx": [int(v) for v in row[5:9]], **dict(zip(cls.JITTER_KEYS, factors))}
        return cls((height, width), bool(flipped), top, left, jitter)


def to_output(image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Plain tensors: tv_tensors must not leak into collation and the model.
    return image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor).to(torch.int64)


class ComposedTrainTransform:
    """[`TrainTransform`][aticnet.data.transforms.TrainTransform] as a plain ``v2.Compose``: the same random draws
    and labels, and the same pixels to one grey level of rounding.

    The reference ``TrainTransform`` is tested against: it resizes and normalises the whole rescaled image, then
    crops (several times the work at 720x720 crops of Cityscapes frames).

    Args:
        crop_size: the crop, one number (a square) or (height, width).
        scale_range: (low, high) of the random rescale's factor.
        flip: mirror half of the samples.
        color_jitter: brightness, contrast, saturation and hue of torchvision's ``ColorJitter`` (None: off).
        mean: the model's per-channel mean, on [0, 1] pixels.
        std: the model's per-channel standard deviation.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        *,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        color_jitter: Sequence[float] | None = None,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.crop_size = pair_size(crop_size)
        steps: list[v2.Transform] = [v2.ColorJitter(*color_jitter)] if color_jitter else []
        steps.append(RandomScale(tuple(scale_range)))
        if flip:
            steps.append(v2.RandomHorizontalFlip(0.5))
        steps += normalisation(mean, std)
        fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE}
        steps.append(v2.RandomCrop(self.crop_size, pad_if_needed=True, fill=fill))
        self.steps = v2.Compose(steps)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return to_output(*self.steps(tv_tensors.Image(image), tv_tensors.Mask(label)))

    def __repr__(self) -> str:
        return f"ComposedTrainTransform({self.steps})"


def window_bounds(height: int, width: int, top: int, left: int, crop: tuple[int, int]) -> tuple[int, int, int, int, int, int]:
    """Where the ``crop`` window at (``top``, ``left``) of a ``height`` x ``width`` image, padded as
    v2.RandomCrop(pad_if_needed=True) pads it, lies: (y0, x0) its corner in image coordinates (negative where
    it sticks out), and the rows ``iy0:iy1`` and columns ``ix0:ix1`` of the image inside it."""
    ch, cw = crop
    y0, x0 = top - max(0, ch - height), left - max(0, cw - width)
    return y0, x0, max(0, y0), min(height, y0 + ch), max(0, x0), min(width, x0 + cw)


def place_window(window: torch.Tensor, label_window: torch.Tensor, at: tuple[int, int], flipped: bool,
                 crop: tuple[int, int], *, fill: torch.Tensor | None = None, convert=None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A crop made of a window of the image and its padding: ``window`` (converted by ``convert``, float32 zeros
    around it, or copied with the per-channel ``fill`` around it) and ``label_window`` (255 around it) placed at
    ``at`` = (row, column), mirrored when ``flipped``.

    Args:
        window: C x h x w image pixels; label_window: h x w; crop: (ch, cw), at least the window plus ``at``.

    Returns:
        (C x ch x cw image, ch x cw int64 label) on the window's device.
    """
    (ch, cw), (top, left) = crop, at
    channels, height, width = window.shape
    out_label = torch.full((ch, cw), IGNORE, dtype=torch.int64, device=label_window.device)
    if convert is not None:
        out_image = window.new_zeros((channels, ch, cw), dtype=torch.float32)
        window = convert(window)
    else:
        out_image = fill.view(-1, 1, 1).to(window.device, window.dtype).expand(channels, ch, cw).clone()
    out_image[:, top : top + height, left : left + width] = window
    out_label[top : top + height, left : left + width] = label_window
    if flipped:
        out_image, out_label = out_image.flip(-1), out_label.flip(-1)
    return out_image, out_label


def cut_window(image: torch.Tensor, label: torch.Tensor, top: int, left: int, flipped: bool, crop: tuple[int, int], *,
               fill: torch.Tensor | None = None, convert=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``crop`` window at (``top``, ``left``) of the image padded as v2.RandomCrop(pad_if_needed=True) pads it,
    mirrored when ``flipped``: only the window's pixels are converted (``convert``; float32 zeros pad them) or
    copied (``fill``, per channel, pads them). The label pads with 255 (ignore).

    Args:
        image: C x H x W (any dtype, any device); label: H x W.
    Returns:
        (C x ch x cw image, ch x cw int64 label) on the image's device.
    """
    y0, x0, iy0, iy1, ix0, ix1 = window_bounds(*image.shape[-2:], top, left, crop)
    return place_window(image[:, iy0:iy1, ix0:ix1], label[iy0:iy1, ix0:ix1], (iy0 - y0, ix0 - x0), flipped, crop,
                        fill=fill, convert=convert)


class TrainTransform:
    """Optional colour jitter, random scale, horizontal flip, normalise, pad (image 0, label 255), random crop.

    ``(uint8 3xHxW, uint8 HxW) -> (float32 3xhxw, int64 hxw)`` with (h, w) = ``crop_size``.
    Padding comes after normalisation, so padded image pixels are 0 = the mean colour. With ``uint8`` the
    image stays uint8 (padded with the mean colour rounded to a byte) for normalisation on the GPU, with the
    same float operations there; only the padded pixels differ, by under half a grey level. With ``defer`` it
    only draws: ``(uint8 image, uint8 label, Draws.to_row())`` at the frame's size, and the device applies
    the draws (``aticnet.data.device_augment.augment_on_device``).

    It gives what [`ComposedTrainTransform`][aticnet.data.transforms.ComposedTrainTransform], the plain
    torchvision v2 pipeline, gives, which resizes, flips, converts and normalises the whole rescaled image (up to
    2x the input: a 2048x4096 float image for a 720x720 crop) before cropping. Here the random draws happen in the
    same order (jitter, scale, flip, crop offset: [`draw`][aticnet.data.transforms.TrainTransform.draw]), but
    only the crop's window is converted, normalised and padded (image 0 = the mean colour after normalisation,
    label 255) into place, mirrored if flipped: flipping commutes with cropping at the mirrored offset, and the
    float ops are elementwise. A frame the scale shrinks is resized whole by torchvision, and the crop is
    bit-identical to the v2 pipeline's; of a frame it enlarges only the window is computed
    (`aticnet.data.resample.enlarge_window`, a fraction of enlarging the whole frame when the crop is smaller than
    it), and the labels are identical, the pixels within one grey level of torchvision's uint8 rounding
    (``tests/data/test_datasets.py``).

    Args:
        crop_size: the crop, one number (a square) or (height, width).
        scale_range: (low, high) of the random rescale's factor.
        flip: mirror half of the samples.
        color_jitter: brightness, contrast, saturation and hue of torchvision's ``ColorJitter`` (None: off).
        mean: the model's per-channel mean, on [0, 1] pixels.
        std: the model's per-channel standard deviation.
        uint8: keep the image uint8 for normalisation on the GPU.
        defer: only draw the random choices; the device applies them.
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int],
        *,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        color_jitter: Sequence[float] | None = None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        uint8: bool = False,
        defer: bool = False,
    ) -> None:
        self.crop_size = pair_size(crop_size)
        self.uint8 = uint8
        self.defer = defer
        # brightness, contrast, saturation, hue on the uint8 image (torchvision's photometric augmentation)
        self.jitter = v2.ColorJitter(*color_jitter) if color_jitter else None
        self.scale = RandomScale(tuple(scale_range))
        self.flip = flip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.fill = (self.mean * 255).round().to(torch.uint8)  # uint8 padding: the mean colour, rounded to a byte

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        draws = self.draw(*image.shape[-2:])
        if self.defer:  # the draws only; the device applies them (data/device_augment.py)
            return image, label, draws.to_row()
        if draws.jitter is not None:
            image = self.jitter.transform(tv_tensors.Image(image), draws.jitter).as_subclass(torch.Tensor)
        if self.uint8:  # normalised on the device (TrainStream)
            fill, convert = self.fill, None
        else:  # the same float ops as v2.ToDtype(scale=True) and v2.Normalize
            fill, convert = None, lambda w: normalize_uint8(w, self.mean, self.std)
        (height, width), size = image.shape[-2:], list(draws.size)
        if size[0] >= height and size[1] >= width:  # enlarged: only the crop's window is computed (data/resample.py)
            y0, x0, iy0, iy1, ix0, ix1 = window_bounds(*size, draws.top, draws.left, self.crop_size)
            window = enlarge_window(image, draws.size, (iy0, iy1), (ix0, ix1))
            label_window = resize_label_window(label, draws.size, (iy0, iy1), (ix0, ix1))
            if self.uint8:
                window = window.to(torch.uint8)
            return place_window(window, label_window, (iy0 - y0, ix0 - x0), draws.flipped, self.crop_size,
                                fill=fill, convert=convert)
        # shrunk: the whole frame, torchvision's antialiased resize (the same bits as the v2 pipeline)
        image = self.scale.transform(tv_tensors.Image(image), {"size": size}).as_subclass(torch.Tensor)
        label = self.scale.transform(tv_tensors.Mask(label), {"size": size}).as_subclass(torch.Tensor)
        return cut_window(image, label, draws.top, draws.left, draws.flipped, self.crop_size, fill=fill, convert=convert)

    def draw(self, height: int, width: int) -> Draws:
        """Every random choice for a ``height`` x ``width`` frame, from the global RNG, in the order
        ``v2.ColorJitter``, [`RandomScale`][aticnet.data.transforms.RandomScale], ``v2.RandomHorizontalFlip`` and
        ``v2.RandomCrop`` draw them (so a seed gives the choices the plain v2 pipeline makes).

        Args:
            height: the frame's height.
            width: the frame's width.

        Returns:
            The ``Draws`` (jitter parameters, rescaled size, flip and crop offset).
        """
        jitter = None
        if self.jitter is not None:
            jitter = self.jitter.make_params([])
            jitter["fn_idx"] = jitter["fn_idx"].tolist()
        size = self.scale.draw_size(height, width)
        flipped, top, left = self.draw_window(*size)
        return Draws((size[0], size[1]), flipped, top, left, jitter)

    def draw_window(self, height: int, width: int) -> tuple[bool, int, int]:
        """The flip and the crop offset in the (padded) rescaled image of ``height`` x ``width``: (flipped, top,
        left), drawn as v2.RandomHorizontalFlip and v2.RandomCrop(pad_if_needed=True) draw them."""
        flipped = self.flip and bool(torch.rand(1) < 0.5)  # v2.RandomHorizontalFlip's draw
        ch, cw = self.crop_size
        # v2.RandomCrop(pad_if_needed=True): pad by the shortfall on both sides, then a random offset
        padded_h, padded_w = height + 2 * max(0, ch - height), width + 2 * max(0, cw - width)
        top = int(torch.randint(0, padded_h - ch + 1, size=())) if padded_h > ch else 0
        left = int(torch.randint(0, padded_w - cw + 1, size=())) if padded_w > cw else 0
        if flipped:  # cropping the mirrored image at `left` = mirroring the crop at the mirrored offset
            left = padded_w - cw - left
        return flipped, top, left

    def __repr__(self) -> str:
        return f"TrainTransform(crop {self.crop_size}, {self.jitter}, {self.scale}, flip={self.flip})"


class EvalTransform:
    """Normalise only, full resolution: ``(uint8 3xHxW, uint8 HxW) -> (float32 3xHxW, int64 HxW)``.

    Args:
        mean: the model's per-channel mean, on [0, 1] pixels.
        std: the model's per-channel standard deviation.
        uint8: keep the image uint8, for normalisation on the device (the same float operations there).
    """

    def __init__(self, *, mean: Sequence[float], std: Sequence[float], uint8: bool = False) -> None:
        self.steps = v2.Compose([v2.Identity()] if uint8 else normalisation(mean, std))

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return to_output(*self.steps(tv_tensors.Image(image), tv_tensors.Mask(label)))

    def __repr__(self) -> str:
        return f"EvalTransform({self.steps})"
