"""``aticnet demo``: the main job on the embedded synthetic street scenes.

Draws the synthetic set, trains ICNet and AtICNet on it with the same small recipe,
evaluates both, and writes a report: a table (mIoU, per-class IoU, parameters, latency),
the training curves and a side-by-side figure (image | ground truth | ICNet | AtICNet).
Runs in a few minutes on 2 CPU cores; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from .data import EvalTransform, build_dataset
from .inference.timing import measure_latency
from .models.analysis import count_parameters
from .models.weights import load_model
from .training.config import TrainConfig
from .training.trainer import train
from .utils.io import write_json, write_text
from .visualization.drawing import comparison_figure, curves_figure

MODELS = ("icnet", "aticnet")
LATENCY_SIZE = (1024, 2048)  # the paper's (Cityscapes) resolution

# The demo recipe; configs/synthetic.yaml holds the same values for `aticnet train`.
DEMO_RECIPE = TrainConfig(
    dataset="synthetic",
    width=0.5,
    crop_size=128,
    scale_range=(0.75, 1.5),
    batch_size=8,
    workers=2,
    max_steps=600,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=1e-4,
    warmup_steps=20,
    eval_every=150,
    save_every=300,
    log_every=10,
)


def demo_config(model: str, out: Path, **overrides: Any) -> TrainConfig:
    return dataclasses.replace(DEMO_RECIPE, model=model, data_root=str(out / "data"), out=str(out / model), **overrides)


def run_demo(
    out: str | Path = "runs/demo", *, steps: int | None = None, latency_runs: int = 3, seed: int = 0, width: float = 0.5
) -> dict[str, Any]:
    """Train and compare both models; returns ``{name: {"miou", "params", "latency_ms", ...}}``."""
    out = Path(out)
    overrides: dict[str, Any] = {"seed": seed, "width": width}
    if steps is not None:
        overrides.update(max_steps=steps, eval_every=max(1, steps // 4), save_every=max(1, steps // 2))
    results: dict[str, Any] = {}
    for name in MODELS:
        print(f"== training {name} on synthetic scenes ==", flush=True)
        start = time.perf_counter()
        summary = train(demo_config(name, out, **overrides))
        model, meta = load_model(out / name)
        scores = summary["scores"]
        results[name] = {
            "miou": scores["miou"],
            "pixel_accuracy": scores["pixel_accuracy"],
            "per_class_iou": scores["per_class_iou"],
            "params": count_parameters(model)["total"],
            "latency_ms": measure_latency(model, LATENCY_SIZE, runs=latency_runs) if latency_runs else None,
            "latency_size": list(LATENCY_SIZE),
            "train_seconds": time.perf_counter() - start,
            "steps": summary["step"],
        }
    figures(out, meta)
    report = format_report(results)
    print(report)
    write_text(out / "report.md", report + "\n\n![curves](curves.png)\n\n![comparison](comparison.png)\n")
    write_json(out / "results.json", results)
    return results


def figures(out: Path, meta: dict[str, Any], num_images: int = 3) -> None:
    """curves.png (loss and mIoU of both runs) and comparison.png (the paper's Fig. 4 layout)."""
    curves_figure([out / m for m in MODELS], out / "curves.png", labels=list(MODELS))
    models = {name: load_model(out / name)[0] for name in MODELS}
    mcfg = models[MODELS[0]].config
    val = build_dataset("synthetic", out / "data", "val", transform=EvalTransform(mean=mcfg.mean, std=mcfg.std))
    rows = []
    with torch.inference_mode():
        for i in range(min(num_images, len(val))):
            image, label = val.read(i)
            x, _ = val[i]
            rows.append(
                {
                    "image": image.permute(1, 2, 0),
                    "label": label,
                    "predictions": {name: m(x[None]).argmax(1)[0] for name, m in models.items()},
                }
            )
    comparison_figure(rows, meta["colors"], meta["classes"], out / "comparison.png", title="synthetic val: ICNet vs AtICNet")


def format_report(results: dict[str, Any]) -> str:
    names = list(results)
    h, w = results[names[0]]["latency_size"]
    lines = [
        "| model | val mIoU | pixel acc. | parameters | CPU latency at "
        f"{h}x{w} | training time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        r = results[name]
        latency = f"{r['latency_ms']:.0f} ms" if r["latency_ms"] is not None else "-"
        lines.append(
            f"| {name} | {100 * r['miou']:.1f} | {100 * r['pixel_accuracy']:.1f} | {r['params'] / 1e6:.2f} M | "
            f"{latency} | {r['train_seconds']:.0f} s |"
        )
    lines += ["", "| class | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for cls in results[names[0]]["per_class_iou"]:
        cells = [results[n]["per_class_iou"].get(cls) for n in names]
        lines.append(f"| {cls} | " + " | ".join("-" if v is None else f"{100 * v:.1f}" for v in cells) + " |")
    return "\n".join(lines)
