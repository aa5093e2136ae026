"""Summaries of CamVid runs (benchmarks/camvid.py): per-model means and spreads over seeds, paired differences
with their uncertainty, the experiments table, and the figures. Pure functions of the runs' summaries."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Two-sided 95% Student t quantiles by degrees of freedom (no scipy needed for n < 10 seeds).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values in percent; None when a class was never scored (null in every run)."""
    defined = [100 * v for v in values if v is not None]
    return statistics.mean(defined) if defined else None


def minutes_alone(rows: list[dict[str, Any]], batch_size: int) -> float:
    """A run's training minutes as if it had the machine to itself: the median step time of its metrics rows
    times its steps, plus its evaluations. (The wall clock also counts the time other work paused it.)"""
    train = [r for r in rows if r.get("kind") == "train" and r.get("images_per_s")]
    per_step = [batch_size / r["images_per_s"] for r in train]
    evals = sum(r.get("seconds", 0.0) for r in rows if r.get("kind") == "eval")
    return (statistics.median(per_step) * train[-1]["step"] + evals) / 60 if train else 0.0


def summarize(results: list[dict], models: list[str], latency: dict[str, float],
              key: str = "miou") -> dict[str, dict[str, Any]]:
    """Per model: the scores per seed (percent), mean, sample std, per-class means, size, latency and time.

    ``latency``: ms per model at 360x480, timed once all training is over (not per run: the architecture sets it)."""
    table = {}
    for m in models:
        rs = sorted((r for r in results if r["model"] == m), key=lambda r: r["seed"])
        if not rs:
            continue
        scores = [100 * r[key] for r in rs]
        table[m] = {
            "seeds": [r["seed"] for r in rs],
            "miou": scores,
            "miou_mean": statistics.mean(scores),
            "miou_std": statistics.stdev(scores) if len(scores) > 1 else None,
            "val_miou_mean": mean_or_none([r.get("val_miou") for r in rs]),
            "params": rs[0]["params"],
            "latency_ms_360x480": latency[m],
            "train_minutes": statistics.mean(r["train_minutes"] for r in rs),
            "per_class_iou": {c: mean_or_none([r["per_class_iou"][c] for r in rs]) for c in rs[0]["per_class_iou"]},
        }
    return table


def paired_difference(results: list[dict], a: str, b: str, key: str = "miou") -> dict[str, Any] | None:
    """``b - a`` in mIoU points over the seeds both models ran: mean, std, and a 95% t interval (None: no shared seed)."""
    by_seed = {(r["model"], r["seed"]): 100 * r[key] for r in results}
    seeds = sorted(s for (m, s) in by_seed if m == a and (b, s) in by_seed)
    if not seeds:
        return None
    diffs = [by_seed[(b, s)] - by_seed[(a, s)] for s in seeds]
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return {"seeds": seeds, "diffs": diffs, "mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(diffs)
    half = T_975[len(diffs) - 1] * std / len(diffs) ** 0.5
    return {"seeds": seeds, "diffs": diffs, "mean": mean, "std": std, "ci95": (mean - half, mean + half)}


def verdict(diff: dict[str, Any]) -> str:
    if diff["ci95"] is None:
        return "one seed: no interval to judge it by"
    low, high = diff["ci95"]
    if low > 0:
        return "better, beyond the seed-to-seed spread (the 95% interval excludes 0)"
    if high < 0:
        return "worse, beyond the seed-to-seed spread (the 95% interval excludes 0)"
    return "not separable from 0 at this number of seeds (the 95% interval contains 0)"


def format_iou(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_claim(table: dict, results: list[dict], pairs: Sequence[tuple[str, str]], held_out: str) -> str:
    """The claim's markdown: models x seeds on the held-out drive, paired differences, per-class IoU."""
    lines = [
        f"| model | held-out ({held_out}) mIoU per seed | mean ± std | val (training drive) mIoU | parameters "
        "| CPU latency 360x480 | training time per run |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m, t in table.items():
        std = f" ± {t['miou_std']:.1f}" if t["miou_std"] is not None else ""
        lines.append(
            f"| {m} | {', '.join(f'{v:.1f}' for v in t['miou'])} | {t['miou_mean']:.1f}{std} | "
            f"{format_iou(t['val_miou_mean'])} | {t['params'] / 1e6:.2f} M | {t['latency_ms_360x480']:.0f} ms | "
            f"{t['train_minutes']:.0f} min |"
        )
    lines.append("")
    for a, b in pairs:
        d = paired_difference(results, a, b)
        if d is None:
            continue
        spread = f", std {d['std']:.1f}, 95% interval [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]" if d["std"] else ""
        per_seed = ", ".join(f"{x:+.1f}" for x in d["diffs"])
        lines.append(f"- {b} − {a}, paired by seed ({per_seed}): mean {d['mean']:+.1f}{spread}: {verdict(d)}.")
    models = list(table)
    lines += ["", "| class | " + " | ".join(models) + " |", "| --- |" + " --- |" * len(models)]
    for c in table[models[0]]["per_class_iou"]:
        lines.append(f"| {c} | " + " | ".join(format_iou(table[m]["per_class_iou"][c]) for m in models) + " |")
    resumed = [f"{r['model']} seed {r['seed']}" for r in results if r["resumed"]]
    if resumed:
        lines += ["", f"Resumed from a checkpoint (exact: the same numbers as unbroken): {', '.join(resumed)}."]
    return "\n".join(lines)


def format_experiments(rows: list[dict[str, Any]], held_out: str) -> str:
    """The recipe experiments, one row per run: what changed, the command, held-out and val mIoU, time."""
    lines = [
        f"| experiment | change | held-out ({held_out}) mIoU | val (training drive) mIoU | steps | minutes | CPU | command |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:  # minutes compare only on one CPU
        lines.append(f"| {r['name']} (seed {r['seed']}) | {r['change']} | {100 * r['miou']:.1f} | "
                     f"{format_iou(None if r.get('val_miou') is None else 100 * r['val_miou'])} | {r['steps']} | "
                     f"{r['train_minutes']:.0f} | {r['cpu']} | `{r['command']}` |")
    return "\n".join(lines)


def figures(results: list[dict], models: list[str], out: Path, data_root: str, held_out: str) -> None:
    """curves.png of ``results`` (runs whose directories are here), and comparison.png (Fig. 4) on three held-out
    frames, each of ``models`` by its first run; a figure that lacks a run is left out, and said so."""
    import aticnet

    if not results:
        print("no run directory on this machine: no figures", flush=True)
        return
    aticnet.plot_runs([r["run_dir"] for r in results], out / "curves.png",
                      labels=[f"{r['model']} s{r['seed']}" for r in results])
    missing = [m for m in models if not any(r["model"] == m for r in results)]
    if missing:
        print(f"no comparison figure: no run of {', '.join(missing)} on this machine", flush=True)
        return
    first = [next(r for r in results if r["model"] == m) for m in models]
    frames = sorted(Path(data_root, "train").glob(f"{held_out}_*.png"))  # the held-out drive's frames
    picked = [frames[i] for i in sorted({0, len(frames) // 2, len(frames) - 1})]
    labels = [Path(data_root, "trainannot", f.name) for f in picked]  # CamVid ids; 11 = void, drawn black
    aticnet.compare_models([r["run_dir"] for r in first], picked, out / "comparison.png", labels=labels,
                           names=models, title=f"CamVid, drive {held_out} (never trained on)")
