"""Latency of every model beside its peers, interleaved: batch 1, warm-up first, medians, device synchronised."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..inference.images import scaled_size
from ..inference.timing import Entry, matmul_gflops, quantile, run_interleaved, time_pass
from ..models.analysis import count_flops
from ..utils.errors import UserError
from .machine import check_device, cpu_peak_memory, cuda_peak_memory, load_average, machine_info
from .models import (
    DEFAULT_MODELS,
    FLOPS_NOTE,
    TIMED_REGION,
    Variant,
    build_benchmark_model,
    deployed_architecture,
    is_deployed_file,
    prepare,
    prepare_deployed,
)


def benchmark_inference(
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    variants: Sequence[Variant] = (Variant(),),
    size: tuple[int, int] = (1024, 2048),
    batch: int = 1,
    device: str | torch.device = "cpu",
    width: float | None = None,
    num_classes: int = 19,
    runs: int = 15,
    warmup: int = 2,
    budget_s: float = 60.0,
    min_runs: int = 3,
    memory: bool = True,
    matmul_size: int = 2048,
    command: str | None = None,
    log: Callable[[str], None] = lambda s: None,
    timer: Callable[[Entry, Tensor, torch.device], float] = time_pass,
) -> dict[str, Any]:
    """Measure ``models`` x ``variants`` interleaved; the result is the benchmark's JSON (a dict)."""
    device = torch.device(device)
    check_device(device, [v.precision for v in variants])
    if runs < 1 or min_runs < 1:
        raise UserError("--runs and --min-runs must be at least 1")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    threads = torch.get_num_threads()
    result: dict[str, Any] = {
        "command": command,
        **machine_info(device),
        "size": list(size),
        "batch_size": batch,
        "width": width,
        "precision": variants[0].precision if len({v.precision for v in variants}) == 1 else "mixed",
        "fast": all(v.channels_last and v.fold_bn for v in variants),
        "variants": [v.name for v in variants],
        "runs": runs,
        "warmup": warmup,
        "budget_s": budget_s,
        "min_runs": min_runs,
        "timed_region": TIMED_REGION,
        "flops_note": FLOPS_NOTE,
        "load_avg_start": load_average(),
    }
    log(f"fp32 matrix product: measuring ({device.type}, {threads} threads)")
    result["matmul_gflops"] = matmul_gflops(device, matmul_size)
    result["matmul_size"] = matmul_size

    multi = len(variants) > 1
    entries, info = _build_entries(models, variants, size=size, batch=batch, device=device, width=width,
                                   num_classes=num_classes, memory=memory, multi=multi, log=log)
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, *size, generator=gen).to(device)
    log(f"timing {len(entries)} model(s) interleaved: {warmup} warm-up, up to {runs} runs, budget {budget_s:g} s each")
    order = run_interleaved(
        entries, image, device, runs=runs, warmup=warmup, budget_s=budget_s, min_runs=min_runs, timer=timer, log=log
    )
    result["timed_order"] = order
    result["load_avg_end"] = load_average()
    result["matmul_gflops_end"] = matmul_gflops(device, matmul_size)  # drift check: the same product after the timing

    for e in entries:
        row = info[e.key]
        row.update(_latency_row(e.times_s, e.warmup_s, batch=batch, runs=runs, gflops=row["gflops"]))
        row["matmul_share"] = row["effective_gflops_per_s"] / result["matmul_gflops"]
        if device.type == "cuda" and memory:
            row.update(cuda_peak_memory(e, image, device))
        row.setdefault("peak_mem_mb", None)
    for e in entries:
        icnet_key = f"icnet[{e.variant.name}]" if multi else "icnet"
        ref = info.get(icnet_key)
        info[e.key]["ratio_to_icnet"] = info[e.key]["latency_ms"] / ref["latency_ms"] if ref else None
    result["models"] = info
    return result


def _build_entries(models: Sequence[str], variants: Sequence[Variant], *, size: tuple[int, int], batch: int,
                   device: torch.device, width: float | None, num_classes: int, memory: bool, multi: bool,
                   log: Callable[[str], None]) -> tuple[list[Entry], dict[str, dict[str, Any]]]:
    """Every model x variant ready to time (an Entry each), and its row so far: parameters, FLOPs, CPU memory."""
    threads = torch.get_num_threads()
    entries: list[Entry] = []
    info: dict[str, dict[str, Any]] = {}
    for name in models:
        deployed = is_deployed_file(name)
        model = deployed_architecture(name) if deployed else build_benchmark_model(name, width=width,
                                                                                    num_classes=num_classes)
        flops = count_flops(model, size, batch)
        base = {
            "model": name,
            "width": getattr(getattr(model, "config", None), "width", None),
            "params": sum(p.numel() for p in model.parameters()),
            "gflops": flops / 1e9,
        }
        for v in variants:
            key = f"{name}[{v.name}]" if multi else name
            info[key] = {**base, "variant": v.name}
            if v.infer_scale != 1:  # the network runs on the scaled image
                info[key]["gflops"] = count_flops(model, scaled_size(size, v.infer_scale), batch) / 1e9
            if memory and device.type == "cpu" and not deployed:
                log(f"  peak memory of {key} (fresh process)")
                info[key].update(
                    cpu_peak_memory(
                        name, v, width=width, num_classes=num_classes, size=size, batch=batch, threads=threads
                    )
                )
            # optimised variants work on a copy; a deployed file runs as it is
            predictor, autocast = prepare_deployed(name, v, device) if deployed else prepare(model, v, device)
            entries.append(Entry(key, name, v, predictor, autocast))
        del model
    return entries, info


def _latency_row(times_s: list[float], warmup_s: list[float], *, batch: int, runs: int, gflops: float) -> dict[str, Any]:
    """The latency statistics of one entry's timed passes."""
    ms = [1000 * t for t in times_s]
    median = statistics.median(ms)
    return dict(
        latency_ms=median,
        latency_p25_ms=quantile(ms, 0.25),
        latency_p75_ms=quantile(ms, 0.75),
        latency_min_ms=min(ms),
        latency_max_ms=max(ms),
        runs=len(ms),
        budget_limited=len(ms) < runs,
        times_ms=[round(t, 3) for t in ms],
        first_call_s=warmup_s[0],
        fps=1000 * batch / median,
        effective_gflops_per_s=gflops / (median / 1000),
    )


def format_inference(result: dict[str, Any]) -> str:
    h, w = result["size"]
    lines = [
        (
            f"{result['device']} ({result.get('gpu') or result['cpu']['model']}), {result['threads']} threads, torch {result['torch']}, "
            f"{h}x{w}, batch {result['batch_size']}; timed: {result['timed_region']}"
        ),
        f"fp32 matrix product: {result['matmul_gflops']:.0f} GFLOP/s; GFLOPs: {result['flops_note']}",
        (
            f"{'model':<34} {'median ms':>10} {'IQR ms':>17} {'runs':>5} {'fps':>6} {'GFLOPs':>7} {'GFLOP/s':>8} "
            f"{'peak MB':>8} {'params M':>8} {'x ICNet':>7}"
        ),
    ]
    for key, r in result["models"].items():
        mem = f"{r['peak_mem_mb']:.0f}" if r.get("peak_mem_mb") is not None else "-"
        ratio = f"{r['ratio_to_icnet']:.2f}" if r.get("ratio_to_icnet") is not None else "-"
        note = " (budget)" if r["budget_limited"] else ""
        lines.append(
            f"{key:<34} {r['latency_ms']:10.1f} {r['latency_p25_ms']:8.1f}-{r['latency_p75_ms']:<8.1f} {r['runs']:5d}"
            f" {r['fps']:6.2f} {r['gflops']:7.1f} {r['effective_gflops_per_s']:8.1f} {mem:>8} {r['params'] / 1e6:8.2f}"
            f" {ratio:>7}{note}"
        )
    lines.append(f"load average: start {result['load_avg_start']}, end {result['load_avg_end']}")
    return "\n".join(lines)
