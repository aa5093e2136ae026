"""Small building blocks shared by every model: conv-BN(-ReLU), the bottleneck, resizing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm, optionally followed by ReLU.

    Padding keeps the spatial size at stride 1 for any dilation: ``dilation * (k - 1) // 2``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        relu: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation


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
    """Bilinear downsampling by 2 (floor of odd sizes), as Caffe's Interp ``shrink_factor: 2``."""
    return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=align_corners)


def init_weights(model: nn.Module, *, zero_init_residual: bool = False) -> None:
    """Kaiming-normal convs (fan-out, ReLU), BN weight 1 and bias 0.

    Classifiers (convs with a bias: nothing else has one) start at N(0, 0.01) with bias 0,
    as mmsegmentation's heads do: initial logits near 0, so the first loss is about
    ln(K) per output instead of a large, noisy value.

    With ``zero_init_residual`` the last BN of each bottleneck starts at 0, so every
    residual block starts as the identity (Goyal et al., 2017).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.expand[1].weight)
