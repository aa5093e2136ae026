"""The networks: ICNet, AtICNet, PSPNet, the ablations and torchvision's peers, behind one builder."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

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


def build_model(name: str, num_classes: int = 19, **overrides: Any) -> nn.Module:
    """Build ``name`` (one of :data:`MODEL_NAMES` or :data:`PEER_NAMES`) with ``num_classes`` outputs.

    ``overrides`` are :class:`ModelConfig` fields, e.g. ``width=1.0`` or ``rates=(1, 2, 3, 4)``.
    The result keeps its config at ``model.config``.
    """
    return model_from_config(model_config(name, num_classes=num_classes, **overrides))


__all__ = ["ICNet", "PSPNet", "TorchvisionModel", "ModelConfig", "MODEL_NAMES", "PEER_NAMES", "build_model",
           "model_config", "model_from_config"]
