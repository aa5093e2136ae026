"""Training augmentation on the device, for a loader that would otherwise starve a GPU.

On a GPU a training step of ICNet at 720x720 crops takes less time than a CPU core needs to decode, rescale
and crop a Cityscapes frame for it. Here the frames arrive whole, as bytes, with each sample's random
choices ([`Draws`][aticnet.data.transforms.Draws], drawn from the sample's own seed in the order the CPU
transform draws them: by the loader's processes, or by
[`DeviceBatches`][aticnet.data.cache.DeviceBatches] from frames already on the device), and the device
jitters the colours, rescales, crops, mirrors and normalises them. The choices are the CPU transform's;
the colour jitter and normalisation are the same operations, and the pixels differ from the CPU's only
by the rounding of the two resize implementations (at most a grey level or two).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from .transforms import Draws, cut_window, normalize_uint8

_JITTER = v2.ColorJitter()  # only its ``transform(image, params)``: the params come with each sample's draws


def augment_frame(image: torch.Tensor, label: torch.Tensor, draws: Draws, crop: tuple[int, int], mean: torch.Tensor,
                  std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one sample's draws to its whole frame, where the frame is.

    Args:
        image: 3 x H x W uint8 frame; label: H x W uint8 train ids (255 = ignore), on the same device.
        draws: the sample's random choices.
        crop: (height, width) of the crop.
        mean: 3 x 1 x 1 per-channel means of [0, 1] pixels, on the image's device; std: likewise.

    Returns:
        (3 x h x w float32 normalised image, h x w int64 label), (h, w) = ``crop``.
    """
    if draws.jitter is not None:  # torchvision's ColorJitter kernels on the uint8 frame, as on the CPU
        image = _JITTER.transform(image, draws.jitter)
    height, width = draws.size
    shrink = height < image.shape[-2]
    # torchvision's resize of uint8 frames: bilinear, antialiased when shrinking, rounded back to bytes
    scaled = F.interpolate(image[None].float(), size=draws.size, mode="bilinear", align_corners=False, antialias=shrink)
    scaled = scaled[0].round_().clamp_(0, 255)
    scaled_label = F.interpolate(label[None, None].float(), size=draws.size, mode="nearest-exact")[0, 0]
    return cut_window(scaled, scaled_label, draws.top, draws.left, draws.flipped, crop,
                      convert=lambda window: normalize_uint8(window, mean, std))


def augment_on_device(images: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor | Sequence[torch.Tensor],
                      draws: torch.Tensor, crop: tuple[int, int], mean: torch.Tensor, std: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Jitter, rescale, crop, mirror and normalise a batch of whole frames where they are.

    Args:
        images: N x 3 x H x W uint8 frames, or N frames of their own sizes (3 x H_i x W_i), on the device.
        labels: N x H x W uint8 labels, or N of their own sizes, on the device.
        draws: N x ``Draws.WIDTH`` float64 on the CPU: each sample's ``Draws.to_row()``.
        crop: (height, width) of the crops.
        mean: 3 per-channel means of [0, 1] pixels, on the images' device; std: likewise.

    Returns:
        (N x 3 x h x w float32 normalised images, N x h x w int64 labels, 255 = ignore), (h, w) = ``crop``.
    """
    mean, std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
    out_images, out_labels = [], []
    for image, label, row in zip(images, labels, draws.tolist()):
        image_crop, label_crop = augment_frame(image, label, Draws.from_row(row), crop, mean, std)
        out_images.append(image_crop)
        out_labels.append(label_crop)
    return torch.stack(out_images), torch.stack(out_labels)

