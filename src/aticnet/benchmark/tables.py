"""The tables of BENCHMARKS.md, one kind per report: inference latency, training throughput, the labels step,
deployable forms and the GPU check. Each takes one parsed JSON report and returns markdown lines."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..utils.cpu import CPU_FLAGS


def _is_train(r: dict[str, Any]) -> bool:
    return r.get("mode") == "train"


def _is_inference(r: dict[str, Any]) -> bool:
    return r.get("mode", "inference") == "inference"


def table_for(r: dict[str, Any]) -> list[str]:
    """The markdown table of one report, whatever it measured."""
    kinds = {"train": train_table, "labels": labels_table, "deploy": deploy_table, "gpu_check": gpu_check_table,
             "stream": stream_table, "serve_load": serve_table, "ray_scaling": ray_table}
    return kinds.get(r.get("mode"), inference_table)(r)


def labels_table(r: dict[str, Any]) -> list[str]:
    """The labels step alone: time and pixels changed against the exact reference, per method."""
    h, w = r["size"]
    lines = [f"`{r.get('command')}`", "", f"{_machine(r)}; low-res logits -> {h}x{w} labels; {r['warmup']} warm-up "
             f"passes, then {r['runs']} timed per method, interleaved. {_load(r)}.", ""]
    for name, m in r["models"].items():
        lines += [f"{name} (logits {'x'.join(map(str, m['logits']))}):", "",
                  "| method | exact | ms (median) | IQR ms | pixels changed |", "| --- | --- | ---: | ---: | ---: |"]
        for way, row in m["methods"].items():
            lines.append(f"| {way} | {'yes' if row['exact'] else 'no'} | {row['latency_ms']:.1f} | "
                         f"{row['latency_p25_ms']:.1f}-{row['latency_p75_ms']:.1f} | {100 * row['pixels_changed']:.4f}% |")
        lines.append("")
    return lines


def deploy_table(r: dict[str, Any]) -> list[str]:
    """Every deployable form of trained runs (benchmarks/deploy.py): latency at each size with its speed-up over
    PyTorch fp32 as built, and mIoU with its change from it."""
    rows, sizes = r["rows"], r["sizes"]
    held = any(row.get("held_out_miou") is not None for row in rows)
    head = ["model", "form"] + [f"ms at {s} (speed-up)" for s in sizes] + [f"{r['split']} mIoU (change)"]
    head += [f"held-out {rows[0]['held_out_drive']} mIoU (change)"] if held else []
    lines = [f"`{r.get('command')}`", "", f"{_machine(r)}; {r['timed_region']}; {_load(r)}.", "",
             "| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for row in rows:
        base = next(b for b in rows if b["run"] == row["run"] and b["form"] == rows[0]["form"])
        cells = [row["model"], row["form"]]
        cells += [f"{row[f'latency_ms_{s}']:.0f} ({base[f'latency_ms_{s}'] / row[f'latency_ms_{s}']:.1f}x)" for s in sizes]
        cells.append(f"{100 * row['miou']:.2f} ({100 * (row['miou'] - base['miou']):+.2f})")
        if held:
            cells.append(f"{100 * row['held_out_miou']:.2f} ({100 * (row['held_out_miou'] - base['held_out_miou']):+.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fmt(value: float | None, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _machine(r: dict[str, Any]) -> str:
    where = r.get("gpu") if r["device"] == "cuda" else r["cpu"]["model"]
    cpu = r.get("cpu", {})
    flags = [f for f in CPU_FLAGS if cpu.get(f)]
    extra = ""
    if r["device"] == "cpu" and any(f in cpu for f in CPU_FLAGS):  # the flags were read (Linux on x86)
        extra = f", CPU flags: {', '.join(flags) or 'none of avx512_vnni, avx512_bf16, AMX'}"
    return (
        f"{r['device']} ({where}{extra}), {r['threads']} threads, backend {r.get('backend', '?')}, "
        f"torch {r['torch']}, torchvision {r.get('torchvision', '?')}"
    )


def _load(r: dict[str, Any]) -> str:
    return f"load average (1, 5, 15 min) at start {r.get('load_avg_start')}, at end {r.get('load_avg_end')}"


def inference_table(r: dict[str, Any]) -> list[str]:
    h, w = r["size"]
    lines = [
        f"`{r.get('command')}`",
        "",
        (
            f"{_machine(r)}; input {h}x{w}, batch {r['batch_size']}, precision {r['precision']}; "
            f"timed region: {r['timed_region']}; {r['warmup']} warm-up passes, then up to {r['runs']} timed passes per "
            f"model, interleaved round-robin (a model stops early after {r['min_runs']} passes once its passes "
            f"used {r['budget_s']:g} s). Measured fp32 matrix product ({r.get('matmul_size', 2048)}^2): {r['matmul_gflops']:.0f} GFLOP/s before "
            f"the timing, {_fmt(r.get('matmul_gflops_end'), '.0f')} after. {_load(r)}."
        ),
        "",
        (
            "| model | variant | width | latency ms (median) | IQR ms | min-max ms | runs | fps | GFLOPs | "
            "effective GFLOP/s | of matmul rate | peak mem MB | params M | x ICNet |"
        ),
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in r["models"].values():
        runs = f"{row['runs']}" + (" (budget)" if row.get("budget_limited") else "")
        lines.append(
            f"| {row['model']} | {row['variant']} | {_fmt(row.get('width'), 'g')} | {row['latency_ms']:.1f} | "
            f"{row['latency_p25_ms']:.1f}-{row['latency_p75_ms']:.1f} | {row['latency_min_ms']:.1f}-{row['latency_max_ms']:.1f} | "
            f"{runs} | {row['fps']:.2f} | {row['gflops']:.1f} | {row['effective_gflops_per_s']:.1f} | "
            f"{100 * row['matmul_share']:.0f}% | {_fmt(row.get('peak_mem_mb'), '.0f')} | {row['params'] / 1e6:.2f} | "
            f"{_fmt(row.get('ratio_to_icnet'), '.2f')} |"
        )
    lines += [
        "",
        f"GFLOPs: {r['flops_note']}. Peak memory: "
        + (
            next((row.get("memory_method") for row in r["models"].values() if row.get("memory_method")), None)
            or "not measured (--no-memory)"
        )
        + ".",
    ]
    compiled = [row for row in r["models"].values() if "compile" in row["variant"]]
    if compiled:
        lines.append(
            "First call (compilation, not timed): "
            + ", ".join(f"{row['model']}[{row['variant']}] {row['first_call_s']:.0f} s" for row in compiled)
            + "."
        )
    return lines


PIPELINE_WHAT = {
    "none": "decode + augment",
    "memory": "decoded frames from a memory-mapped file + augment",
    "device": "decoded frames on the device, augmented there, no loader process",
}


def train_views(r: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(pipelines, end to end, bound) of a ``--train`` report, each by cache mode ({mode: ...}). A report with a
    single pipeline (no ``caches``) reads as ``--cache none``."""
    if "pipelines" in r:
        return r["pipelines"], r.get("end_to_end", {}), r.get("bound", {})
    end_to_end = {"none": r["end_to_end"]} if r.get("end_to_end") else {}
    bound = {"none": {name: r["bound"] for name in r["step"]}} if "bound" in r else {}
    return {"none": r["pipeline"]}, end_to_end, bound


def train_table(r: dict[str, Any]) -> list[str]:
    pipelines, end_to_end, bound = train_views(r)
    lines = [
        f"`{r.get('command')}`",
        "",
        (
            f"{_machine(r)}; crop {r['crop_size']}x{r['crop_size']}, batch {r['batch_size']}, precision {r['precision']}; "
            f"data: {r['data']}; {_load(r)}."
        ),
        "",
        "| what | images/s | ms per batch/step |",
        "| --- | ---: | ---: |",
    ]
    for mode, p in pipelines.items():
        built = r.get("cache_build_s", {}).get(mode)
        lines.append(f"| data pipeline, `--cache {mode}`: {PIPELINE_WHAT[mode]}, {p['workers']} worker(s)"
                     + (f" (built once in {built:.0f} s)" if built is not None else "")
                     + f" | {p['images_per_s']:.2f} | {p['batch_ms']:.0f} |")
    alt = r.get("pipeline_composed")
    if alt:
        lines.append(
            f"| data pipeline with `ComposedTrainTransform` (the plain v2.Compose; same output), "
            f"{alt['workers']} worker(s) | {alt['images_per_s']:.2f} | {alt['batch_ms']:.0f} |"
        )
    variants = r.get("step_variants") or {name: {"": s} for name, s in r["step"].items()}
    for name, by_variant in variants.items():
        for variant, s in by_variant.items():
            what = f" ({variant})" if variant else ""
            lines.append(f"| training step {name}{what}, random data on the device | {s['images_per_s']:.2f} | "
                         f"{s['step_ms']:.0f} |")
    for name, s in r.get("step_channels_last", {}).items():  # reports that also timed the step in channels-last
        lines.append(
            f"| training step {name} in channels_last (model and images NHWC) | {s['images_per_s']:.2f} | "
            f"{s['step_ms']:.0f} |"
        )
    for mode, by_model in end_to_end.items():
        for name, s in by_model.items():
            share = s["images_per_s"] / r["step"][name]["images_per_s"]
            lines.append(f"| {name} end to end, `--cache {mode}` ({share:.2f}x the step alone) | "
                         f"{s['images_per_s']:.2f} | {s['step_ms']:.0f} |")
    lines.append("")
    for mode, by_model in bound.items():
        lines.append(f"With `--cache {mode}` training is bound by the "
                     + ", ".join(f"**{what}** ({name})" for name, what in by_model.items()) + ".")
    if r["threads"] <= 2 and r["device"] == "cpu" and end_to_end:
        lines.append(
            "On 2 cores the loader's workers and the training step share the same cores, so the "
            "end-to-end rows are lower than either alone."
        )
    return lines


def _rows(r: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["model"], row["variant"]): row for row in r["models"].values()}


def gpu_check_table(r: dict[str, Any]) -> list[str]:
    """What ``tools/gpu_check.sh`` found beyond the benchmark's own reports: the tests, the largest batch, a resume,
    and where the training loader's time goes."""
    env = r["env"]
    tf32 = env.get("tf32", {})
    lines = [f"`{r['command']}` on {env['gpu']} ({env['memory_gib']} GiB, {env['multiprocessors']} SMs, driver "
             f"{env.get('driver')}), torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}; TF32 in "
             f"convolutions {'on' if tf32.get('cudnn_conv') else 'off'}, in matrix products "
             f"{'on' if tf32.get('matmul') else 'off'} (PyTorch's defaults).", "",
             f"- Tests marked `cuda`: {r['tests']['result']}.", ""]
    lines += ["| model | largest training batch of 1024x2048 frames (fp16 autocast, AdamW) | first that fails | peak GiB |",
              "| --- | ---: | ---: | ---: |"]
    for name, m in r["max_batch"].items():
        lines.append(f"| {name} | {m['largest_batch']} | {m['first_failing'] or '-'} | {_fmt(m.get('peak_gib'))} |")
    for key, res in r.get("resume", {}).items():
        lines += ["", f"- Kill and resume ({key}): SIGTERM at step {res['stopped_at']} of {res['steps']}, checkpoint "
                  f"written, resumed to the end: {'yes' if res['resumed_to_end'] else 'no'}. {res.get('note', '')}"]
    runs = r.get("torchrun") or {}
    if "2_process" in runs:
        one, two = runs["1_process"]["images_per_s"], runs["2_process"]["images_per_s"]
        lines += ["", f"- `aticnet train --cache device`, 720 crops, batch 32, fp16: one GPU {_fmt(one, '.0f')} images/s, "
                  f"two under torchrun {_fmt(two, '.0f')} images/s"
                  + (f" ({two / one:.2f}x)." if one and two else ".")]
    ab = r.get("pipeline_ab")
    if ab:
        lines += ["", f"Training loader on the GPU machine's host ({ab['cpu']}, {ab['cores']} cores), 1024x2048 PNG frames "
                  f"to 720x720 crops, batch 16, {ab['cpu_uint8']['workers']} workers, steady state:", "",
                  "| where the rescale and crop run | images/s |", "| --- | ---: |",
                  f"| the loader's processes (decode, rescale, crop) | {ab['cpu_uint8']['images_per_s']:.0f} |",
                  f"| the GPU (the loader only decodes; `augment_on: device`) | {ab['device_defer']['images_per_s']:.0f} |",
                  "", f"The GPU's share costs {ab['device_augment_ms_per_batch16']:.1f} ms per batch of 16."]
    return lines


def stream_table(r: dict[str, Any]) -> list[str]:
    """``aticnet stream`` against the network alone, and a live source's latency (benchmarks/stream.py)."""
    w, h = r["size"]
    alone, e2e, live = r["network_alone"], r["end_to_end"], r["live"]
    return [f"`{r['command']}`", "", f"{_machine(r)}; {r['weights']} ({alone['backend']}), {w}x{h} frames, infer-scale "
            f"{r['infer_scale']:g}, labels at full size, {r['frames']} frames.", "",
            "| what | frames/s | latency p50 / p95 / p99 ms | dropped |", "| --- | ---: | --- | ---: |",
            f"| the network alone (`predict`, one frame at a time) | {alone['fps']:.1f} | - | - |",
            f"| `aticnet stream --file` (every frame kept; decode, infer, encode overlapped) | {e2e['fps']:.1f} | "
            f"{_latency(e2e)} | {e2e['dropped']} |",
            f"| `aticnet stream --live` (the file read at {r['rate']} frames/s, newest frame wins) | {live['fps']:.1f} | "
            f"{_latency(live)} | {live['dropped']} of {live['frames_in']} |", "",
            "Per frame in `stream --file` (medians, the stages sharing the cores): "
            + ", ".join(f"{stage} {t['median']:.1f} ms" for stage, t in e2e.get("stage_ms", {}).items())
            + " (render: the overlay and the H.264 encoding)."]


def _latency(stats: dict[str, Any]) -> str:
    ms = stats.get("latency_ms") or {}
    return " / ".join(f"{ms[p]:.0f}" for p in ("p50", "p95", "p99")) if ms else "-"


def serve_table(r: dict[str, Any]) -> list[str]:
    """``aticnet serve`` under concurrent clients with bad requests mixed in (benchmarks/serve_load.py)."""
    ms = r.get("latency_ms", {})
    lines = [f"`{r['command']}`", "", f"{_machine(r)}; {r['clients']} clients, {r['size']} images, {r['seconds']:.0f} s.",
             "", "| requests/s | p50 / p95 / p99 ms | mean batch (max) | valid requests failed | bad requests answered 4xx "
             "| offline batched predict images/s | serve / offline |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
             f"| {r['requests_per_s']:.2f} | {ms.get('p50', 0):.0f} / {ms.get('p95', 0):.0f} / {ms.get('p99', 0):.0f} | "
             f"{r['mean_batch']:.2f} ({r['max_batch']}) | {r['failed_valid']} | {r['bad_answered_4xx']} of {r['bad_sent']} | "
             f"{_fmt(r.get('offline_images_per_s'), '.2f')} | {_fmt(r.get('serve_over_offline'), '.2f')} |"]
    if r.get("bad_not_4xx"):
        lines += ["", f"Bad requests not answered 4xx: {', '.join(r['bad_not_4xx'])}."]
    big = r.get("big") or []
    if big:
        statuses = ", ".join(f"{n} x {code}" for code, n in sorted(Counter(b["status"] for b in big).items()))
        lines += ["", f"Large images ({r['big_size']}) sent beside the load: {len(big)} ({statuses}), "
                  f"{max(b['seconds'] for b in big):.1f} s the slowest."]
        if r.get("work_over_offline") is not None:
            lines[-1] += (f" Counting their pixels, the server did {r['served_megapixels_per_s']:.2f} megapixels/s, "
                          f"{r['work_over_offline']:.2f}x offline batched predict's.")
    if "live_probes" in r:
        lines += ["", f"`/v2/health/live` probed {r['live_probes']} times during the load: {r['live_failed']} failed, "
                  f"the slowest answer {r['live_max_ms']:.0f} ms."]
    peaks = [f"{name} {r[f'{name}_peak_mb']} MB" for name in ("replica", "front") if f"{name}_peak_mb" in r]
    if peaks:
        lines += ["", f"Peak resident memory: {', '.join(peaks)}."]
    return lines



def ray_table(r: dict[str, Any]) -> list[str]:
    """``aticnet predict --ray`` on one and two worker nodes of 1 CPU each (benchmarks/ray_batch_scaling.py)."""
    lines = [f"`{r['command']}`", "", f"{_machine(r)}; {r['size']} images.", "",
             "| worker nodes | steady images/s | images/s with start-up | images per node |", "| ---: | ---: | ---: | --- |"]
    for run in r["runs"]:
        lines.append(f"| {run['worker_nodes']} | {run['steady_images_per_s']:.2f} | {run['driver_images_per_s']:.2f} | "
                     f"{', '.join(str(v) for v in run['images_per_node'].values())} |")
    return [*lines, "", f"Two nodes over one: {r['two_over_one_steady']:.2f}x in steady state, "
            f"{r['two_over_one_driver']:.2f}x with Ray's start-up and the model loading."]
