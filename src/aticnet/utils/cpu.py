"""The CPU's model and the flags that decide how fast int8 and bf16 run on it."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

# what decides the speed of int8 (VNNI, AMX) and bf16 (avx512_bf16, AMX) inference: printed with every figure
CPU_FLAGS = ("avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def cpu_info() -> dict[str, Any]:
    """The CPU's model name, core count and the flags that decide int8 and bf16 speed, printed with every figure,
    since a figure holds only on its CPU.

    Returns:
        A dict of ``model`` (the CPU's name), ``cores`` and, on Linux, a true or false value for each of
            ``avx512_vnni``, ``avx512_bf16``, ``avx512_fp16``, ``amx_bf16`` and ``amx_int8``.
    """
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                for flag in CPU_FLAGS:
                    info[flag] = flag in flags
                break
    return info


def lacks_native_bf16(info: dict[str, Any] | None = None) -> bool:
    """True when the CPU's flags are known and name neither avx512_bf16 nor amx_bf16: bf16 autocast there runs
    emulated, slower than float32 (training ICNet ran about 10x slower per step than in float32 on an AVX2-only
    AMD EPYC). False where the flags cannot be read (not Linux, or not x86)."""
    info = cpu_info() if info is None else info
    return "avx512_bf16" in info and not (info["avx512_bf16"] or info.get("amx_bf16"))
