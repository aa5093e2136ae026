"""BENCHMARKS.md from the JSON of ``aticnet benchmark`` runs: tables, targets, what pays.

``render_markdown(reports)`` takes the parsed JSON of one or more runs (inference runs and
``--train`` runs, CPU and GPU) and returns the whole document. Nothing in it is typed by
hand: every number comes from a report, and every table names the command that made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..inference.segmenter import DEFAULT_CPU_ENGINE
from .tables import _fmt, _is_inference, _is_train, _load, _rows, deploy_table, table_for, train_views

MATMUL_REFERENCE = 175.0  # GFLOP/s: the fp32 matrix-product rate of 2 cores of the reference CPU (the targets' yardstick)
PAYS = 1.05  # a variant "pays" when it is at least this much faster than plain, in the same run


def deploy_targets(reports: Sequence[dict[str, Any]]) -> list[str]:
    """The deployment targets, judged from the deployable-forms reports (1024x2048, as ratios within one run)."""
    out: list[str] = []
    for r in (r for r in reports if r.get("mode") == "deploy" and "1024x2048" in r["sizes"]):
        key = "latency_ms_1024x2048"
        by_model: dict[str, list[dict[str, Any]]] = {}
        for row in r["rows"]:
            by_model.setdefault(row["model"], []).append(row)
        for model, rows in by_model.items():
            base = rows[0]
            for row in (x for x in rows if "int8" in x["form"] and x["infer_scale"] == 1):
                speed, loss = base[key] / row[key], 100 * (base["miou"] - row["miou"])
                met = speed >= 2.5 and loss <= 0.5
                out.append(f"  - {model}, {row['form']}: {speed:.1f}x faster than {base['form']}, {loss:+.2f} mIoU "
                           f"lost on {r['split']}; {'**met**' if met else '**not met**'}")
            fp32 = [x for x in rows if x["precision"] == "32" and "int8" not in x["form"] and x["infer_scale"] == 1]
            ours = min((x for x in fp32 if x["backend"] == "torch"), key=lambda x: x[key])
            ov = next((x for x in fp32 if x["backend"] == "openvino"), None)
            if ov:
                if ours[key] <= ov[key]:
                    verdict = "**met**" if DEFAULT_CPU_ENGINE == "torch" else "**not met**: PyTorch is faster here"
                elif DEFAULT_CPU_ENGINE == "openvino":
                    verdict = "**met**: OpenVINO is faster, and a run loads on it by default where it is installed"
                else:
                    verdict = "**not met**: OpenVINO is faster but not the default engine"
                out.append(f"  - {model}: fastest PyTorch fp32 ({ours['form']}) {ours[key]:.0f} ms vs OpenVINO fp32 "
                           f"{ov[key]:.0f} ms; {verdict}")
        fastest = {m: min((x for x in rows if x["infer_scale"] == 1), key=lambda x: x[key]) for m, rows in by_model.items()}
        if "icnet" in fastest and "aticnet" in fastest:
            ratio = fastest["aticnet"][key] / fastest["icnet"][key]
            out.append(f"  - AtICNet / ICNet in their fastest forms at full input size ({fastest['aticnet']['form']}; "
                       f"{fastest['icnet']['form']}): {ratio:.2f}x; {'**met**' if ratio <= 1.15 else '**not met**'} "
                       "(target <= 1.15x)")
        for row in (x for x in by_model.get("aticnet", []) if x["infer_scale"] == 0.5):
            fps = 1000 / row[key]
            out.append(f"  - live video, AtICNet {row['form']} on 1024x2048 frames, labels at full size: {fps:.1f} "
                       f"frames/s, {100 * (row['miou'] - by_model['aticnet'][0]['miou']):+.2f} mIoU on {r['split']}; "
                       f"{'**met**' if fps >= 15 else '**not met**'} (target >= 15)")
    return (["**int8 >= 2.5x PyTorch fp32 at <= 0.5 mIoU loss; the default fp32 engine is the fastest fp32 form; "
             "AtICNet <= 1.15x ICNet; live video >= 15 frames/s**", *out] if out else [])


def _pairs(reports: Sequence[dict[str, Any]], first: str, second: str):
    """(report, variant, first's row, second's row) for each variant a report measured both models in."""
    for r in reports:
        rows = _rows(r)
        for (model, variant), row in rows.items():
            other = rows.get((second, variant))
            if model == first and other:
                yield r, variant, row, other


def _aticnet_vs_icnet(icnet: dict[str, Any], at: dict[str, Any]) -> str:
    ratio = at["latency_ms"] / icnet["latency_ms"]
    verdict = "**met**" if ratio <= 1.25 else f"**not met**: {ratio - 1.25:.2f} over"
    return (f"AtICNet {at['latency_ms']:.0f} ms / ICNet {icnet['latency_ms']:.0f} ms = {ratio:.2f}x; {verdict} "
            f"(FLOPs ratio {at['gflops'] / icnet['gflops']:.2f}x)")


def _ours_vs_lraspp(row: dict[str, Any], peer: dict[str, Any]) -> str:
    ratio = peer["latency_ms"] / row["latency_ms"]
    verdict = "**met**" if ratio > 1 else f"**not met**: {1 / ratio:.2f}x slower"
    return f"{row['latency_ms']:.0f} ms vs LRASPP {peer['latency_ms']:.0f} ms (LRASPP / ours = {ratio:.2f}); {verdict}"


def targets(reports: Sequence[dict[str, Any]]) -> list[str]:
    """Each issue-5 target: met, or the measured distance to it, from every report that can judge it."""
    out: list[str] = []
    full = [r for r in reports if _is_inference(r) and r["size"] == [1024, 2048]]

    def half_width(row: dict[str, Any]) -> bool:
        return row.get("width") == 0.5

    lines = [f"  - {r['device']}, {variant}: {_aticnet_vs_icnet(icnet, at)}"
             for r, variant, icnet, at in _pairs(full, "icnet", "aticnet") if half_width(icnet) and half_width(at)]
    out.append("- **AtICNet latency <= 1.25 x ICNet at 1024x2048, width 0.5**")
    out += lines or ["  - no report at 1024x2048 with both models at width 0.5"]

    lines = []
    for r in full:
        if r["device"] != "cpu":
            continue
        for (model, variant), row in _rows(r).items():
            if model == "icnet" and half_width(row):
                needed_ms = 1000 * row["gflops"] / (0.5 * MATMUL_REFERENCE)
                share = row["effective_gflops_per_s"] / MATMUL_REFERENCE
                verdict = (
                    "**met**" if share >= 0.5 else f"**not met**: needs {row['latency_ms'] / needed_ms:.2f}x faster"
                )
                lines.append(
                    f"  - {variant}: {row['latency_ms']:.0f} ms, {row['effective_gflops_per_s']:.0f} GFLOP/s = "
                    f"{100 * share:.0f}% of {MATMUL_REFERENCE:.0f} (this run measured {r['matmul_gflops']:.0f}); "
                    f"target <= {needed_ms:.0f} ms; {verdict}"
                )
    out.append(
        f"- **ICNet-0.5 at 1024x2048 reaches >= 50% of the {MATMUL_REFERENCE:.0f} GFLOP/s fp32 matrix-product "
        "rate on this CPU (about <= 0.7 s); better with --fast**"
    )
    out += lines or ["  - no CPU report of ICNet-0.5 at 1024x2048"]

    lines = [f"  - {r['device']}, {variant}: {ours} {_ours_vs_lraspp(row, peer)}"
             for ours in ("icnet", "aticnet") for r, variant, peer, row in _pairs(full, "lraspp_mobilenet_v3", ours)]
    out.append("- **ICNet and AtICNet faster than LRASPP-MobileNetV3 at the same size and threads**")
    out += lines or ["  - no report at 1024x2048 with LRASPP beside ICNet/AtICNet"]

    lines = []
    for r in reports:
        if not _is_train(r):
            continue
        for mode, p in train_views(r)[0].items():
            pipe = p["images_per_s"]
            for name, s in r["step"].items():
                verdict = (
                    "**met**"
                    if pipe >= s["images_per_s"]
                    else f"**not met**: pipeline {s['images_per_s'] / pipe:.2f}x too slow"
                )
                lines.append(
                    f"  - {r['device']}, crop {r['crop_size']}, batch {r['batch_size']}, --cache {mode}, {name}: "
                    f"pipeline {pipe:.2f} images/s vs step {s['images_per_s']:.2f}; {verdict}"
                )
    out.append("- **The data pipeline delivers at least the images/s the training step consumes**")
    out += lines or ["  - no --train report"]
    return out


GPU_FPS_TARGETS = {"icnet": 300, "aticnet": 250}  # frames/s at 1024x2048, batch 1, fp16 (the ICNet release: 30)
GPU_STEP_TARGETS = {"icnet": 800, "aticnet": 650}  # training images/s, 720 crops, batch 16, fp16, H100/H200 class
FEEDS_TARGET = 0.9  # training on one GPU: end to end delivers this share of the step alone


def gpu_targets(reports: Sequence[dict[str, Any]]) -> list[str]:
    """The GPU targets: ICNet and AtICNet frames/s at 1024x2048 in fp16, the training step's images/s, and a step
    fed by its pipeline."""
    out = [f"- **ICNet >= {GPU_FPS_TARGETS['icnet']} and AtICNet >= {GPU_FPS_TARGETS['aticnet']} frames/s at 1024x2048, "
           "batch 1, fp16**"]
    for r in reports:
        if not _is_inference(r) or r["size"] != [1024, 2048]:
            continue
        for (model, variant), row in _rows(r).items():
            target = GPU_FPS_TARGETS.get(model)
            if target and ("+16" in variant or variant == "16"):
                verdict = "**met**" if row["fps"] >= target else f"**not met** ({target / row['fps']:.2f}x short)"
                out.append(f"  - {r['gpu']}, {model} {variant}: {row['fps']:.0f} frames/s "
                           f"({row['latency_ms']:.2f} ms); {verdict}")
    trains = [r for r in reports if _is_train(r)]
    out.append(f"- **The training step at 720x720 crops, batch 16, fp16: ICNet >= {GPU_STEP_TARGETS['icnet']}, "
               f"AtICNet >= {GPU_STEP_TARGETS['aticnet']} images/s**")
    for r in trains:
        for name, s in r["step"].items():
            target = GPU_STEP_TARGETS.get(name)
            if target and r["crop_size"] == 720 and r["batch_size"] == 16:
                verdict = "**met**" if s["images_per_s"] >= target else "**not met**"
                out.append(f"  - {r['gpu']}, {name} ({s.get('variant', 'step')}): {s['images_per_s']:.0f} images/s; "
                           f"{verdict}")
    out.append(f"- **Training on one GPU is fed: end to end >= {100 * FEEDS_TARGET:.0f}% of the images/s the "
               "step takes on device-resident data**")
    for r in trains:
        pipelines, end_to_end, _ = train_views(r)
        for mode, p in pipelines.items():
            pipe = p["images_per_s"]
            for name, s in r["step"].items():
                fed = min(end_to_end.get(mode, {}).get(name, {}).get("images_per_s", pipe), pipe) / s["images_per_s"]
                verdict = "**met**" if fed >= FEEDS_TARGET else "**not met**"
                out.append(f"  - {r['gpu']}, crop {r['crop_size']}, batch {r['batch_size']}, --cache {mode}, {name}: "
                           f"step {s['images_per_s']:.0f} images/s, pipeline {pipe:.0f} in steady state: fed "
                           f"{100 * min(fed, 1):.0f}%; {verdict}")
    return out


def serving_targets(reports: Sequence[dict[str, Any]]) -> list[str]:
    """The live-video, server and Ray Data targets, from benchmarks/stream.py, serve_load.py and ray_batch_scaling.py."""
    out = []
    for r in (r for r in reports if r.get("mode") == "stream"):
        ratio, fps, p95 = r["end_to_end_over_network"], r["end_to_end"]["fps"], r["live"]["latency_ms"]["p95"]
        vnni = r["cpu"].get("avx512_vnni") or r["cpu"].get("amx_int8")
        out += [f"  - stream, {r['weights']}, infer-scale {r['infer_scale']:g}: end to end {ratio:.2f}x the network "
                f"alone ({'**met**' if ratio >= 0.85 else '**not met**'}, target >= 0.85x); {fps:.1f} frames/s "
                + ((f"({'**met**' if fps >= 25 else '**not met**'}, target >= 25 on a CPU with VNNI)") if vnni else
                   "(the 25 frames/s target is for a CPU with VNNI; this one has none)")
                + f"; live at {r['rate']} frames/s: p95 {p95:.0f} ms ({'**met**' if p95 <= 150 else '**not met**'}, "
                f"target <= 150 ms; the network alone takes {r['network_alone']['median_ms']:.0f} ms a frame here)"]
    for r in (r for r in reports if r.get("mode") == "serve_load"):
        ratio = r.get("serve_over_offline")
        ok = ratio is not None and ratio >= 0.8 and r["failed_valid"] == 0
        out.append(f"  - serve, {r['clients']} clients at {r['size']}: {_fmt(ratio, '.2f')}x offline batched predict, "
                   f"p99 {r['latency_ms'].get('p99', 0):.0f} ms, {r['failed_valid']} valid requests failed with "
                   f"{r['bad_sent']} bad ones mixed in; {'**met**' if ok else '**not met**'} (target >= 0.8x, none failed)")
    for r in (r for r in reports if r.get("mode") == "ray_scaling"):
        ratio = r["two_over_one_steady"]
        out.append(f"  - Ray Data, two worker nodes of 1 CPU over one: {ratio:.2f}x in steady state; "
                   f"{'**met**' if ratio >= 1.6 else '**not met**'} (target >= 1.6x; both nodes and the driver share "
                   f"this machine's {r['cpu']['cores']} cores)")
    return (["- **Live video: stream >= 0.85x the network alone and >= 25 frames/s (VNNI), live p95 <= 150 ms; "
             "serve >= 0.8x offline with no valid request failed; Ray Data two nodes >= 1.6x one**", *out] if out else [])


def base_variant(variant: str, present: Sequence[str]) -> str:
    """The variant this one adds one step to: 'fast+compile' -> 'fast', 'fast' -> 'cl' (fold on top), 'cl' -> 'plain'."""
    parts = variant.split("+")
    candidates = ["+".join(parts[:-1])] if len(parts) > 1 else []
    if variant == "fast":
        candidates.append("cl")
    candidates.append("plain")
    return next(c for c in candidates if c in present)


def what_pays(reports: Sequence[dict[str, Any]]) -> list[str]:
    """Speed-up of every variant over plain and over the variant it adds one step to, in the same run."""
    lines = []
    for r in reports:
        if not _is_inference(r) or len(r.get("variants", [])) < 2 or "plain" not in r["variants"]:
            continue
        rows = _rows(r)
        h, w = r["size"]
        lines += [
            f"From `{r.get('command')}` ({r['device']}, {h}x{w}, {r['threads']} threads, {_load(r)}):",
            "",
            "| model | variant | latency ms | over plain | step | over the step's base | verdict for the step |",
            "| --- | --- | ---: | ---: | --- | ---: | --- |",
        ]
        for (model, variant), row in rows.items():
            plain = rows.get((model, "plain"))
            if not plain or variant == "plain":
                continue
            base = base_variant(variant, [v for m, v in rows if m == model])
            gain = rows[(model, base)]["latency_ms"] / row["latency_ms"]
            verdict = "pays" if gain >= PAYS else "does not pay"
            if "bf16" in variant or variant.endswith("+16"):
                verdict += " (lower precision: labels can differ, so opt-in only)"
            elif "compile" in variant:
                verdict += f" (first call, compiling: {row['first_call_s']:.0f} s)"
            lines.append(
                f"| {model} | {variant} | {row['latency_ms']:.0f} | {plain['latency_ms'] / row['latency_ms']:.2f}x | "
                f"{base} -> {variant} | {gain:.2f}x | {verdict} |"
            )
        lines.append("")
    return lines


def render_markdown(reports: Sequence[dict[str, Any]]) -> str:
    cpu = [r for r in reports if r["device"] == "cpu"]
    gpu = [r for r in reports if r["device"] == "cuda"]
    doc = [
        "# Benchmarks",
        "",
        (
            "Generated by `aticnet benchmark` from its JSON reports (`aticnet benchmark --report-from *.json --markdown "
            "BENCHMARKS.md`); every table names the command that made it. Protocol: batch 1 unless stated, "
            "warm-up first, every model in one process and interleaved, median and spread of many passes, the final "
            "upsample and argmax inside the timed region, device synchronised. Peers are torchvision's "
            "`lraspp_mobilenet_v3_large` and `deeplabv3_mobilenet_v3_large` with random weights and 19 classes. "
            "ICNet-family widths are 0.5 unless the table says otherwise; PSPNet is full width (1.0). "
            "Variants: `plain` = the model as built (our models compute in channels_last by default, "
            "`ModelConfig.channels_last`; the torchvision peers in NCHW); `fast` = Conv-BN folding + channels_last "
            "(`aticnet.inference.fast.optimize_for_inference`); `compile` = torch.compile (Inductor, freezing) of input -> labels; "
            "`bf16` = weights and activations in bfloat16."
        ),
        "",
        "## CPU",
        "",
        "Each table names its CPU and the flags that decide int8 and "
        "bf16 speed (avx512_vnni, avx512_bf16, AMX). Compare within a table, as ratios.",
        "",
    ]
    for r in cpu:
        doc += table_for(r) + [""]
    if not cpu:
        doc += ["No CPU report.", ""]
    doc += ["## Targets", "", *targets(reports), *deploy_targets(reports), *serving_targets(reports), "",
            "## What pays, variant by variant", ""]
    doc += what_pays([r for r in cpu if _is_inference(r)]) or ["No run compared variants (`--variants plain,fast,...`).", ""]
    doc += ["## GPU", ""]
    if gpu:
        doc += ["### Targets", "", *gpu_targets(gpu), ""]
        for r in gpu:
            doc += table_for(r) + [""]
        doc += what_pays([r for r in gpu if _is_inference(r)])
    else:
        doc += ["No GPU report. `tools/gpu_check.sh` on a CUDA machine makes them (about ten minutes).", ""]
    return "\n".join(doc).rstrip() + "\n"


__all__ = ["deploy_table", "deploy_targets", "render_markdown", "targets", "what_pays"]
