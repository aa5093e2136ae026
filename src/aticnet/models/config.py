"""The model config: one dataclass that fully describes a network.

Every choice the AtICNet paper leaves open (branch width, ReLU placement, bin/rate pairing) is a field here, so the
ablations are config changes, not code changes. The config travels with the weights
(``model.json``), so a saved model can always be rebuilt exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# ImageNet statistics on [0, 1] pixels: the convention of every ICNet/PSPNet port.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bounds of a config read from a file: far past any real segmentation network, far below what exhausts memory.
MAX_CLASSES = 1024
MAX_WIDTH = 2.0  # x ResNet-50's channels (PSPNet: 1.0)
MAX_BLOCKS = 64  # residual blocks per stage (ResNet-152 has 36)


@dataclass
class ModelConfig:
    """The network, one field per choice (a comment on each); ``model.config`` holds it and the weights files
    carry it, so a file alone rebuilds its model."""

    name: str  # "icnet", "aticnet", "pspnet", "icnet_s5x2", "icnet_atrous", or a torchvision peer (models.peers)
    num_classes: int = 19  # output channels of the classifiers
    width: float = 0.5  # channel multiplier on ResNet-50 widths; 0.5 = released ICNet
    architecture: str = "cascade"  # "cascade" (ICNet family), "pspnet" or "torchvision" (a peer)
    stage_blocks: tuple[int, int, int] = (3, 4, 6)  # residual blocks in stages 2, 3, 4
    stage5_blocks: int = 3  # residual blocks in stage 5; AtICNet drops one (2)
    pyramid: str = "pool"  # "pool" (ICNet sum), "atrous" (AtICNet sum), "concat" (PSPNet); "none" for peers
    bins: tuple[int, ...] = (1, 2, 3, 6)  # pyramid levels: pooled grid sizes
    rates: tuple[int, ...] = (2, 4, 8, 12)  # atrous pyramid: dilation per level, paired with bins
    atrous_reduction: int = 8  # atrous branch width = C / this (DeepLab's ASPP ratio)
    atrous_inner_bn: bool = True  # BN after the branch's atrous 3x3 (the paper lists only one BN, after the 1x1)
    atrous_inner_relu: bool = True  # ReLU after the branch's atrous 3x3 (the paper is silent)
    atrous_final_relu: bool = False  # ReLU after the branch's 1x1 conv + BN (paper is silent)
    aux_weights: tuple[float, ...] = (0.4, 0.4)  # loss weights of the aux outputs, coarsest first (losses.AUX_WEIGHTS)
    loss_on: str = "outputs"  # "outputs": labels shrunk to each output (ICNet); "labels": logits upsampled (mmseg)
    bn_momentum: float = 0.1  # PyTorch's BN momentum; Caffe and the TF port: 0.05 (moving average 0.95)
    align_corners: bool = True  # Caffe's Interp layer, used by the original release
    stride_in_1x1: bool = True  # stride of a downsampling block in its 1x1 conv (MSRA/Caffe)
    zero_init_residual: bool = False  # start each residual block as identity (last BN = 0)
    dropout: float = 0.0  # before the classifier; PSPNet uses 0.1
    channels_last: bool = True  # NHWC activations: 1.3-1.5x faster on CPU (BENCHMARKS.md), same math
    in_channels: int = 3  # image channels
    mean: tuple[float, float, float] = IMAGENET_MEAN  # input normalisation, [0, 1] pixels
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        # YAML and JSON give lists; the config keeps tuples so it stays hashable.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        if self.architecture not in ("cascade", "pspnet", "torchvision"):
            raise ValueError(f"architecture must be 'cascade', 'pspnet' or 'torchvision', not {self.architecture!r}")
        pyramids = ("none",) if self.architecture == "torchvision" else ("pool", "atrous", "concat")
        if self.pyramid not in pyramids:
            raise ValueError(f"pyramid must be one of {', '.join(map(repr, pyramids))}, not {self.pyramid!r}")
        if self.loss_on not in ("outputs", "labels"):
            raise ValueError(f"loss_on must be 'outputs' or 'labels', not {self.loss_on!r}")
        if self.pyramid == "atrous" and len(self.rates) != len(self.bins):
            raise ValueError(f"atrous pyramid needs one rate per bin: bins {self.bins}, rates {self.rates}")
        self._check_bounds()

    def _check_bounds(self) -> None:
        """Refuse sizes no real network has before any tensor is allocated: a config read from a file could
        otherwise ask for gigabytes (300,000 classes, a width of 1,000)."""
        for name, value, low, high in (("num_classes", self.num_classes, 1, MAX_CLASSES),
                                       ("in_channels", self.in_channels, 1, 16),
                                       ("stage5_blocks", self.stage5_blocks, 1, MAX_BLOCKS),
                                       ("atrous_reduction", self.atrous_reduction, 1, 1024)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in {low}..{high}, not {value!r}")
        if not isinstance(self.width, (int, float)) or not 0 < self.width <= MAX_WIDTH:
            raise ValueError(f"width must be in (0, {MAX_WIDTH:g}], not {self.width!r}")
        for name, values, high in (("stage_blocks", self.stage_blocks, MAX_BLOCKS), ("bins", self.bins, 64),
                                   ("rates", self.rates, 64)):
            if len(values) > (3 if name == "stage_blocks" else 8) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high for v in values):
                raise ValueError(f"{name} must be {'3' if name == 'stage_blocks' else 'up to 8'} integers in "
                                 f"1..{high}, not {values!r}")
        if len(self.stage_blocks) != 3:
            raise ValueError(f"stage_blocks must be 3 integers in 1..{MAX_BLOCKS}, not {self.stage_blocks!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout!r}")

    def channels(self, full_width: int) -> int:
        """``full_width`` channels (ResNet-50 at width 1.0) scaled by ``width``, a multiple of 8."""
        return max(8, int(full_width * self.width / 8 + 0.5) * 8)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        return cls(**data)


def replace(config: ModelConfig, **overrides: Any) -> ModelConfig:
    """A copy of ``config`` with ``overrides``; unknown names are an error, not ignored."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown model option(s): {', '.join(unknown)}")
    return dataclasses.replace(config, **overrides)


__all__ = ["ModelConfig", "replace", "IMAGENET_MEAN", "IMAGENET_STD"]
