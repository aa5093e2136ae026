"""Size, cost and receptive fields of a model: parameters per part, FLOPs, and the paper's
receptive-field analysis, F = (r - 1)(k - 1) + k for a k x k convolution at rate r."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Parameter groups by top-level module name; anything else counts as "heads".
PARTS = {
    "trunk": ("trunk",),
    "pyramid": ("pyramid", "reduce"),
    "cascade": ("high", "cff_16", "cff_8"),
}


def atrous_receptive_field(kernel: int, rate: int) -> int:
    """Receptive field of one k x k convolution with dilation r: F = (r - 1)(k - 1) + k."""
    return (rate - 1) * (kernel - 1) + kernel


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters in total and per part.

    Examples:
        >>> import aticnet
        >>> aticnet.count_parameters(aticnet.build_model("aticnet", num_classes=11))["total"]
        10838113

    Args:
        model: an aticnet model (the parts are its top-level modules; a torchvision peer counts as heads).

    Returns:
        The numbers of parameters by part, keys ``"trunk"``, ``"pyramid"``, ``"cascade"``, ``"heads"`` and
            ``"total"``.
    """
    counts = dict.fromkeys([*PARTS, "heads"], 0)
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        part = next((k for k, tops in PARTS.items() if top in tops), "heads")
        if ".aux_classifier." in name:
            part = "heads"  # CFF's label-guidance classifiers are heads, used in training only
        counts[part] += p.numel()
    counts["total"] = sum(counts.values())
    return counts


def count_flops(model: nn.Module, size: tuple[int, int], batch: int = 1) -> float:
    """FLOPs of one eval forward pass, as ``torch.utils.flop_counter.FlopCounterMode`` counts them (2 x the
    multiply-accumulates of convs and matmuls).

    Runs a copy of the model on the meta device: shapes only, no arithmetic, any size.

    Args:
        model: any model taking an N x C x H x W image (C = ``config.in_channels``, else 3).
        size: (H, W) of the input.
        batch: N, the images per pass.

    Returns:
        The FLOPs of one pass (``aticnet analyze`` prints them in GFLOPs).
    """
    meta = copy.deepcopy(model).to("meta").eval()
    in_channels = getattr(getattr(model, "config", None), "in_channels", 3)
    x = torch.zeros(batch, in_channels, *size, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(x)
    return float(counter.get_total_flops())


def receptive_fields(model: nn.Module, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Theoretical receptive field (in input pixels) after each trunk part and each pyramid level.

    Standard recursion along the deepest path: ``rf += (k_eff - 1) * jump; jump *= stride``
    with ``k_eff = d (k - 1) + 1``. The pyramid levels add one atrous conv on the top map.

    Args:
        model: an ICNet-family or PSPNet model (it has ``receptive_field_path()``).
        size: (H, W) of the input, to give each pooled cell's region; optional.

    Returns:
        Two lists under the keys ``trunk`` and ``pyramid``. Per trunk part a dict of ``part``, ``rf`` and
            ``stride``; per pyramid level a dict of ``bin``, ``rate``, ``kernel``, ``F``, ``F_input`` and, with
            ``size``, ``pool_region``.
    """
    rf, jump = 1, 1
    trunk = []
    for part, layers in model.receptive_field_path():
        for kernel, stride, dilation in layers:
            rf += dilation * (kernel - 1) * jump
            jump *= stride
        trunk.append({"part": part, "rf": rf, "stride": jump})
    levels = []
    config = model.config
    rates = config.rates if config.pyramid == "atrous" else (1,) * len(config.bins)
    kernel = 3 if config.pyramid == "atrous" else 1
    for b, r in zip(config.bins, rates):
        f = atrous_receptive_field(kernel, r)
        level = {"bin": b, "rate": r, "kernel": kernel, "F": f, "F_input": rf + (f - 1) * jump}
        if size is not None:  # each pooled cell averages this much of the input
            level["pool_region"] = [size[0] / b, size[1] / b]
        levels.append(level)
    return {"trunk": trunk, "pyramid": levels}


