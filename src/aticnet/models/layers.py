"""Small building blocks shared by every model: conv-BN(-ReLU), the bottleneck, the classifier, resizing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBN(nn.Sequential):
    """Conv + BatchNorm, optionally followed by ReLU.

    Padding keeps the spatial size at stride 1 for any dilation: ``dilation * (k - 1) // 2``.
    Without ``norm`` the conv gets a bias instead of the BatchNorm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        norm: bool = True,
        relu: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=not norm)
        ]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class Classifier(nn.Conv2d):
    """1x1 conv with bias: features -> class scores. Initialised N(0, 0.01) by ``init_weights``."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes, 1)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3 (dilated), 1x1 expand, plus a shortcut.

    ``stride_in_1x1`` puts a block's stride in its first 1x1 conv, as the MSRA ResNet and
    the Caffe releases of PSPNet and ICNet do (torchvision's v1.5 puts it in the 3x3).
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        stride_in_1x1: bool = True,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.reduce = ConvBN(in_channels, mid_channels, 1, stride=stride_1x1)
        self.conv = ConvBN(mid_channels, mid_channels, 3, stride=stride_3x3, dilation=dilation)
        self.expand = ConvBN(mid_channels, out_channels, 1, relu=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBN(in_channels, out_channels, 1, stride=stride, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        # x: N x in x H x W  ->  N x out x H/stride x W/stride
        return self.relu(self.expand(self.conv(self.reduce(x))) + self.shortcut(x))


def resize(x: Tensor, size: tuple[int, int] | torch.Size, align_corners: bool) -> Tensor:
    """Bilinear resize of N x C x H x W to N x C x size; a no-op when the size already fits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def half(x: Tensor, align_corners: bool) -> Tensor:
    """Bilinear downsampling by 2, odd sizes rounded up: Caffe's Interp with ``shrink_factor: 2`` gives
    (n - 1) / 2 + 1 (ICNet's ``data_sub2`` and ``conv3_1_sub4``), which is also what a 3x3 stride-2 conv
    with padding 1 gives, so the branches of the cascade keep matching sizes."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=((h + 1) // 2, (w + 1) // 2), mode="bilinear", align_corners=align_corners)


def init_weights(model: nn.Module, *, zero_init_residual: bool = False, bn_momentum: float = 0.1) -> None:
    """Kaiming-normal convs (fan-out, ReLU) with zero bias, BN weight 1 and bias 0.

    ``Classifier`` layers start at N(0, 0.01) with bias 0, as mmsegmentation's heads
    do: initial logits near 0, so the first loss is about ln(K) per output instead of a
    large, noisy value.

    With ``zero_init_residual`` the last BN of each bottleneck starts at 0, so every
    residual block starts as the identity (Goyal et al., 2017). ``bn_momentum`` is
    PyTorch's (weight of the new batch); Caffe's ``moving_average_fraction`` 0.95 is 0.05.
    """
    for m in model.modules():
        if isinstance(m, Classifier):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.momentum = bn_momentum
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.expand[1].weight)
