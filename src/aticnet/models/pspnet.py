"""PSPNet (Zhao et al., CVPR 2017): dilated ResNet-50, concatenating pyramid, aux FCN head.

Train mode returns ``{"out": 1/8 logits, "aux": 1/8 logits from stage 4}``; eval mode
returns N x num_classes x H x W logits at the input size. Its loss upsamples the logits
to the labels' size (``loss_on="labels"``, mmsegmentation's way).

The pyramid's 1x1 bin has no BatchNorm (a single pixel per image; see ``pyramid.py``),
so it trains at any batch size; the original used synchronised BN over 4+ GPUs instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backbone import block_path, dilated_resnet50
from .config import ModelConfig
from .layers import Classifier, ConvBN, init_weights, resize
from .pyramid import ConcatPyramidPooling

HEAD_CHANNELS = 512  # the 3x3 conv after the pyramid, at width 1.0
AUX_CHANNELS = 256  # the auxiliary FCN head's 3x3 conv, at width 1.0


class FCNHead(nn.Sequential):
    """3x3 conv-BN-ReLU, dropout, 1x1 classifier."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            ConvBN(in_channels, channels, 3),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            Classifier(channels, num_classes),
        )


class PSPNet(nn.Module):
    aux_keys = ("aux",)
    output_stride = 8  # of the logits before the upsampling (forward_lowres)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.pyramid != "concat":
            raise ValueError(f"PSPNet concatenates its pyramid; pyramid {config.pyramid!r} is the cascade's")
        self.config = config
        c = config.channels
        self.trunk = dilated_resnet50(config)  # output stride 8
        self.pyramid = ConcatPyramidPooling(self.trunk.channels[-1], config.bins, align_corners=config.align_corners)
        k = config.num_classes
        self.head = FCNHead(self.pyramid.out_channels, c(HEAD_CHANNELS), k, config.dropout)
        self.aux_head = FCNHead(self.trunk.channels[-2], c(AUX_CHANNELS), k, config.dropout)
        init_weights(self, zero_init_residual=config.zero_init_residual, bn_momentum=config.bn_momentum)

    def forward(self, image: Tensor) -> Tensor | dict[str, Tensor]:
        if self.config.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)  # every conv follows the input's layout
        *_, stage4, stage5 = self.trunk(image)  # N x 1024 x H/8, N x 2048 x H/8
        logits = self.head(self.pyramid(stage5))  # N x K x H/8
        if self.training:
            return {"out": logits, "aux": self.aux_head(stage4)}
        return resize(logits, image.shape[-2:], self.config.align_corners)

    def forward_lowres(self, image: Tensor) -> Tensor:
        """N x K x H/8 x W/8: the eval logits before the upsampling (``output_stride`` = 8)."""
        if self.config.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.head(self.pyramid(self.trunk(image)[-1]))

    def receptive_field_path(self) -> list[tuple[str, list[tuple[int, int, int]]]]:
        """(kernel, stride, dilation) of each layer on the deepest path, grouped by part."""
        parts = [("stem", self.trunk.stem_path())]
        for i, stage in enumerate(self.trunk.stages):
            parts.append((f"stage{i + 2}", [layer for b in stage for layer in block_path(b)]))
        return parts


def pspnet_config() -> ModelConfig:
    """PSPNet-50 as released: full width, concatenating pyramid, dropout 0.1, aux weight 0.4."""
    return ModelConfig(
        name="pspnet", architecture="pspnet", width=1.0, stage5_blocks=3, pyramid="concat", aux_weights=(0.4,),
        dropout=0.1, loss_on="labels",
    )
