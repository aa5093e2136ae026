"""Facts about the machine a benchmark ran on, and peak memory of one pass."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..inference.timing import Entry, synchronize
from ..utils.cpu import cpu_info
from ..utils.errors import UserError
from .models import Variant, build_benchmark_model, prepare


def check_device(device: torch.device, precisions: Iterable[str]) -> None:
    """A UserError for a request this machine cannot time: CUDA without a GPU, fp16 off CUDA."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if "16" in precisions and device.type != "cuda":
        raise UserError("precision 16 needs CUDA; use bf16 on the CPU")


def tensor_bytes(model: Any) -> int | None:
    """Bytes of a module's parameters and buffers; None for what is no ``nn.Module`` (a deployed file's runner, a
    bound method), whose weights live in its engine."""
    module = model if isinstance(model, nn.Module) else getattr(model, "module", None)
    if not isinstance(module, nn.Module):
        return None
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


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


def _probe_main() -> None:  # python -c "from aticnet.benchmark.machine import _probe_main; _probe_main()" SPEC_JSON
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
    cmd = [sys.executable, "-c", "from aticnet.benchmark.machine import _probe_main; _probe_main()", json.dumps(spec)]
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
    if weights is None:  # not a PyTorch module: only the pass's own allocations are known
        return {"peak_mem_mb": None, "activation_peak_mb": growth, "weights_mb": None,
                "memory_method": "torch.cuda.max_memory_allocated over one pass; weights not counted (not a module)"}
    return {
        "peak_mem_mb": weights / 2**20 + growth,
        "activation_peak_mb": growth,
        "weights_mb": weights / 2**20,
        "memory_method": "torch.cuda.max_memory_allocated over one pass, plus the weights",
    }


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a measurement ran on, stored with every benchmark report.

    Args:
        device: the device measured (``"cpu"``, ``"cuda"``).

    Returns:
        A dict of the device, the threads, the torch and torchvision versions, the CPU (as
            [`aticnet.cpu_info`][aticnet.cpu_info] gives it) and the compute backend; on CUDA also the GPU and its
            TF32 flags.
    """
    import torchvision

    device = torch.device(device)

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
        # fp32 convolutions may run in TF32 (cuDNN's default) while the fp32 matrix-product reference does not:
        # the flags say which figure ran in which
        info["tf32"] = {"cudnn_conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32,
                        "float32_matmul_precision": torch.get_float32_matmul_precision()}
    return info


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None
