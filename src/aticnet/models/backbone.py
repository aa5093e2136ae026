"""The ResNet-50 trunk that PSPNet, ICNet and AtICNet share.

Deep stem (three 3x3 convs, as in PSPNet), then four stages of bottlenecks. Strides and
dilations are constructor arguments, so the same class gives the dilated trunk of PSPNet
(output stride 8) and the trunk ICNet splits across its branches. Like timm backbones,
it publishes ``channels`` and ``reductions`` per stage, so heads never hard-code widths.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .config import ModelConfig
from .layers import Bottleneck, ConvBN

# ResNet-50 at width 1.0: stem convs, and (bottleneck middle, output) per stage.
STEM_CHANNELS = (64, 64, 128)
STAGE_CHANNELS = ((64, 256), (128, 512), (256, 1024), (512, 2048))


def make_stage(
    in_channels: int,
    mid_channels: int,
    out_channels: int,
    blocks: int,
    *,
    stride: int,
    dilation: int,
    stride_in_1x1: bool,
) -> nn.Sequential:
    """``blocks`` bottlenecks; only the first changes stride or width (projection shortcut).

    Every block of a dilated stage uses the stage's dilation, the first one included, as
    the Caffe PSPNet and ICNet releases do.
    """
    layers = []
    for i in range(blocks):
        layers.append(
            Bottleneck(
                in_channels if i == 0 else out_channels,
                mid_channels,
                out_channels,
                stride=stride if i == 0 else 1,
                dilation=dilation,
                stride_in_1x1=stride_in_1x1,
            )
        )
    return nn.Sequential(*layers)


class ResNetTrunk(nn.Module):
    """Deep-stem ResNet with per-stage strides and dilations.

    Args:
        stem_channels: output channels of the three stem convs.
        stage_channels: (bottleneck middle, output) channels of each stage.
        blocks: residual blocks per stage.
        strides: stride of each stage's first block (the stem and its max-pool add 4).
        dilations: dilation of every 3x3 conv in each stage.
        stride_in_1x1: see ``Bottleneck``.
    """

    def __init__(
        self,
        *,
        stem_channels: Sequence[int],
        stage_channels: Sequence[tuple[int, int]],
        blocks: Sequence[int],
        strides: Sequence[int] = (1, 2, 2, 2),
        dilations: Sequence[int] = (1, 1, 1, 1),
        stride_in_1x1: bool = True,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if not len(stage_channels) == len(blocks) == len(strides) == len(dilations):
            raise ValueError("stage_channels, blocks, strides and dilations need one entry per stage")
        c1, c2, c3 = stem_channels
        self.stem = nn.Sequential(
            ConvBN(in_channels, c1, 3, stride=2),
            ConvBN(c1, c2, 3),
            ConvBN(c2, c3, 3),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.stages = nn.ModuleList()
        channels, reduction = c3, 4
        self.channels: list[int] = []
        self.reductions: list[int] = []
        for (mid, out), n, stride, dilation in zip(stage_channels, blocks, strides, dilations):
            self.stages.append(
                make_stage(channels, mid, out, n, stride=stride, dilation=dilation, stride_in_1x1=stride_in_1x1)
            )
            channels, reduction = out, reduction * stride
            self.channels.append(out)
            self.reductions.append(reduction)

    def forward(self, x: Tensor) -> list[Tensor]:
        """N x 3 x H x W -> one feature map per stage, N x channels[i] x H/reductions[i] x ..."""
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def stem_path(self) -> list[tuple[int, int, int]]:
        """(kernel, stride, dilation) of the stem's convs and max-pool, in order."""
        pool = self.stem[3]
        return [conv_geometry(m[0]) for m in self.stem[:3]] + [(pool.kernel_size, pool.stride, 1)]


def dilated_resnet50(config: ModelConfig) -> ResNetTrunk:
    """The trunk ICNet and PSPNet share: deep stem, stage 3 at stride 2, stages 4 and 5 dilated 2 and 4.

    PSPNet runs it whole (output stride 8). ICNet runs it on the half-size image and cuts it after
    conv3_1, shrinking that map by 2 for the rest of stage 3 and stages 4-5 (the 1/32 branch).
    """
    c = config.channels
    return ResNetTrunk(
        stem_channels=[c(n) for n in STEM_CHANNELS],
        stage_channels=[(c(m), c(o)) for m, o in STAGE_CHANNELS],
        blocks=(*config.stage_blocks, config.stage5_blocks),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        stride_in_1x1=config.stride_in_1x1,
        in_channels=config.in_channels,
    )


def conv_geometry(conv: nn.Conv2d) -> tuple[int, int, int]:
    return conv.kernel_size[0], conv.stride[0], conv.dilation[0]


def block_path(block: Bottleneck) -> list[tuple[int, int, int]]:
    """(kernel, stride, dilation) of a bottleneck's main path (the shortcut sees less)."""
    return [conv_geometry(block.reduce[0]), conv_geometry(block.conv[0]), conv_geometry(block.expand[0])]
