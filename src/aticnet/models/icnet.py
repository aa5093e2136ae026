"""ICNet and AtICNet: the image cascade network and its atrous-pyramid variant.

Structure, as the original release defines it, with sizes relative to the input image I (H x W):

    I ------------------------------------------> high branch (3 convs, s2) -> 1/8 --+
    I/2 -> stem -> stage 2 -> conv3_1 -> 1/16 --------------------------------+       |
                                  |                                           |       |
                                  +-> resize 1/2 -> conv3_2..stage 5 -> pyramid -> 1x1 |
                                                                      (1/32)   |       |
                                                            CFF1(1/32 into 1/16)       |
                                                                       CFF2(1/16 into 1/8)
                                                                          -> classifier -> x2 -> 1/4

Choices where ports of the original differ, written down once (the original release's, each):
* Resizing is bilinear with ``align_corners=True`` (Caffe's Interp layer); a config field.
  Halving rounds odd sizes up, as Interp's ``shrink_factor`` does (``layers.half``).
* The 1/32 branch is conv3_1's output shrunk by 2 (the original's ``conv3_1_sub4``), not a
  second pass of the trunk on a 1/4 image.
* CFF has one ReLU, after the sum; its low path's conv has BN but no ReLU.
* The classifier runs before the last x2 upsampling. A 1x1 conv commutes exactly with
  bilinear upsampling (both are linear and the interpolation weights sum to 1), so this
  equals the original's upsample-then-classify at 128/19 of the cost.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backbone import block_path, dilated_resnet50
from .cascade import CascadeFeatureFusion, HighResBranch
from .config import ModelConfig
from .layers import Classifier, ConvBN, half, init_weights, resize
from .pyramid import AtrousPyramidPooling, SumPyramidPooling

# Full-width (1.0) channels of the cascade-specific layers; width 0.5 halves them.
PYRAMID_OUT = 512  # conv5_4_k1: the 1x1 reduction after the pyramid
CFF_CHANNELS = 256  # output of both cascade feature fusions
HIGH_BRANCH = (64, 64, 128)  # conv1_sub1, conv2_sub1, conv3_sub1


class ICNet(nn.Module):
    """ICNet family (ICNet, AtICNet and the ablations), built from a ``ModelConfig``.

    ``forward`` in training mode returns ``{"out": 1/4 logits, "aux_16": 1/16 logits,
    "aux_8": 1/8 logits}``; in eval mode, N x num_classes x H x W logits at the input size.
    """

    aux_keys = ("aux_16", "aux_8")
    output_stride = 4  # of the logits before the last upsampling (forward_lowres)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        ac = config.align_corners
        self.trunk = dilated_resnet50(config)  # on I/2: 1/8, conv3_1 1/16, then the 1/32 branch keeps its size
        top = self.trunk.channels[-1]
        if config.pyramid == "pool":
            self.pyramid: nn.Module = SumPyramidPooling(top, config.bins, align_corners=ac)
        elif config.pyramid == "atrous":
            self.pyramid = AtrousPyramidPooling(
                top,
                config.bins,
                config.rates,
                reduction=config.atrous_reduction,
                inner_bn=config.atrous_inner_bn,
                inner_relu=config.atrous_inner_relu,
                final_relu=config.atrous_final_relu,
                align_corners=ac,
            )
        else:
            raise ValueError(f"the cascade models fuse by sum; pyramid {config.pyramid!r} is PSPNet's")
        self.reduce = ConvBN(top, c(PYRAMID_OUT), 1)
        self.high = HighResBranch(config.in_channels, tuple(c(n) for n in HIGH_BRANCH))
        k = config.num_classes
        self.cff_16 = CascadeFeatureFusion(c(PYRAMID_OUT), self.trunk.channels[1], c(CFF_CHANNELS), k, align_corners=ac)
        self.cff_8 = CascadeFeatureFusion(c(CFF_CHANNELS), self.high.out_channels, c(CFF_CHANNELS), k, align_corners=ac)
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.classifier = Classifier(c(CFF_CHANNELS), k)
        init_weights(self, zero_init_residual=config.zero_init_residual, bn_momentum=config.bn_momentum)

    def forward(self, image: Tensor) -> Tensor | dict[str, Tensor]:
        outputs = self._outputs(image)
        if self.training:
            return outputs
        return resize(outputs["out"], image.shape[-2:], self.config.align_corners)  # N x K x H x W

    def forward_lowres(self, image: Tensor) -> Tensor:
        """N x K x H/4 x W/4: the eval logits before their last upsampling (``output_stride`` = 4).

        The deployed forms stop here and leave the upsample-and-argmax to ``aticnet.inference.labels``."""
        return self._outputs(image)["out"]

    def _outputs(self, image: Tensor) -> dict[str, Tensor]:
        ac = self.config.align_corners
        stage2, stage3, stage4, stage5 = self.trunk.stages
        if self.config.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)  # every conv follows the input's layout
        high = self.high(image)  # N x C3 x H/8
        x = self.trunk.stem(half(image, ac))  # I/2 -> N x C x H/8
        x = stage2(x)  # H/8
        x16 = stage3[0](x)  # conv3_1: N x C x H/16
        x = half(x16, ac)  # H/32
        x = stage5(stage4(stage3[1:](x)))  # N x Ctop x H/32
        x = self.reduce(self.pyramid(x))  # N x 256 x H/32 (width 0.5)
        x, aux_16 = self.cff_16(x, x16)  # N x 128 x H/16; aux only in training
        x, aux_8 = self.cff_8(x, high)  # N x 128 x H/8
        logits = self.classifier(self.dropout(x))  # N x K x H/8
        logits = resize(logits, (2 * logits.shape[-2], 2 * logits.shape[-1]), ac)  # H/4
        return {"out": logits, "aux_16": aux_16, "aux_8": aux_8}

    def receptive_field_path(self) -> list[tuple[str, list[tuple[int, int, int]]]]:
        """(kernel, stride, dilation) of each layer on the deepest path, grouped by part.

        A bilinear halving counts as a 2x2 stride-2 layer (each output reads a 2x2 patch).
        """
        shrink = [(2, 2, 1)]
        parts = [("medium input", shrink), ("stem", self.trunk.stem_path())]
        for i, stage in enumerate(self.trunk.stages):
            blocks = [block_path(b) for b in stage]
            if i == 1:
                parts.append(("conv3_1", blocks[0]))
                parts.append(("1/32 resize", shrink))
                blocks = blocks[1:]
            parts.append((f"stage{i + 2}", [layer for b in blocks for layer in b]))
        return parts


def _cascade_config(name: str, **fields) -> ModelConfig:
    return ModelConfig(name=name, architecture="cascade", aux_weights=(0.4, 0.4), **fields)


# Each builder returns the default config of one name; build_model applies overrides.
def icnet_config() -> ModelConfig:
    """ICNet as released: 3 stage-5 blocks, the plain sum pyramid."""
    return _cascade_config("icnet", stage5_blocks=3, pyramid="pool")


def aticnet_config() -> ModelConfig:
    """AtICNet: 2 stage-5 blocks and the atrous pyramid (rates 2, 4, 8, 12)."""
    return _cascade_config("aticnet", stage5_blocks=2, pyramid="atrous")


def icnet_s5x2_config() -> ModelConfig:
    """Ablation: ICNet with only AtICNet's shorter stage 5."""
    return _cascade_config("icnet_s5x2", stage5_blocks=2, pyramid="pool")


def icnet_atrous_config() -> ModelConfig:
    """Ablation: ICNet with only AtICNet's atrous pyramid."""
    return _cascade_config("icnet_atrous", stage5_blocks=3, pyramid="atrous")
