"""Training augmentation on the GPU, for a loader that would otherwise starve it.

On a GPU a training step of ICNet at 720x720 crops takes less time than a CPU core needs to decode, rescale
and crop a Cityscapes frame for it. Here the loader's processes only decode the frames and draw the random
choices (:class:`~aticnet.data.transforms.TrainTransform` with ``defer=True``: the scale, the flip and the
crop offset, from each sample's own seed, in the order the CPU transform draws them), and the GPU rescales,
crops, mirrors and normalises the batch. The choices are the CPU transform's; the pixels differ from its by
the rounding of the two resize implementations (at most a grey level or two).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .transforms import cut_window


def augment_on_device(images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor, crop: tuple[int, int],
                      mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale, crop, mirror and normalise a batch where it is.

    Args:
        images: N x 3 x H x W uint8 frames (on the GPU); labels: N x H x W uint8.
        params: N x 5 int64 on the CPU: rescaled height, width, crop top, left, flipped (``TrainTransform`` draws).
        crop: (height, width) of the crops; mean, std: 3 values each (of [0, 1] pixels), on the images' device.
    Returns:
        (N x 3 x h x w float32 normalised images, N x h x w int64 labels, 255 = ignore), (h, w) = ``crop``.
    """
    mean, std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
    out_images, out_labels = [], []
    for image, label, (height, width, top, left, flipped) in zip(images, labels, params.tolist()):
        size = (height, width)
        shrink = height < image.shape[-2]
        # torchvision's resize of uint8 frames: bilinear, antialiased when shrinking, rounded back to bytes
        scaled = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)
        scaled = scaled[0].round_().clamp_(0, 255)
        scaled_label = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0]
        image_crop, label_crop = cut_window(scaled, scaled_label, top, left, bool(flipped), crop,
                                            convert=lambda w: w.mul(1.0 / 255).sub_(mean).div_(std))
        out_images.append(image_crop)
        out_labels.append(label_crop)
    return torch.stack(out_images), torch.stack(out_labels)


def same_size(shapes: Sequence[tuple[int, ...]]) -> bool:
    """Whether frames of these shapes can be stacked into one batch for the GPU."""
    return len(set(shapes)) <= 1
