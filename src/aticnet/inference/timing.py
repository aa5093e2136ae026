"""The one timing harness: passes timed round-robin over several models, after warm-up, device synchronised.

``aticnet benchmark`` times its models with ``run_interleaved``; ``analyze``, the demo and the
CamVid script call ``measure_latency``, which is the same harness on one model.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .fast import LabelPredictor


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Entry:
    """One model as timed: ``predictor`` maps an image batch to labels, under ``autocast()``."""

    key: str
    model: str
    variant: Any  # the benchmark's Variant (how the model is run)
    predictor: nn.Module
    autocast: Callable[[], Any]
    warmup_s: list[float] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    done: bool = False


def time_pass(entry: Entry, image: Tensor, device: torch.device) -> float:
    """Seconds of one pass, image -> labels, device synchronised at both ends."""
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode(), entry.autocast():
        labels = entry.predictor(image)
    synchronize(device)
    elapsed = time.perf_counter() - start
    del labels
    return elapsed


def run_interleaved(
    entries: Sequence[Entry],
    image: Tensor,
    device: torch.device,
    *,
    runs: int,
    warmup: int,
    budget_s: float,
    min_runs: int,
    timer: Callable[[Entry, Tensor, torch.device], float] = time_pass,
    log: Callable[[str], None] = lambda s: None,
) -> list[str]:
    """Warm up every entry, then time them round-robin; returns the order of the timed passes.

    An entry leaves the rotation after ``runs`` passes, or once it has ``min_runs`` and its
    timed passes add up to ``budget_s`` seconds (slow models get fewer passes).
    """
    for i in range(max(1, warmup)):
        for e in entries:
            e.warmup_s.append(timer(e, image, device))
            if i == 0:
                log(f"  warm-up {e.key}: first pass {e.warmup_s[0]:.2f} s")
    order = []
    for _ in range(runs):
        active = [e for e in entries if not e.done]
        if not active:
            break
        for e in active:
            e.times_s.append(timer(e, image, device))
            order.append(e.key)
            if len(e.times_s) >= runs or (len(e.times_s) >= min_runs and sum(e.times_s) >= budget_s):
                e.done = True
    return order


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """The device's fp32 matrix-product rate (median of ``repeats`` n x n products), GFLOP/s."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def measure_latency(model: nn.Module, size: tuple[int, int], *, runs: int = 5, warmup: int = 1,
                    device: str | torch.device = "cpu") -> float:
    """Median milliseconds of one eval pass, image to logits to argmax labels, batch 1 (the benchmark's timed
    region, for one model), on random input. For figures to publish, ``aticnet benchmark`` interleaves models and
    takes many more passes.

    Examples:
        >>> import aticnet
        >>> aticnet.measure_latency(aticnet.build_model("aticnet", num_classes=11), (360, 480), runs=10)

    Args:
        model: the network (an ``nn.Module`` taking N x C x H x W images).
        size: (H, W) of the random input.
        runs: timed passes.
        warmup: untimed passes before them.
        device: where it runs (the model must be there already).

    Returns:
        The median over the timed passes, in milliseconds.
    """
    device = torch.device(device)
    in_channels = getattr(getattr(model, "config", None), "in_channels", 3)
    entry = Entry("model", type(model).__name__, None, LabelPredictor(model.eval()), contextlib.nullcontext)
    image = torch.randn(1, in_channels, *size, device=device)
    run_interleaved([entry], image, device, runs=runs, warmup=warmup, budget_s=float("inf"), min_runs=runs)
    return 1000 * statistics.median(entry.times_s)


def time_interleaved(predictors: dict[str, Callable[[Tensor], Any]], image: Tensor, *, runs: int = 10,
                     warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of ``runs`` passes of each predictor on ``image``, timed round-robin after ``warmup`` passes each, so
    that a change of the machine's state (another process, the clock) touches every predictor alike.

    Args:
        predictors: name to a callable taking the image batch (an ``nn.Module``,
            ``Segmenter.labels_of_normalized``, ...).
        image: N x 3 x H x W, on the device the predictors run on.
        runs: timed passes of each predictor.
        warmup: untimed passes of each before them.

    Returns:
        Name to the timed passes' seconds, in order.
    """
    entries = [Entry(name, name, None, f, contextlib.nullcontext) for name, f in predictors.items()]
    run_interleaved(entries, image, image.device, runs=runs, warmup=warmup, budget_s=float("inf"), min_runs=runs)
    return {e.key: list(e.times_s) for e in entries}
