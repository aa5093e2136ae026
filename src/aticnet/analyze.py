"""``aticnet analyze``: size, cost and receptive fields of a model (the paper's analysis as a tool)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .timing import measure_latency

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
    """Parameters in total and per part (trunk, pyramid, cascade, heads)."""
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
    """FLOPs of one eval forward pass (FlopCounterMode: 2 x multiply-accumulates of convs and matmuls).

    Runs a copy of the model on the meta device: shapes only, no arithmetic, any size. Any
    model taking an N x C x H x W image (C = ``config.in_channels``, else 3).
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


def analyze(model: nn.Module, size: tuple[int, int], *, runs: int = 5) -> dict[str, Any]:
    return {
        "model": model.config.name,
        "width": model.config.width,
        "size": list(size),
        "params": count_parameters(model),
        "gflops": count_flops(model, size) / 1e9,
        "latency_ms": measure_latency(model, size, runs=runs) if runs > 0 else None,
        "threads": torch.get_num_threads(),
        "receptive_field": receptive_fields(model, size) if hasattr(model, "receptive_field_path") else None,
    }


def format_report(report: dict[str, Any]) -> str:
    p = report["params"]
    h, w = report["size"]
    lines = [
        f"{report['model']} (width {report['width']}) at {h}x{w}",
        f"  parameters  {p['total'] / 1e6:8.2f} M   "
        + "  ".join(f"{k} {p[k] / 1e6:.2f} M" for k in ("trunk", "pyramid", "cascade", "heads")),
        f"  GFLOPs      {report['gflops']:8.1f}     (FlopCounterMode: 2 x MACs)",
    ]
    if report["latency_ms"] is not None:
        lines.append(f"  latency     {report['latency_ms']:8.1f} ms  (CPU, {report['threads']} threads, fp32, batch 1, argmax included)")
    if report["receptive_field"] is None:
        return "\n".join(lines)
    lines.append("  receptive field of the trunk (input pixels):")
    lines += [f"    {t['part']:<13} rf {t['rf']:5d}  stride {t['stride']:3d}" for t in report["receptive_field"]["trunk"]]
    lines.append("  pyramid levels: F = (r - 1)(k - 1) + k on the top map, F_input in input pixels,")
    lines.append("  and the input region each pooled cell averages:")
    lines += [
        f"    bin {lv['bin']}  rate {lv['rate']:2d}  k {lv['kernel']}  F {lv['F']:3d}  F_input {lv['F_input']:5d}"
        f"  pool region {lv['pool_region'][0]:.0f}x{lv['pool_region'][1]:.0f}"
        for lv in report["receptive_field"]["pyramid"]
    ]
    return "\n".join(lines)
