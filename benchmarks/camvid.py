"""ICNet against AtICNet on real CamVid, from scratch, with the same recipe and seeds.

    python benchmarks/camvid.py --data-root ../shared/camvid --out runs/camvid            # full: 2 seeds
    python benchmarks/camvid.py --data-root ../shared/camvid --out runs/camvid_quick --quick

Writes under --out: one run directory per model and seed (each loadable with --weights),
results.json and results.md (val mIoU, per-class IoU, parameters, latency, training
time; mean and spread over seeds), curves.png and comparison.png (the paper's Fig. 4
layout on CamVid val). The recipe is configs/camvid.yaml; --quick shortens the schedule.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from aticnet.analyze import count_parameters, measure_latency
from aticnet.checkpoint import load_model
from aticnet.config import load_config
from aticnet.data import EvalTransform, build_dataset
from aticnet.train import train
from aticnet.visualize import comparison_figure, curves_figure

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "camvid.yaml"
QUICK = {"max_steps": 500, "eval_every": 250, "save_every": 250}  # about 6 minutes per model on 2 CPU cores


def run_one(model: str, seed: int, args: argparse.Namespace) -> dict:
    run_dir = Path(args.out) / f"{model}_seed{seed}"
    config = load_config(RECIPE, model=model, seed=seed, data_root=args.data_root, out=str(run_dir), **(QUICK if args.quick else {}))
    if args.steps:
        config = dataclasses.replace(config, max_steps=args.steps, eval_every=max(1, args.steps // 4), save_every=max(1, args.steps // 4))
    if (run_dir / "model.safetensors").is_file() and (run_dir / "summary.json").is_file() and not args.retrain:
        print(f"== {run_dir} is done; reusing it (--retrain to train again) ==", flush=True)
        return json.loads((run_dir / "summary.json").read_text())
    resume = "auto" if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("step_*.pt")) else None
    config = dataclasses.replace(config, resume=resume)
    print(f"== {model}, seed {seed}: {config.max_steps} steps -> {run_dir} ==", flush=True)
    start = time.perf_counter()
    summary = train(config)
    seconds = time.perf_counter() - start
    net, _ = load_model(run_dir)
    result = {
        "model": model,
        "seed": seed,
        "run_dir": str(run_dir),
        "steps": summary["step"],
        "miou": summary["scores"]["miou"],
        "pixel_accuracy": summary["scores"]["pixel_accuracy"],
        "per_class_iou": summary["scores"]["per_class_iou"],
        "params": count_parameters(net)["total"],
        "latency_ms_360x480": measure_latency(net, (360, 480), runs=10, warmup=2),
        "train_minutes": seconds / 60,
        "resumed": resume is not None,
    }
    (run_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def mean_or_none(values: list[float | None]) -> float | None:
    """Mean of the defined values in percent; None when a class was never scored (null in every run)."""
    defined = [100 * v for v in values if v is not None]
    return statistics.mean(defined) if defined else None


def summarize(results: list[dict], models: list[str]) -> dict:
    table = {}
    for m in models:
        rs = [r for r in results if r["model"] == m]
        mious = [100 * r["miou"] for r in rs]
        table[m] = {
            "seeds": [r["seed"] for r in rs],
            "miou": mious,
            "miou_mean": statistics.mean(mious),
            "miou_std": statistics.stdev(mious) if len(mious) > 1 else None,
            "params": rs[0]["params"],
            "latency_ms_360x480": statistics.median(r["latency_ms_360x480"] for r in rs),
            # a resumed run's clock covers only its last segment, so it is left out when others exist
            "train_minutes": statistics.mean(r["train_minutes"] for r in ([r for r in rs if not r["resumed"]] or rs)),
            "per_class_iou": {c: mean_or_none([r["per_class_iou"][c] for r in rs]) for c in rs[0]["per_class_iou"]},
        }
    return table


def format_iou(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_markdown(table: dict, results: list[dict]) -> str:
    models = list(table)
    lines = [
        "| model | val mIoU per seed | mean ± std | parameters | CPU latency 360x480 | training time per run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m, t in table.items():
        std = f" ± {t['miou_std']:.1f}" if t["miou_std"] is not None else ""
        lines.append(
            f"| {m} | {', '.join(f'{v:.1f}' for v in t['miou'])} | {t['miou_mean']:.1f}{std} | {t['params'] / 1e6:.2f} M | "
            f"{t['latency_ms_360x480']:.0f} ms | {t['train_minutes']:.0f} min |"
        )
    if len(models) == 2:
        a, b = (table[m] for m in models)
        diff = b["miou_mean"] - a["miou_mean"]
        if a["miou_std"] is None or b["miou_std"] is None:
            lines += ["", f"{models[1]} − {models[0]}: {diff:+.1f} mIoU, from one seed: no spread to judge it by."]
        else:
            spread = max(a["miou_std"], b["miou_std"])
            verdict = "larger" if abs(diff) > spread else "not larger"
            lines += ["", f"{models[1]} − {models[0]}: {diff:+.1f} mIoU; the seed spread (largest std) is {spread:.1f}: "
                          f"the difference is {verdict} than the spread."]
    lines += ["", "| class | " + " | ".join(models) + " |", "| --- |" + " --- |" * len(models)]
    for c in table[models[0]]["per_class_iou"]:
        lines.append(f"| {c} | " + " | ".join(format_iou(table[m]["per_class_iou"][c]) for m in models) + " |")
    lines += ["", f"Command: `python {' '.join(sys.argv)}`",
              f"Hardware: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
              f"training time summed over runs {sum(r['train_minutes'] for r in results):.0f} min."]
    resumed = [f"{r['model']} seed {r['seed']}" for r in results if r["resumed"]]
    if resumed:
        lines.append(f"Resumed from a checkpoint (their time counts only the last segment): {', '.join(resumed)}.")
    return "\n".join(lines)


def figures(results: list[dict], models: list[str], args: argparse.Namespace) -> None:
    out = Path(args.out)
    first = [next(r for r in results if r["model"] == m) for m in models]
    curves_figure([r["run_dir"] for r in results], out / "curves.png", labels=[f"{r['model']} s{r['seed']}" for r in results])
    nets = {r["model"]: load_model(r["run_dir"]) for r in first}
    net, meta = nets[models[0]]
    val = build_dataset("camvid", args.data_root, "val", transform=EvalTransform(mean=net.config.mean, std=net.config.std))
    rows = []
    with torch.inference_mode():
        for i in sorted({0, len(val) // 2, len(val) - 1}):
            image, label = val.read(i)
            x, _ = val[i]
            rows.append({"image": image.permute(1, 2, 0), "label": label,
                         "predictions": {m: n(x[None]).argmax(1)[0] for m, (n, _) in nets.items()}})
    comparison_figure(rows, meta["colors"], meta["classes"], out / "comparison.png", title="CamVid val (seed 0 runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="CamVid in the SegNet layout (train/, trainannot/, val/, valannot/)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="a short schedule (under 20 minutes for both models)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per model (default 2, --quick 1)")
    parser.add_argument("--models", default="icnet,aticnet")
    parser.add_argument("--steps", type=int, default=None, help="override the schedule's length")
    parser.add_argument("--retrain", action="store_true", help="train again even when a run is complete")
    args = parser.parse_args()
    seeds = args.seeds or (1 if args.quick else 2)
    models = args.models.split(",")
    results = [run_one(m, s, args) for s in range(seeds) for m in models]
    table = summarize(results, models)
    markdown = format_markdown(table, results)
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps({"runs": results, "summary": table}, indent=2) + "\n")
    (out / "results.md").write_text(markdown + "\n")
    figures(results, models, args)
    print(markdown)


if __name__ == "__main__":
    main()
