"""Pyramid pooling in the three forms the three papers use.

* ``SumPyramidPooling`` (ICNet): average-pool to each bin grid, upsample back and
  **sum** with the input. No conv per level; channels unchanged.
* ``AtrousPyramidPooling`` (AtICNet): each level first runs a 3x3 atrous conv
  (C -> C/8), BN, ReLU, a 1x1 conv (C/8 -> C) and BN, then pools and upsamples; the
  levels are **summed** with the input, as in ICNet.
* ``ConcatPyramidPooling`` (PSPNet): pool, 1x1 conv to C/4 + BN + ReLU, upsample, and
  **concatenate** with the input (2C channels out). The 1x1 bin is a single pixel per image,
  so its BatchNorm would need a batch of 2 or more to train; like segmentation_models_pytorch,
  that level has a conv with bias and no BatchNorm, and PSPNet trains at any batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvBN, resize


def adaptive_avg_pool(x: Tensor, bins: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, bins)``; while exporting (ONNX, ``torch.export``) the same averages as two
    matrix products, so the exported graph holds for any input size: the exporters bake adaptive pooling's
    windows in for the traced size. The two agree to float rounding (``tests/deploy/test_export.py``)."""
    if _exporting():
        return _pool_matrix(x, x.shape[-2], bins) @ x @ _pool_matrix(x, x.shape[-1], bins).transpose(0, 1)
    return F.adaptive_avg_pool2d(x, bins)


def _exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return bool(is_exporting and is_exporting()) or torch.onnx.is_in_onnx_export()


def _pool_matrix(like: Tensor, size: int, bins: int) -> Tensor:
    """bins x size: row i averages [floor(i*size/bins), ceil((i+1)*size/bins)), adaptive pooling's window."""
    i = torch.arange(bins, device=like.device)
    start = torch.div(i * size, bins, rounding_mode="floor")
    end = torch.div((i + 1) * size + bins - 1, bins, rounding_mode="floor")
    pos = torch.arange(size, device=like.device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def pool_and_upsample(x: Tensor, bins: int, align_corners: bool) -> Tensor:
    """Average-pool N x C x H x W to a bins x bins grid and upsample it back to H x W."""
    return resize(adaptive_avg_pool(x, bins), x.shape[-2:], align_corners)


class SumPyramidPooling(nn.Module):
    """ICNet's pyramid: ``x + sum_b up(pool_b(x))``; output channels = input channels."""

    def __init__(self, channels: int, bins: Sequence[int] = (1, 2, 3, 6), *, align_corners: bool = True) -> None:
        super().__init__()
        self.out_channels = channels
        self.bins = tuple(bins)
        self.align_corners = align_corners

    def forward(self, x: Tensor) -> Tensor:
        # x: N x C x h x w (the 1/32 map)  ->  N x C x h x w
        out = x
        for b in self.bins:
            out = out + pool_and_upsample(x, b, self.align_corners)
        return out


class AtrousLevel(nn.Module):
    """One AtICNet pyramid level: atrous 3x3 (C -> C/r), BN, ReLU, 1x1 (C/r -> C), BN, pool.

    The paper lists "padding + atrous conv + 1x1 conv + batch norm"; the BN and ReLU after
    the atrous conv (``inner_bn``, ``inner_relu``) and a ReLU after the last BN
    (``final_relu``) are our reading, switchable for the ablation.
    """

    def __init__(
        self,
        channels: int,
        branch_channels: int,
        bins: int,
        rate: int,
        *,
        inner_bn: bool = True,
        inner_relu: bool = True,
        final_relu: bool = False,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        self.atrous = ConvBN(channels, branch_channels, 3, dilation=rate, norm=inner_bn, relu=inner_relu)  # padding = rate
        self.project = ConvBN(branch_channels, channels, 1, relu=final_relu)
        self.bins, self.rate = bins, rate
        self.align_corners = align_corners

    def forward(self, x: Tensor) -> Tensor:
        # N x C x h x w -> N x C x h x w (pooled to bins x bins, then upsampled)
        return pool_and_upsample(self.project(self.atrous(x)), self.bins, self.align_corners)


class AtrousPyramidPooling(nn.Module):
    """AtICNet's pyramid: ``x + sum_l level_l(x)``, levels paired (bin, rate) in order.

    ``level_options`` go to every ``AtrousLevel`` (``inner_bn``, ``inner_relu``,
    ``final_relu``, ``align_corners``).
    """

    def __init__(
        self,
        channels: int,
        bins: Sequence[int] = (1, 2, 3, 6),
        rates: Sequence[int] = (2, 4, 8, 12),
        *,
        reduction: int = 8,
        **level_options: bool,
    ) -> None:
        super().__init__()
        if len(bins) != len(rates):
            raise ValueError(f"one rate per bin: bins {tuple(bins)}, rates {tuple(rates)}")
        self.out_channels = channels
        branch = max(1, channels // reduction)
        self.levels = nn.ModuleList(AtrousLevel(channels, branch, b, r, **level_options) for b, r in zip(bins, rates))

    def forward(self, x: Tensor) -> Tensor:
        # x: N x C x h x w  ->  N x C x h x w
        out = x
        for level in self.levels:
            out = out + level(x)
        return out


class ConcatPyramidPooling(nn.Module):
    """PSPNet's pyramid module: ``cat[x, up(conv(pool_b(x))) for b]``; 2C channels out."""

    def __init__(self, channels: int, bins: Sequence[int] = (1, 2, 3, 6), *, align_corners: bool = True) -> None:
        super().__init__()
        branch = channels // len(bins)
        self.out_channels = channels + branch * len(bins)
        self.bins = tuple(bins)
        self.align_corners = align_corners
        self.convs = nn.ModuleList(ConvBN(channels, branch, 1, norm=b > 1) for b in self.bins)

    def forward(self, x: Tensor) -> Tensor:
        # x: N x C x h x w  ->  N x 2C x h x w
        size = x.shape[-2:]
        levels = [resize(conv(adaptive_avg_pool(x, b)), size, self.align_corners) for b, conv in zip(self.bins, self.convs)]
        return torch.cat([x, *levels], dim=1)
