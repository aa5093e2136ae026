"""The labels step alone: low-res logits -> full-size labels, every way we know, timed interleaved.

The logits are a trained model's on one picture at ``size`` (random weights give noise, not regions,
and no method behaves as it would in use). Each method's labels are compared with the exact reference
(bilinear upsample of all logits, then argmax): the share of pixels that differ is reported with the
time, so an approximate method's saving can be weighed against what it changes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..inference.backends import openvino_core
from ..inference.labels import labels_from_logits, upsample_argmax
from ..inference.timing import Entry, quantile, run_interleaved
from .machine import load_average, machine_info

EXACT = ("nchw", "channels_last", "refine", "openvino")  # same labels as the reference, up to exact ties


def methods(align_corners: bool, size: tuple[int, int], example: Tensor) -> dict[str, Callable[[Tensor], Tensor]]:
    """name -> (N x K x h x w logits -> N x H x W labels)."""

    def nchw(x: Tensor) -> Tensor:
        return F.interpolate(x.contiguous(), size=size, mode="bilinear", align_corners=align_corners).argmax(1)

    def bf16(x: Tensor) -> Tensor:
        return upsample_argmax(x.to(torch.bfloat16), size, align_corners)

    def nearest(x: Tensor) -> Tensor:
        return F.interpolate(x.argmax(1, keepdim=True).float(), size=size, mode="nearest")[:, 0].long()

    found = {
        "nchw": nchw,
        "channels_last": lambda x: upsample_argmax(x, size, align_corners),
        "refine": lambda x: labels_from_logits(x, size, align_corners),
        "bf16_channels_last": bf16,
        "nearest_of_lowres_argmax": nearest,
    }
    graph = _openvino_graph(example, size, align_corners)
    if graph is not None:
        found["openvino"] = graph
    return found


class _UpsampleArgmax(nn.Module):
    def __init__(self, size: tuple[int, int], align_corners: bool) -> None:
        super().__init__()
        self.size, self.align_corners = size, align_corners

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=self.align_corners).argmax(1)


def _openvino_graph(example: Tensor, size: tuple[int, int], align_corners: bool) -> Callable[[Tensor], Tensor] | None:
    """The same upsample + argmax as an OpenVINO graph (what fusing it into an exported model costs); None
    without OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(_UpsampleArgmax(size, align_corners).eval(), example_input=example)
    compiled = openvino_core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(x: Tensor) -> Tensor:
        request.infer({0: x.numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return run


def scene_logits(model: nn.Module, size: tuple[int, int], image: Tensor | None = None) -> Tensor:
    """The model's low-res logits of ``image`` (3 x H x W uint8; default: a synthetic street scene) at ``size``."""
    import numpy as np

    from ..data.scenes import draw_scene

    if image is None:
        image = torch.from_numpy(draw_scene(np.random.default_rng(0), *size)[0]).permute(2, 0, 1)
    x = F.interpolate(image[None].float() / 255, size=size, mode="bilinear", align_corners=False)
    mean = torch.tensor(model.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model.forward_lowres((x - mean) / std).float()


def benchmark_labels(models: Sequence[str], *, size: tuple[int, int] = (1024, 2048), runs: int = 15, warmup: int = 2,
                     image: Tensor | None = None, command: str | None = None,
                     log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Time every labels method on each model's logits, interleaved; the share of pixels each changes."""
    from .models import build_benchmark_model

    device = torch.device("cpu")
    result: dict[str, Any] = {"command": command, "mode": "labels", **machine_info(device), "size": list(size),
                              "runs": runs, "warmup": warmup, "load_avg_start": load_average(), "models": {}}
    for name in models:
        model = build_benchmark_model(name)
        logits = scene_logits(model, size, image)
        ways = methods(model.config.align_corners, size, logits)
        reference = upsample_argmax(logits, size, model.config.align_corners)
        entries = [Entry(way, name, way, fn, _nothing) for way, fn in ways.items()]
        log(f"labels step of {name}: logits {tuple(logits.shape)} -> {size[0]}x{size[1]}, {len(entries)} methods")
        run_interleaved(entries, logits, device, runs=runs, warmup=warmup, budget_s=float("inf"), min_runs=runs)
        rows = {}
        for e in entries:
            ms = [1000 * t for t in e.times_s]
            labels = e.predictor(logits)
            rows[e.key] = {"latency_ms": statistics.median(ms), "latency_p25_ms": quantile(ms, 0.25),
                           "latency_p75_ms": quantile(ms, 0.75), "runs": len(ms), "exact": e.key in EXACT,
                           "pixels_changed": float((labels.long() != reference).float().mean())}
        result["models"][name] = {"logits": list(logits.shape), "methods": rows}
    result["load_avg_end"] = load_average()
    return result


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def format_labels(result: dict[str, Any]) -> str:
    h, w = result["size"]
    lines = [f"labels step to {h}x{w} ({result['cpu']['model']}, {result['threads']} threads)"]
    for name, r in result["models"].items():
        lines.append(f"{name}: logits {'x'.join(map(str, r['logits']))}")
        for way, row in r["methods"].items():
            lines.append(f"  {way:<26} {row['latency_ms']:8.1f} ms   pixels changed {100 * row['pixels_changed']:.4f}%"
                         + ("" if row["exact"] else "   (approximate)"))
    return "\n".join(lines)
