"""The networks: ICNet, AtICNet, PSPNet, the ablations and torchvision's peers, behind one builder."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from .config import ModelConfig, replace
from .icnet import ICNet, aticnet_config, icnet_atrous_config, icnet_config, icnet_s5x2_config
from .peers import TORCHVISION_BUILDERS, TorchvisionModel, peer_config
from .pspnet import PSPNet, pspnet_config

# name -> default config; the architecture field picks the class.
MODEL_CONFIGS: dict[str, Callable[[], ModelConfig]] = {
    "icnet": icnet_config,
    "aticnet": aticnet_config,
    "pspnet": pspnet_config,
    "icnet_s5x2": icnet_s5x2_config,
    "icnet_atrous": icnet_atrous_config,
}
MODEL_NAMES = tuple(MODEL_CONFIGS)  # ours
"""The networks aticnet builds itself: ``icnet``, ``aticnet``, ``pspnet``, ``icnet_s5x2``, ``icnet_atrous``
(torchvision's ``lraspp_mobilenet_v3`` and ``deeplabv3_mobilenet_v3`` build too)."""
PEER_NAMES = tuple(TORCHVISION_BUILDERS)  # torchvision's, random init
MODEL_CONFIGS.update({name: partial(peer_config, name) for name in PEER_NAMES})
ARCHITECTURES: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "cascade": ICNet, "pspnet": PSPNet, "torchvision": TorchvisionModel,
}


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The default config of ``name`` with ``overrides`` applied (unknown names raise)."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_CONFIGS)}")
    return replace(MODEL_CONFIGS[name](), **overrides)


def model_from_config(config: ModelConfig) -> nn.Module:
    """Instantiate the network a config describes."""
    return ARCHITECTURES[config.architecture](config)


def build_model(name: str, num_classes: int | None = None, *, weights: str | None = None, **overrides: Any) -> nn.Module:
    """Build a network by name, with random weights or the trained weights that ship with aticnet.

    Examples:
        >>> import aticnet
        >>> model = aticnet.build_model("aticnet", num_classes=11)       # random init, width 0.5
        >>> trained = aticnet.build_model("aticnet", weights="camvid")   # the shipped aticnet-camvid
        >>> logits = trained.eval()(images)                              # N x 11 x H x W

    Args:
        name: the architecture: one of [`MODEL_NAMES`][aticnet.MODEL_NAMES] (``"aticnet"``, ``"icnet"``, ...) or
            torchvision's ``"lraspp_mobilenet_v3"`` and ``"deeplabv3_mobilenet_v3"``.
        num_classes: outputs of the classifier (default 19, Cityscapes'; with ``weights``, theirs).
        weights: trained weights that ship with aticnet, by data set (``"camvid"``) or full name
            (``"aticnet-camvid"``); [`aticnet.list_weights`][aticnet.list_weights] lists them. None: random init.
        **overrides: [`ModelConfig`][aticnet.ModelConfig] fields, e.g. ``width=1.0`` or ``rates=(1, 2, 3, 4)``
            (not with ``weights``).

    Returns:
        The network, an ``nn.Module`` in training mode, with its config at ``model.config``. In eval mode it maps
            an N x 3 x H x W normalised image batch to N x K x H x W logits; in training mode it returns a dict
            (``"out"`` and the auxiliary outputs the loss uses).

    Raises:
        UserError: unknown weights, or ``num_classes`` or overrides that the weights do not fit.
    """
    if weights is None:
        return model_from_config(model_config(name, num_classes=19 if num_classes is None else num_classes, **overrides))
    from ..utils.errors import UserError
    from .pretrained import weights_for
    from .weights import load_model

    found = weights_for(name, weights)
    if overrides:
        raise UserError(f"{found.name}: trained weights fix the architecture; drop {', '.join(sorted(overrides))}")
    if num_classes is not None and num_classes != found.num_classes:
        raise UserError(f"{found.name} predicts {found.num_classes} classes, not {num_classes}; to train on other "
                        f"classes start from them: aticnet train --init {found.name} ...")
    model, _ = load_model(found.folder)
    return model.train()


def place_on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device``; on CUDA, a model that computes channels-last (``config.channels_last``) gets its
    weights in that layout too: cuDNN's convolutions then reorder nothing, and DDP's gradient buckets match the
    gradients' strides."""
    model = model.to(device)
    if device.type == "cuda" and getattr(getattr(model, "config", None), "channels_last", False):
        model = model.to(memory_format=torch.channels_last)
    return model


__all__ = ["ICNet", "PSPNet", "TorchvisionModel", "ModelConfig", "MODEL_NAMES", "PEER_NAMES", "build_model",
           "model_config", "model_from_config", "place_on_device"]
