"""``aticnet analyze``: size, cost and receptive fields of a model (the paper's analysis as a tool)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..inference.timing import measure_latency
from ..models.analysis import count_flops, count_parameters, receptive_fields


def analyze(model: nn.Module, size: tuple[int, int], *, runs: int = 5) -> dict[str, Any]:
    """Parameters per part, GFLOPs and receptive fields of ``model`` at ``size`` (H, W), and its CPU latency
    over ``runs`` passes (None when ``runs`` is 0)."""
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
