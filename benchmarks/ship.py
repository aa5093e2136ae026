"""Package a final CamVid run as shipped weights: src/aticnet/weights/NAME/ (fp16 safetensors, config.json with the
measured figures, README.md model card). Every figure comes from a file a command wrote; the card names the command.
benchmarks/ship_camvid.sh runs it for both shipped models; one by hand:

    python benchmarks/ship.py --run runs/camvid/final_bf16_15k/aticnet --name aticnet-camvid \
        --final benchmarks/results/camvid/final_bf16_15k/aticnet.json \
        --heldout benchmarks/results/camvid/experiments/aticnet_bf16_15000_seed0.json \
        --confusion runs/ship/aticnet_val.json --confusion-where "CamVid val, which these weights trained on" \
        --deploy runs/ship/deploy/deploy.json

Inputs: the run (its config.yaml and metrics.jsonl: steps, loss), the kept summaries of the recipe on the held-out
drive (one per seed), optionally ``aticnet evaluate --json --flip --scales`` of a held-out run, ``aticnet evaluate
--json`` of the final run (its "mostly missed as"), and ``benchmarks/deploy.py``'s report on the final run (latency of
each deployable form, int8's mIoU change).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
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


def public(command: str) -> str:
    """A command as a card shows it: the data set's folder on the machine that ran it becomes CAMVID."""
    return re.sub(r"--data-root \S+", "--data-root CAMVID", command)


def class_mean(summaries: list[dict], name: str) -> float | None:
    """A class's IoU averaged over the seeds that saw it (None where no seed's held-out drive holds the class)."""
    values = [s["per_class_iou"][name] for s in summaries if s["per_class_iou"].get(name) is not None]
    return statistics.mean(values) if values else None


def heldout_section(summaries: list[dict], per_class: dict[str, float | None], final_steps: int, confusion: dict,
                    tta: dict | None, commands: list[str]) -> list[str]:
    """The recipe on the held-out drive (one kept summary per seed): scores, per class, where each class's misses go."""
    steps = summaries[0]["steps"]
    mious = [s["miou"] for s in summaries]
    spread = f" ± {100 * statistics.stdev(mious):.1f}" if len(mious) > 1 else ""
    seeds = ", ".join(str(s["seed"]) for s in summaries)
    recipe = ("The same recipe" if steps == final_steps else
              f"The same recipe with {steps} steps instead of {final_steps} (the only schedule measured for this "
              "model on the held-out drive)")
    tta_text = (f" With the flip and scales 1, 1.25, 1.5 averaged: **{pct(tta['miou'])}**." if tta else
                " Test-time augmentation was not measured on the held-out drive.")
    lines = [
        "The CamVid test split (233 frames) is not part of aticnet; score these weights on it with "
        "`aticnet evaluate --weights NAME --dataset camvid --data-root CAMVID --split test`.",
        "",
        f"{recipe}, trained on CamVid train without drive 0006R0 (266 frames) and scored on 0006R0 (101 frames it "
        f"never saw), seed{'s' if len(mious) > 1 else ''} {seeds}: **{pct(statistics.mean(mious))}{spread} mIoU** "
        f"single scale; pixel accuracy {pct(statistics.mean(s['pixel_accuracy'] for s in summaries))}.{tta_text} "
        f"({'; '.join(sorted({s['cpu'] for s in summaries}))}, torch {summaries[0]['torch']}.)",
        "",
        "```bash", *commands, "```", "",
        f"Per class, IoU on the held-out drive{' (mean over the seeds)' if len(mious) > 1 else ''}, and where the "
        f"final weights put the pixels of each class they miss ({confusion['where']}):",
        "",
        "| class | IoU | " + ("IoU with flip + scales | " if tta else "") + "mostly missed as (share of the class) |",
        "| --- | ---: | " + ("---: | " if tta else "") + "--- |",
    ]
    for name in per_class:
        missed = confusion["missed_as"].get(name)
        where = f"{missed['class']} ({100 * missed['share']:.0f}%)" if missed else "-"
        tta_cell = f"{pct(tta['per_class_iou'].get(name))} | " if tta else ""
        lines.append(f"| {name} | {pct(per_class[name])} | {tta_cell}{where} |")
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
    lines += ["", "```bash", public(deploy["command"]), "```"]
    return lines, figures


def limits_section(per_class: dict[str, float], missed_as: dict[str, dict]) -> list[str]:
    worst = sorted((v, k) for k, v in per_class.items() if v is not None)[:4]
    confused = [f"{k} ({pct(v)} IoU" + (f", mostly read as {missed_as[k]['class']})" if k in missed_as else ")")
                for v, k in worst]
    return [
        "- For research and prototyping of street-scene segmentation on frames like CamVid's: a forward-facing "
        "camera in a car, daylight, one city (Cambridge, UK), 480x360 frames (the SegNet version of CamVid).",
        "- Trained from scratch on 468 frames (CamVid train + val): expect much lower accuracy on other cities, "
        "cameras, weather, night and resolutions; fine-tune on your own frames (`--init NAME`).",
        f"- On a drive it never saw, the recipe does worst on thin and rare classes: {'; '.join(confused)}.",
        "- Not for safety-critical decisions (driving, assistance): no guarantee of accuracy, calibration or "
        "robustness is made.",
        f"- {TERMS}",
    ]


def keep_unchanged_weights(path: Path, before: bytes | None) -> None:
    """Put back the shipped file's old bytes when the new one holds the same tensors and metadata: safetensors writes
    its metadata in no fixed order, and a byte change alone would be a new version of the weights in git."""
    if before is None:
        return
    old, new = safetensors.torch.load(before), safetensors.torch.load_file(path)
    with safetensors.safe_open(path, "pt") as f:
        new_meta = f.metadata()
    old_meta = json.loads(before[8:8 + int.from_bytes(before[:8], "little")]).get("__metadata__")
    if old_meta == new_meta and old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old):
        path.write_bytes(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--final", required=True, type=Path,
                        help="the final run's kept summary (benchmarks/camvid.py final): its command, minutes and CPU")
    parser.add_argument("--heldout", required=True, type=Path, nargs="+",
                        help="the kept summaries of the recipe's held-out runs, one per seed")
    parser.add_argument("--heldout-tta", type=Path, help="aticnet evaluate --json --flip --scales of a held-out run")
    parser.add_argument("--confusion", required=True, type=Path,
                        help="aticnet evaluate --json of the final run (its missed_as names what it confuses)")
    parser.add_argument("--confusion-where", required=True, help="what --confusion scored, in words")
    parser.add_argument("--command", action="append", default=[], help="a command behind the figures (repeatable)")
    parser.add_argument("--deploy", required=True, type=Path, help="benchmarks/deploy.py's deploy.json")
    args = parser.parse_args()

    summaries = [json.loads(p.read_text()) for p in args.heldout]
    for summary in summaries:
        summary["command"] = public(summary["command"])
    final = json.loads(args.final.read_text())
    train_command, cpu, minutes = public(final["command"]), final["cpu"], final["train_minutes"]
    args.command = [public(c) for c in args.command]
    tta = json.loads(args.heldout_tta.read_text()) if args.heldout_tta else None
    confusion = {**json.loads(args.confusion.read_text()), "where": args.confusion_where}
    deploy = json.loads(args.deploy.read_text())
    config = aticnet.load_config(args.run / "config.yaml")
    rows = [r for r in aticnet.read_metrics(args.run) if r.get("kind") == "train"]
    model = aticnet.load(args.run, backend="torch", fast=False).model
    speed, speed_figures = speed_section(deploy, str(args.run))
    made = [f"Trained by `{train_command}` ({config.max_steps} steps of batch {config.batch_size}, seed "
            f"{config.seed}, {config.precision} autocast) on CamVid train + val (468 frames), in "
            f"{minutes:.0f} minutes on {cpu}; the last loss logged "
            f"{statistics.mean(r['loss'] for r in rows[-10:]):.3f} (mean of the last ten rows of metrics.jsonl). "
            "Stored in fp16 (half the size); it loads as fp32."]
    commands = [s["command"] for s in summaries] + args.command
    metrics = {"camvid_heldout_0006R0_miou": round(statistics.mean(s["miou"] for s in summaries), 4),
               "heldout_seeds": len(summaries), "heldout_recipe_steps": summaries[0]["steps"], "speed": speed_figures}
    metrics.update({"camvid_heldout_0006R0_miou_flip_scales": round(tta["miou"], 4)} if tta else {})
    meta = {"dataset": "camvid", "shipped": {
        "name": args.name, "input_size": [360, 480], "params": aticnet.count_parameters(model)["total"], "metrics": metrics,
        "commands": {"train": train_command, "heldout": commands, "speed": public(deploy["command"])},
        "trained_on": "CamVid train + val (468 frames)", "cpu": cpu, "wall_minutes": round(minutes, 1)}}
    per_class = {c: class_mean(summaries, c) for c in summaries[0]["per_class_iou"]}
    sections = {"How these weights were made": made,
                "Evaluation": heldout_section(summaries, per_class, config.max_steps, confusion, tta, commands),
                "Speed": speed, "Intended use and limits": limits_section(per_class, confusion["missed_as"])}
    folder = WEIGHTS / args.name
    before = (folder / "model.safetensors").read_bytes() if (folder / "model.safetensors").is_file() else None
    aticnet.save_pretrained(args.run, folder, meta=meta, dtype=torch.float16, card_sections=sections,
                            license="mit")
    keep_unchanged_weights(folder / "model.safetensors", before)
    size = (folder / "model.safetensors").stat().st_size / 2**20
    print(f"wrote {folder}: model.safetensors {size:.1f} MiB, config.json, README.md")


if __name__ == "__main__":
    main()
