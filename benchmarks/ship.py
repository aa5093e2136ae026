"""Package a final CamVid run as shipped weights: src/aticnet/weights/NAME/ (fp16 safetensors, config.json with the
measured figures, README.md model card). Every figure comes from a file a command wrote; the card names the command.

    python benchmarks/ship.py --run runs/camvid/final_bf16_15000/aticnet --name aticnet-camvid \
        --train-command "aticnet train --config configs/camvid_final.yaml --model aticnet --out ..." \
        --heldout benchmarks/results/camvid/experiments/aticnet_bf16_15000_seed0.json \
        --heldout-eval runs/ship/aticnet_heldout.json --heldout-tta runs/ship/aticnet_heldout_tta.json \
        --deploy runs/ship/deploy/deploy.json

Inputs: the run (its config.yaml and metrics.jsonl: steps, minutes), the kept summary of the same recipe on the
held-out drive, ``aticnet evaluate --json`` of that held-out run single-scale and with test-time augmentation, and
``benchmarks/deploy.py``'s report on the final run (latency of each deployable form, int8's mIoU change).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

import aticnet

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "aticnet" / "weights"
TERMS = ("CamVid (Brostow, Fauqueur, Cipolla, 'Semantic object classes in video: a high-definition ground truth "
         "database', Pattern Recognition Letters 2009) is released for research use; cite it, and check its terms "
         "before any other use of these weights.")
SPEED_FORMS = ("PyTorch fp32 (model as built)", "PyTorch fp32, aticnet.load (BN folded, exact labels step)",
               "OpenVINO fp32", "OpenVINO int8 (NNCF)", "PyTorch fp32, infer-scale 0.5", "OpenVINO int8, infer-scale 0.5")


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def heldout_section(summary: dict, single: dict, tta: dict, tta_command: str, eval_command: str) -> list[str]:
    """The same recipe on the held-out drive: scores, per class, where each class's misses go."""
    lines = [
        "The CamVid test split (233 frames) is not part of aticnet; score these weights on it with "
        "`aticnet evaluate --weights NAME --dataset camvid --data-root CAMVID --split test`.",
        "",
        f"The same recipe ({summary['steps']} steps, seed {summary['seed']}) trained on CamVid train without drive "
        f"0006R0 (266 frames) and scored on 0006R0 (101 frames it never saw), one seed: **{pct(single['miou'])} mIoU** "
        f"single scale, **{pct(tta['miou'])}** with the flip and scales 1, 1.25, 1.5 averaged; pixel accuracy "
        f"{pct(single['pixel_accuracy'])}. ({summary['cpu']}, torch {summary['torch']}.)",
        "",
        "```bash", summary["command"], eval_command, tta_command, "```", "",
        "| class | IoU | IoU with flip + scales | mostly missed as (share of the class) |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, iou in single["per_class_iou"].items():
        missed = single.get("missed_as", {}).get(name)
        where = f"{missed['class']} ({100 * missed['share']:.0f}%)" if missed else "-"
        lines.append(f"| {name} | {pct(iou)} | {pct(tta['per_class_iou'].get(name))} | {where} |")
    return lines


def speed_section(deploy: dict, run: str) -> tuple[list[str], dict[str, Any]]:
    """Latency of each deployable form and int8's mIoU change, from benchmarks/deploy.py's report."""
    rows = [r for r in deploy["rows"] if r["run"] == run and r["form"] in SPEED_FORMS]
    sizes = deploy["sizes"]
    cpu = deploy["cpu"]
    flags = [f for f in ("avx512_vnni", "avx512_bf16", "amx_bf16") if cpu.get(f)]
    lines = [f"Batch 1, a CamVid frame resized to the size, image to labels at full size, medians of "
             f"{deploy['timed_runs']} passes of every form interleaved; {cpu['model']} "
             f"({', '.join(flags) or 'AVX2'}), {deploy['threads']} threads, torch {deploy['torch']}. mIoU on CamVid "
             f"{deploy['split']}, which these weights trained on: the change from fp32 is what it measures.", "",
             "| form | " + " | ".join(f"ms at {s}" for s in sizes) + f" | {deploy['split']} mIoU (change) |",
             "| --- |" + " ---: |" * (len(sizes) + 1)]
    base = next(r for r in rows if r["form"] == SPEED_FORMS[0])
    figures: dict[str, Any] = {}
    for r in rows:
        cells = [f"{r[f'latency_ms_{s}']:.0f}" for s in sizes]
        lines.append(f"| {r['form']} | {' | '.join(cells)} | {100 * r['miou']:.1f} ({100 * (r['miou'] - base['miou']):+.2f}) |")
        figures[r["form"]] = {f"ms_{s}": round(r[f"latency_ms_{s}"], 1) for s in sizes}
        figures[r["form"]]["miou_change"] = round(r["miou"] - base["miou"], 4)
    lines += ["", "```bash", deploy["command"], "```"]
    return lines, figures


def limits_section(single: dict) -> list[str]:
    worst = sorted(((v, k) for k, v in single["per_class_iou"].items() if v is not None))[:4]
    confused = [f"{k} ({pct(v)} IoU, mostly read as {single['missed_as'][k]['class']})" for v, k in worst
                if single.get("missed_as", {}).get(k)]
    return [
        "- For research and prototyping of street-scene segmentation on frames like CamVid's: a forward-facing "
        "camera in a car, daylight, one city (Cambridge, UK), 480x360 frames (the SegNet version of CamVid).",
        "- Trained from scratch on 468 frames (CamVid train + val): expect much lower accuracy on other cities, "
        "cameras, weather, night and resolutions; fine-tune on your own frames (`--init NAME`).",
        f"- On a drive it never saw, the same recipe confuses thin and rare classes most: {'; '.join(confused)}.",
        "- Not for safety-critical decisions (driving, assistance): no guarantee of accuracy, calibration or "
        "robustness is made.",
        f"- {TERMS}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--train-command", required=True)
    parser.add_argument("--heldout", required=True, type=Path, help="the kept summary of the recipe's held-out run")
    parser.add_argument("--heldout-eval", required=True, type=Path, help="aticnet evaluate --json, single scale")
    parser.add_argument("--heldout-tta", required=True, type=Path, help="aticnet evaluate --json, --flip --scales")
    parser.add_argument("--eval-command", required=True)
    parser.add_argument("--tta-command", required=True)
    parser.add_argument("--deploy", required=True, type=Path, help="benchmarks/deploy.py's deploy.json")
    parser.add_argument("--wall-minutes", type=float, required=True)
    parser.add_argument("--cpu", required=True)
    args = parser.parse_args()

    summary = json.loads(args.heldout.read_text())
    single, tta = json.loads(args.heldout_eval.read_text()), json.loads(args.heldout_tta.read_text())
    deploy = json.loads(args.deploy.read_text())
    config = aticnet.load_config(args.run / "config.yaml")
    rows = [r for r in aticnet.read_metrics(args.run) if r.get("kind") == "train"]
    model = aticnet.load(args.run, backend="torch", fast=False).model
    speed, speed_figures = speed_section(deploy, str(args.run))
    made = [f"Trained by `{args.train_command}` ({config.max_steps} steps of batch {config.batch_size}, seed "
            f"{config.seed}, {config.precision} autocast) on CamVid train + val (468 frames), in "
            f"{args.wall_minutes:.0f} minutes on {args.cpu}; the last loss logged "
            f"{statistics.mean(r['loss'] for r in rows[-10:]):.3f} (mean of the last ten rows of metrics.jsonl). "
            "Stored in fp16 (half the size); it loads as fp32."]
    metrics = {"camvid_heldout_0006R0_miou": round(single["miou"], 4),
               "camvid_heldout_0006R0_miou_flip_scales": round(tta["miou"], 4),
               "heldout_recipe_steps": summary["steps"], "speed": speed_figures}
    meta = {"dataset": "camvid", "shipped": {
        "input_size": [360, 480], "params": aticnet.count_parameters(model)["total"], "metrics": metrics,
        "commands": {"train": args.train_command, "heldout_train": summary["command"], "heldout_eval": args.eval_command,
                     "heldout_tta": args.tta_command, "speed": deploy["command"]},
        "trained_on": "CamVid train + val (468 frames)", "cpu": args.cpu, "wall_minutes": round(args.wall_minutes, 1)}}
    sections = {"How these weights were made": made,
                "Evaluation": heldout_section(summary, single, tta, args.tta_command, args.eval_command),
                "Speed": speed, "Intended use and limits": limits_section(single)}
    folder = WEIGHTS / args.name
    aticnet.save_pretrained(args.run, folder, meta=meta, dtype=torch.float16, card_sections=sections,
                            license="mit")
    size = (folder / "model.safetensors").stat().st_size / 2**20
    print(f"wrote {folder}: model.safetensors {size:.1f} MiB, config.json, README.md")


if __name__ == "__main__":
    main()
