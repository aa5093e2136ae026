"""CamVid from scratch, scored on a drive the model never trained on.

CamVid's file-name prefixes are drives. Every val frame is drive 0016E5, which also gives 204 of the
367 training frames, so val scores a model on near-copies of frames it trained on. Here models train
on CamVid train without drive 0006R0 (266 frames) and are scored on 0006R0 (101 frames); val (0016E5)
is reported beside it, labelled as the training drive.

    python benchmarks/camvid.py experiments --data-root CAMVID --out runs/camvid   # the recipe's
    python benchmarks/camvid.py claim --data-root CAMVID --out runs/camvid         # models x seeds
    python benchmarks/camvid.py final --data-root CAMVID --out runs/camvid         # on train+val
    python benchmarks/camvid.py claim ... --quick                            # a smoke run, in claim_quick/
    python benchmarks/camvid.py claim ... --table-only       # the claim's table from the runs finished so far

``experiments`` runs each recipe change of EXPERIMENTS on configs/camvid.yaml (ICNet, seed 0)
and writes benchmarks/camvid_experiments.md. ``claim`` trains ICNet and AtICNet (3 seeds), AtICNet's
two changes alone (2 seeds) and torchvision's LR-ASPP (1 seed) with configs/camvid.yaml, and writes
results.md/json, curves.png and comparison.png (held-out frames) under --out/claim. ``final`` trains
ICNet and AtICNet on train+val (468 frames) for anyone who has the standard test split:
``aticnet evaluate --weights runs/camvid/final/icnet --dataset camvid --data-root CAMVID --split test``.
Runs resume from their checkpoints and finished runs are reused: stop and start again at will (the
experiments' and the claim's tables read each finished run's summary, kept and committed in
benchmarks/results/camvid/, so runs finished on another machine are not trained again; the claim's
figures come from the run directories on this one). A run
whose config and seed equal those of a finished run elsewhere under --out is that run (training is
deterministic), so it is reused too: while configs/camvid.yaml holds the baseline recipe, the
experiments baseline and aticnet_baseline are the claim's ICNet and AtICNet seed 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import camvid_report as report  # beside this script
import torch

import aticnet

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "camvid.yaml"  # the experiments change it by flags; the claim trains it as it is
HELD_OUT = "0006R0"
CAMVID_CLASSES = 11
RESULTS = ROOT / "benchmarks" / "results" / "camvid"  # finished runs' summaries, kept in the repository
QUICK = {"max_steps": 300, "eval_every": 150, "save_every": 150}

# Recipe experiments: each is configs/camvid_baseline.yaml with these changes, ICNet unless said, seed 0.
# bf16 autocast held the baseline's accuracy (38.1 / 60.4 against 38.5 / 60.1) in 17 minutes instead of 30, so the
# later changes are measured on top of it (on a CPU with avx512_bf16 or AMX), against the `bf16` row.
BF16 = {"precision": "bf16"}
BF16_5000 = {**BF16, "max_steps": 5000}  # configs/camvid_bf16.yaml
EXPERIMENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("baseline", "the recipe tuned on val (configs/camvid.yaml)", {}),
    ("decay_weights", "weight decay on conv weights only (the originals' scope)", {"weight_decay_scope": "weights"}),
    ("jitter", "photometric: ColorJitter 0.4 0.4 0.4 0.05", {"color_jitter": [0.4, 0.4, 0.4, 0.05]}),
    ("bf16", "bf16 autocast, same steps", BF16),
    ("bf16_5000", "bf16 autocast, 5000 steps (about the minutes of 3000 in fp32 on AMX or avx512_bf16)",
     {**BF16, "max_steps": 5000}),
    ("bf16_loss_on_labels", "bf16; the loss at the labels' resolution (logits upsampled, as mmsegmentation), not "
     "on labels shrunk to each output: thin poles and signs keep their pixels", {**BF16, "model_options": {"loss_on": "labels"}}),
    ("bf16_scale_0.5_2", "bf16; the paper's scale range 0.5-2.0", {**BF16, "scale_range": [0.5, 2.0]}),
    ("bf16_ema", "bf16; moving average of the weights, decay 0.998", {**BF16, "ema_decay": 0.998}),
    ("bf16_ohem", "bf16; OHEM: pixels below p = 0.7, at least 10000", {**BF16, "loss": "ohem"}),
    ("bf16_frames", "bf16; whole 360x480 frames (1800 steps: the same pixels seen)",
     {**BF16, "crop_size": [360, 480], "max_steps": 1800}),
    ("bf16_decay_0.01", "bf16; AdamW's usual decoupled weight decay 0.01, conv weights only",
     {**BF16, "weight_decay": 0.01, "weight_decay_scope": "weights"}),
    ("bf16_dropout", "bf16; dropout 0.1 before the classifier", {**BF16, "model_options": {"dropout": 0.1}}),
    # On configs/camvid_bf16.yaml's recipe, AtICNet: each against AtICNet's three bf16 claim seeds (40.6 +- 0.3)
    ("aticnet_bf16_trainval", "AtICNet, bf16, 5000 steps; trains on train+val without 0006R0 (367 frames: val's 101 "
     "frames of 0016E5 added; no val score)", {"model": "aticnet", **BF16_5000, "train_split": "train+val"}),
    ("aticnet_bf16_x2", "AtICNet, bf16, 5000 steps; frames upsampled 2x (scale 1.5-3.0, crop 320, validated at 2x: "
     "ICNet ran CamVid at 720x960)", {"model": "aticnet", **BF16_5000, "scale_range": [1.5, 3.0], "eval_scale": 2.0}),
    ("aticnet_bf16_15000", "AtICNet, bf16, 15000 steps: the bf16 recipe's schedule three times as long "
     "(450 epochs of the 266 frames; configs/camvid_bf16_15k.yaml)", {"model": "aticnet", **BF16, "max_steps": 15000}),
    ("icnet_bf16_15000", "ICNet, bf16, 15000 steps: the shipped models' recipe (configs/camvid_bf16_15k.yaml), "
     "the baseline of aticnet_bf16_15000", {**BF16, "max_steps": 15000}),
    # the same recipes for AtICNet: a paired look at the paper's claim under each
    ("aticnet_jitter", "AtICNet, with the jitter change", {"model": "aticnet", "color_jitter": [0.4, 0.4, 0.4, 0.05]}),
    ("aticnet_baseline", "AtICNet, baseline recipe", {"model": "aticnet"}),
    ("aticnet_decay_weights", "AtICNet, weight decay on conv weights only",
     {"model": "aticnet", "weight_decay_scope": "weights"}),
]
CLAIM = {"icnet": 3, "aticnet": 3, "icnet_s5x2": 2, "icnet_atrous": 2, "lraspp_mobilenet_v3": 1}
PAIRS = [("icnet", "aticnet"), ("icnet", "icnet_s5x2"), ("icnet", "icnet_atrous"), ("icnet", "lraspp_mobilenet_v3")]


def command_for(config: Path, overrides: dict[str, Any], data_root: str) -> str:
    """The ``aticnet train`` command that trains this run."""
    words = ["aticnet", "train", "--config", os.path.relpath(config, ROOT), "--data-root", data_root]
    for key, value in overrides.items():
        if key == "data_root":
            continue
        words.append("--" + key.replace("_", "-"))
        if isinstance(value, dict):  # a YAML flow mapping
            words.append("{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}")
        else:
            words += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return shlex.join(words)


def kept_result(run_dir: Path) -> Path:
    """Where a finished run's summary is kept in the repository (run directories stay on the machine that made them)."""
    return RESULTS / run_dir.parent.name / f"{run_dir.name}.json"


def run_one(config: Path, overrides: dict[str, Any], run_dir: Path, args: argparse.Namespace, *,
            weights_needed: bool = True) -> dict | None:
    """Train one run (or reuse it when finished, resume it when stopped); returns its summary. Without
    ``weights_needed`` a summary kept in benchmarks/results/camvid is reused even where the run directory is gone.
    With ``args.table_only`` nothing trains: None for a run not finished."""
    summary_path = run_dir / "summary.json"
    if not weights_needed and kept_result(run_dir).is_file() and not args.retrain and not args.quick:
        print(f"== {run_dir.name}: kept result {os.path.relpath(kept_result(run_dir), ROOT)}; reusing it ==", flush=True)
        return json.loads(kept_result(run_dir).read_text())
    overrides = {**overrides, **(QUICK if args.quick else {}), "out": str(run_dir)}
    command = command_for(config, overrides, args.data_root)
    resume = "auto" if any((run_dir / "checkpoints").glob("step_*.pt")) else None
    cfg = aticnet.load_config(config, data_root=args.data_root, resume=resume, **overrides)
    if (run_dir / "config.yaml").is_file() and not args.retrain:
        want, have = learning_fields(cfg), learning_fields(aticnet.load_config(run_dir / "config.yaml"))
        changed = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        if changed:  # e.g. the recipe was edited since, or a --quick run sits here: never reuse it as this one
            raise SystemExit(f"{run_dir} holds a run of another config ({', '.join(changed)} differ from "
                             f"{os.path.relpath(config, ROOT)}): move it away, or pass --retrain")
    if summary_path.is_file() and (run_dir / "model.safetensors").is_file() and not args.retrain:
        print(f"== {run_dir} is done; reusing it ==", flush=True)
        result = json.loads(summary_path.read_text())
        return {**result, "train_minutes": report.minutes_alone(aticnet.read_metrics(run_dir / "metrics.jsonl"), cfg.batch_size)}
    twin = None if resume or args.retrain else same_run(cfg, Path(args.out))
    if twin is not None:  # training is deterministic for a given config and seed: the same run, done once
        print(f"== {run_dir.name}: {twin} trained this very config and seed; reusing it ==", flush=True)
        result = {**json.loads((twin / "summary.json").read_text()), "command": command, "same_as": str(twin)}
        if not args.quick:
            write_json(kept_result(run_dir), result)
        return result
    if args.table_only:
        print(f"== {run_dir.name}: not finished; left out of the table ==", flush=True)
        return None
    print(f"== {command} ({'resuming' if resume else 'new'}) ==", flush=True)
    start = time.perf_counter()
    summary = aticnet.train(cfg)
    if "stopped" in summary:  # SIGINT or SIGTERM: the checkpoint is saved, nothing here is finished
        raise SystemExit(f"{run_dir}: stopped by {summary['stopped']} at step {summary['step']}; "
                         "the same command resumes it")
    wall_minutes = (time.perf_counter() - start) / 60
    net = aticnet.load(run_dir, backend="torch", fast=False).model
    result = {
        "model": cfg.model, "seed": cfg.seed, "run_dir": str(run_dir), "command": command, "steps": summary["step"],
        "precision": cfg.precision, "resumed": resume is not None, "wall_minutes": wall_minutes,
        "train_minutes": report.minutes_alone(aticnet.read_metrics(run_dir / "metrics.jsonl"), cfg.batch_size),
        "params": aticnet.count_parameters(net)["total"], "cpu": cpu_description(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if cfg.holdout_drive:  # the final evaluation was on the held-out drive; val is the training drive
        scores = summary["scores"]
        result.update(miou=scores["miou"], pixel_accuracy=scores["pixel_accuracy"], per_class_iou=scores["per_class_iou"])
        if "val" not in cfg.train_split.split("+"):  # val trained on is no score at all
            val = aticnet.evaluate(run_dir, "camvid", args.data_root, "val", device="cpu", workers=0,
                                   scales=(cfg.eval_scale,), progress=False)
            result["val_miou"] = val["miou"]
    write_json(summary_path, result)
    if not args.quick:
        write_json(kept_result(run_dir), result)
    return result


def recipe_network(model: str, recipe: Path = RECIPE) -> torch.nn.Module:
    """``model`` as the ``recipe`` config builds it (width, options, CamVid's classes), with fresh weights."""
    cfg = aticnet.load_config(recipe, model=model)
    width = {} if cfg.width is None else {"width": cfg.width}
    return aticnet.build_model(model, num_classes=CAMVID_CLASSES, **width, **cfg.model_options).eval()


def protocol_dir(args: argparse.Namespace, protocol: str) -> Path:
    """Where a protocol's runs go: ``claim`` (``final``) for configs/camvid.yaml, ``claim_bf16`` for
    configs/camvid_bf16.yaml, and so on: each recipe's runs and kept summaries apart; ``--quick`` runs in ``*_quick``."""
    recipe = Path(args.recipe).resolve()
    name = protocol if recipe == RECIPE else f"{protocol}_{recipe.stem.removeprefix('camvid_')}"
    return Path(args.out) / (name + ("_quick" if args.quick else ""))


def latency_360x480(net: torch.nn.Module) -> float:
    """Median ms of one CamVid frame through ``net`` (a rough figure: BENCHMARKS.md has the careful ones)."""
    return aticnet.measure_latency(net, (360, 480), runs=30, warmup=3)


# Fields that name where a run lives, how many checkpoints it keeps or how many processes load its data (each
# sample is augmented under its own seed: the same batches with any number of workers): they do not change what it learns.
BOOKKEEPING = {"out", "resume", "keep_checkpoints", "workers"}


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def learning_fields(cfg: aticnet.TrainConfig) -> dict[str, Any]:
    """``cfg``'s fields but the BOOKKEEPING ones: two runs that agree on these learn the same weights."""
    return {k: v for k, v in cfg.to_dict().items() if k not in BOOKKEEPING}


def same_run(cfg: aticnet.TrainConfig, root: Path) -> Path | None:
    """A finished run under ``root`` (any protocol) whose config equals ``cfg`` in every field that can change
    the weights, or None: e.g. a recipe experiment on configs/camvid.yaml's recipe is also the claim's seed-0 run."""
    want = learning_fields(cfg)
    for path in sorted(root.glob("*/*/config.yaml")):
        run = path.parent
        finished = (run / "summary.json").is_file() and (run / "model.safetensors").is_file()
        if not finished or run.resolve() == Path(cfg.out).resolve():
            continue
        if learning_fields(aticnet.load_config(path)) == want:
            return run
    return None


def cpu_description() -> str:
    info = aticnet.cpu_info()
    flags = [f for f in ("amx_bf16", "avx512_bf16") if info.get(f)]
    return f"{info['model']}" + (f" ({', '.join(flags)})" if flags else "")


def experiments(args: argparse.Namespace) -> None:
    out = Path(args.out) / ("experiments_quick" if args.quick else "experiments")
    changes = {name: overrides for name, _, overrides in EXPERIMENTS}
    for name in [] if args.table_only else args.only or changes:  # in the order asked for
        for seed in range(args.seeds or 1):
            run_one(RECIPE, {**changes[name], "seed": seed}, out / f"{name}_seed{seed}", args, weights_needed=False)
    # The table holds every finished run, whichever machine trained it, and names those still to run.
    rows, missing = [], []
    for name, change, _ in EXPERIMENTS:
        done = sorted((RESULTS / "experiments").glob(f"{name}_seed*.json"))
        rows += [{**json.loads(p.read_text()), "name": name, "change": change} for p in done]
        missing += [] if done else [name]
    table = report.format_experiments(rows, HELD_OUT)
    if missing:
        table += "\n\nDefined, with no result kept: " + ", ".join(f"`{m}`" for m in missing) + "."
    print(table)
    if not args.quick and rows:
        write_text(ROOT / "benchmarks" / "camvid_experiments.md", "# CamVid recipe experiments\n\n"
                   "From `python benchmarks/camvid.py experiments --data-root CAMVID --out runs/camvid` "
                   "(`--only NAME ...` runs some); written by the script from every finished run's summary.\n\n"
                   + table + "\n\n" + hardware_line(rows) + "\n")


def claim_runs(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(model, seed) of the claim, seed by seed: CLAIM's seeds per model, ``--seeds`` of each, or one if ``--quick``."""
    seeds = {m: 1 if args.quick else args.seeds or n for m, n in CLAIM.items() if not args.models or m in args.models}
    return [(m, s) for s in range(max(seeds.values(), default=0)) for m, n in seeds.items() if s < n]


def claim(args: argparse.Namespace) -> None:
    out, recipe = protocol_dir(args, "claim"), Path(args.recipe).resolve()
    todo = claim_runs(args)
    # A run finished elsewhere is its kept summary: the table needs no weights, only the figures do.
    runs = [run_one(recipe, {"model": m, "seed": s}, out / f"{m}_seed{s}", args, weights_needed=False)
            for m, s in todo]
    results = [r for r in runs if r is not None]
    unfinished = [f"{m} seed {s}" for (m, s), r in zip(todo, runs) if r is None]
    models = [m for m in CLAIM if any(r["model"] == m for r in results)]
    # Timed here, each model once, with training over (a run's own figure came right after its training, on a
    # machine where anything else running could pause or slow it), on fresh weights: the architecture sets the work.
    latency = {m: latency_360x480(recipe_network(m, recipe)) for m in models}
    table = report.summarize(results, models, latency)
    text = report.format_claim(table, results, [p for p in PAIRS if set(p) <= set(models)], HELD_OUT)
    if unfinished:
        text += "\n\nNot finished yet: " + ", ".join(unfinished) + "."
    text += "\n\n" + hardware_line(results) + f"\nCommand: `python {shlex.join(sys.argv)}`"
    write_json(out / "results.json", {"runs": results, "summary": table})
    write_text(out / "results.md", text + "\n")
    here = [r for r in results if (ROOT / r["run_dir"] / "model.safetensors").is_file()]
    if len(here) < len(results):
        print(f"figures from the {len(here)} of {len(results)} runs whose directories are on this machine", flush=True)
    report.figures(here, [m for m in ("icnet", "aticnet") if m in models] or models[:1], out, args.data_root, HELD_OUT)
    print(text)


def final(args: argparse.Namespace) -> None:
    out = protocol_dir(args, "final")
    everything = {"train_split": "train+val", "holdout_drive": "", "val_split": ""}
    results = [run_one(Path(args.recipe).resolve(), {**everything, "model": m, "seed": 0}, out / m, args)
               for m in args.models or ("aticnet", "icnet")]
    for r in results:
        print(f"{r['model']}: {r['steps']} steps on train+val in {r['train_minutes']:.0f} min -> {r['run_dir']}")


def hardware_line(results: list[dict]) -> str:
    cpus = sorted({r["cpu"] for r in results})
    minutes = sum(r["train_minutes"] for r in results)
    return (f"Hardware: {', '.join(cpus)} ({results[0]['threads']} threads), torch {results[0]['torch']}; "
            f"{len(results)} runs, {minutes:.0f} training minutes in all.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", choices=["experiments", "claim", "final"])
    parser.add_argument("--data-root", required=True, help="CamVid in the SegNet layout (train/, trainannot/, val/, ...)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipe", default=str(RECIPE), help="claim and final: the training config (default "
                        "configs/camvid.yaml; another one's runs go to claim_NAME, final_NAME)")
    parser.add_argument("--quick", action="store_true", help="300 steps, one seed: a smoke run of the whole protocol")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per model (default: the protocol's)")
    parser.add_argument("--models", nargs="+", default=None, help="claim and final: only these models")
    parser.add_argument("--only", nargs="+", default=None, choices=[e[0] for e in EXPERIMENTS], help="experiments: only these, in this order")
    parser.add_argument("--retrain", action="store_true", help="train again even when a run is complete")
    parser.add_argument("--table-only", action="store_true", help="write the table from the runs finished so far, train nothing")
    args = parser.parse_args()
    {"experiments": experiments, "claim": claim, "final": final}[args.protocol](args)


if __name__ == "__main__":
    main()
