"""torchvision's real-time segmentation networks behind our models' interface, to train and measure beside them.

``build_model("lraspp_mobilenet_v3", num_classes=11)`` is torchvision's LR-ASPP MobileNetV3-Large with
random weights (nothing is downloaded), with a ``config``, ``aux_keys`` and our output contract:
``{"out": logits}`` in training, N x K x H x W logits in eval. So it trains with ``aticnet train``,
saves, loads, exports and benchmarks like our own models. torchvision upsamples its logits to the
input size itself, so its loss is taken at full resolution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import ModelConfig

TORCHVISION_BUILDERS = {  # our name -> torchvision.models.segmentation builder
    "lraspp_mobilenet_v3": "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3": "deeplabv3_mobilenet_v3_large",
}


class TorchvisionModel(nn.Module):
    aux_keys: tuple[str, ...] = ()
    output_stride = 1  # torchvision upsamples inside the network

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from torchvision.models import segmentation

        self.config = config
        builder = getattr(segmentation, TORCHVISION_BUILDERS[config.name])
        self.net = builder(weights=None, weights_backbone=None, num_classes=config.num_classes)

    def forward(self, image: Tensor) -> Tensor | dict[str, Tensor]:
        if self.config.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        logits = self.net(image)["out"]  # N x K x H x W
        return {"out": logits} if self.training else logits

    def forward_lowres(self, image: Tensor) -> Tensor:
        out = self(image)
        return out["out"] if isinstance(out, dict) else out


def peer_config(name: str) -> ModelConfig:
    """As torchvision builds it: its own widths, NCHW activations, no auxiliary output."""
    return ModelConfig(name=name, architecture="torchvision", width=1.0, pyramid="none", aux_weights=(),
                       channels_last=False)
