"""Building the measured models, timing passes interleaved, memory probes, machine facts."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..fast import DTYPES, LabelPredictor, compile_module, optimize_for_inference

PEERS = {  # our name -> torchvision builder (random weights: nothing is downloaded)
    "lraspp_mobilenet_v3": "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3": "deeplabv3_mobilenet_v3_large",
}
DEFAULT_MODELS = ("icnet", "aticnet", "pspnet", "lraspp_mobilenet_v3", "deeplabv3_mobilenet_v3")
DEFAULT_TRAIN_MODELS = ("icnet", "aticnet")
TIMED_REGION = "float32 NCHW image on the device -> forward -> final upsample to HxW -> argmax -> labels"
FLOPS_NOTE = "FlopCounterMode: 2 x multiply-accumulates of convs and matmuls (resizes, pooling, argmax not counted)"


@dataclass(frozen=True)
class Variant:
    """How a model is run: the fast-path options and the precision."""

    channels_last: bool = False
    fold_bn: bool = False
    compile: bool = False
    precision: str = "32"  # "32", "bf16", "16"

    @property
    def optimised(self) -> bool:
        return self.channels_last or self.fold_bn or self.compile

    @property
    def name(self) -> str:
        if self.channels_last and self.fold_bn:
            parts = ["fast"]
        else:
            parts = [p for p, on in (("cl", self.channels_last), ("fold", self.fold_bn)) if on] or ["plain"]
        if self.compile:
            parts.append("compile")
        if self.precision != "32":
            parts.append(self.precision)
        return "+".join(parts)


def parse_variant(text: str, precision: str = "32") -> Variant:
    """'plain', 'fast', 'cl', 'fold', 'compile', 'bf16', '16', joined by '+': 'fast+compile+bf16'.

    ``compile`` alone compiles the plain model; ``fast`` = ``cl+fold``. Without a precision
    token the variant takes ``precision``.
    """
    options = {"channels_last": False, "fold_bn": False, "compile": False, "precision": precision}
    for token in text.lower().split("+"):
        token = token.strip()
        if token == "plain":
            continue
        if token == "fast":
            options.update(channels_last=True, fold_bn=True)
        elif token in ("cl", "channels_last"):
            options["channels_last"] = True
        elif token == "fold":
            options["fold_bn"] = True
        elif token == "compile":
            options["compile"] = True
        elif token in ("bf16", "16", "fp16", "32", "fp32"):
            options["precision"] = {"fp16": "16", "fp32": "32"}.get(token, token)
        else:
            raise UserError(f"unknown variant part {token!r} in {text!r}; use plain, fast, cl, fold, compile, bf16, 16")
    return Variant(**options)


# --------------------------------------------------------------------------- models


def build_benchmark_model(name: str, *, width: float | None = None, num_classes: int = 19, seed: int = 0) -> nn.Module:
    """An eval-mode model: one of ours (``width`` applies to the ICNet family; PSPNet keeps its
    own 1.0) or a torchvision peer with random weights and ``num_classes`` outputs."""
    torch.manual_seed(seed)
    if name in PEERS:
        from torchvision.models import segmentation

        return getattr(segmentation, PEERS[name])(weights=None, weights_backbone=None, num_classes=num_classes).eval()
    from ..models import MODEL_NAMES, build_model

    if name not in MODEL_NAMES:
        raise UserError(f"unknown model {name!r}; choose from {', '.join((*MODEL_NAMES, *PEERS))}")
    overrides = {"width": width} if width and name != "pspnet" else {}
    return build_model(name, num_classes=num_classes, **overrides).eval()


def model_width(name: str, model: nn.Module) -> float | None:
    config = getattr(model, "config", None)
    return getattr(config, "width", None)


def count_model_flops(model: nn.Module, size: tuple[int, int], batch: int = 1) -> float:
    """FLOPs (2 x MACs) of one eval pass, counted on a meta-device copy: any size, no arithmetic."""
    from copy import deepcopy

    from torch.utils.flop_counter import FlopCounterMode

    meta = deepcopy(model).to("meta").eval()
    x = torch.zeros(batch, 3, *size, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(x)
    return float(counter.get_total_flops())


def tensor_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def prepare(model: nn.Module, variant: Variant, device: torch.device) -> tuple[nn.Module, Callable[[], Any]]:
    """(labels module, context factory) running ``model`` as ``variant`` says.

    Optimised variants go through :func:`optimize_for_inference` (the dtype becomes the
    weights'); the plain variant in bf16/16 runs under autocast, as ``evaluate`` does.
    """
    model = model.to(device)
    dtype = DTYPES[variant.precision]
    autocast: Callable[[], Any] = contextlib.nullcontext
    if variant.channels_last or variant.fold_bn:
        model = optimize_for_inference(model, channels_last=variant.channels_last, fold_bn=variant.fold_bn, dtype=dtype)
    elif dtype is not None:
        autocast = lambda: torch.autocast(device.type, dtype=dtype)
    predictor: nn.Module = LabelPredictor(model).eval()
    if variant.compile:
        predictor = compile_module(predictor)  # the whole input -> labels, so the final resize and argmax fuse
    return predictor, autocast


# --------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Entry:
    key: str
    model: str
    variant: Variant
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


# --------------------------------------------------------------------------- memory


def _status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def cpu_peak_memory_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """In this (fresh) process: build, prepare, run one pass; weights + peak RSS growth of the pass, MiB."""
    torch.set_num_threads(spec["threads"])
    device = torch.device("cpu")
    variant = Variant(**{**spec["variant"], "compile": False})  # compiled code runs the same kernels' memory
    model = build_benchmark_model(spec["model"], width=spec["width"], num_classes=spec["num_classes"])
    weights = tensor_bytes(model)
    predictor, autocast = prepare(model, variant, device)
    del model
    gc.collect()
    image = torch.randn(spec["batch"], 3, *spec["size"])
    before = _status_kb("VmRSS")
    method = "VmHWM"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS (Linux >= 4.0)
    except OSError:
        import resource

        method, before = "ru_maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # a lifetime peak
    with torch.inference_mode(), autocast():
        predictor(image)
    if method == "VmHWM":
        peak = _status_kb("VmHWM")
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    growth = max(0, peak - before) / 1024
    return {
        "peak_mem_mb": weights / 2**20 + growth,
        "activation_peak_mb": growth,
        "weights_mb": weights / 2**20,
        "memory_method": f"fresh process, first pass, {method}",
    }


def _probe_main() -> None:  # python -c "from aticnet.benchmark.timing import _probe_main; _probe_main()" SPEC_JSON
    print(json.dumps(cpu_peak_memory_probe(json.loads(sys.argv[1]))))


def cpu_peak_memory(
    model: str, variant: Variant, *, width, num_classes, size, batch, threads, timeout: float = 1800
) -> dict:
    spec = {
        "model": model,
        "variant": variant.__dict__,
        "width": width,
        "num_classes": num_classes,
        "size": list(size),
        "batch": batch,
        "threads": threads,
    }
    cmd = [sys.executable, "-c", "from aticnet.benchmark.timing import _probe_main; _probe_main()", json.dumps(spec)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"peak_mem_mb": None, "memory_error": tail[0]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cuda_peak_memory(entry: Entry, image: Tensor, device: torch.device) -> dict[str, Any]:
    """Weights + peak allocation of one pass, from the caching allocator's statistics."""
    weights = tensor_bytes(entry.predictor)
    synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), entry.autocast():
        entry.predictor(image)
    synchronize(device)
    growth = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return {
        "peak_mem_mb": weights / 2**20 + growth,
        "activation_peak_mb": growth,
        "weights_mb": weights / 2**20,
        "memory_method": "torch.cuda.max_memory_allocated over one pass, plus the weights",
    }


# --------------------------------------------------------------------------- machine


def cpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["avx512_bf16"] = "avx512_bf16" in flags
                info["amx_bf16"] = "amx_bf16" in flags
                info["avx512_fp16"] = "avx512_fp16" in flags
                break
    return info


def machine_info(device: torch.device) -> dict[str, Any]:
    import torchvision

    info = {
        "device": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "backend": "oneDNN (mkldnn)" if device.type == "cpu" and torch.backends.mkldnn.is_available() else device.type,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["backend"] = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    return info


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


# --------------------------------------------------------------------------- inference benchmark


