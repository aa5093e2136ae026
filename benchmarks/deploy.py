"""Every deployable form of trained runs: latency at two sizes and accuracy, in one table.

    python benchmarks/deploy.py --runs runs/camvid/experiments/jitter_seed0 runs/camvid/aticnet_jitter_seed0 \
        --dataset camvid --data-root CAMVID --out runs/deploy

For each run it writes the forms a user would deploy, with the commands a user would type
(``aticnet export`` for ONNX and OpenVINO IR; ``aticnet quantize`` for int8, calibrated on
``--calibration-images`` frames of the training split), then for every form (engine, precision,
infer-scale):

* the latency of image -> full-size labels (the network and the labels step; batch 1, float NCHW
  input already normalised: a frame of the scored split resized), at each ``--sizes``, every form of every run timed round-robin in one
  process (:func:`aticnet.time_interleaved`), medians;
* mIoU on ``--split`` (for CamVid: val, drive 0016E5, which the models trained on) and, when the run
  held out a drive, on that drive, each by the ``aticnet evaluate`` command stored beside it in the report,
  and the change from PyTorch fp32.

Writes ``--out``/deploy.json (``aticnet benchmark --report-from`` renders it into BENCHMARKS.md, with the
deployment targets). Every ``aticnet`` command runs as a user would type it. Run it alone: on 2 cores anything
beside it changes the times.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import aticnet

# (label, file kind, backend, precision, infer_scale); file kinds: run, xml, onnx, int8.xml, int8.onnx
FORMS = [
    ("PyTorch fp32 (model as built)", "plain", "torch", "32", 1.0),
    ("PyTorch fp32, aticnet.load (BN folded, exact labels step)", "run", "torch", "32", 1.0),
    ("PyTorch fp32, infer-scale 0.75", "run", "torch", "32", 0.75),
    ("PyTorch fp32, infer-scale 0.5", "run", "torch", "32", 0.5),
    ("ONNX Runtime fp32", "onnx", "onnxruntime", "32", 1.0),
    ("ONNX Runtime int8 (QDQ)", "int8.onnx", "onnxruntime", "32", 1.0),
    ("OpenVINO fp32", "xml", "openvino", "32", 1.0),
    ("OpenVINO bf16", "xml", "openvino", "bf16", 1.0),
    ("OpenVINO int8 (NNCF)", "int8.xml", "openvino", "32", 1.0),
    ("OpenVINO int8 + bf16", "int8.xml", "openvino", "bf16", 1.0),
    ("OpenVINO int8, infer-scale 0.75", "int8.xml", "openvino", "32", 0.75),
    ("OpenVINO int8, infer-scale 0.5", "int8.xml", "openvino", "32", 0.5),
]


def prepare_files(run: Path, out: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Export and quantize ``run`` with the CLI, as a user would; returns file kind -> path."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"run": run, "plain": run, "onnx": out / "model.onnx", "xml": out / "model.xml",
             "int8.onnx": out / "model.int8.onnx", "int8.xml": out / "model.int8.xml"}
    calibrate = ["--dataset", args.dataset, "--data-root", args.data_root, "--split", args.calibration_split,
                 "--images", str(args.calibration_images)] + (["--drive", *args.calibration_drive]
                                                             if args.calibration_drive else [])
    commands = {
        "onnx": ["export", "--weights", str(run), "--format", "onnx", "--dynamic", "--lowres", "--size", "360x480",
                 "--tolerance", str(args.export_tolerance), "--out", str(files["onnx"])],
        "xml": ["export", "--weights", str(run), "--format", "openvino", "--size", "360x480", "--tolerance",
                str(args.export_tolerance), "--out", str(files["xml"])],
        "int8.onnx": ["quantize", "--weights", str(run), "--backend", "onnxruntime", *calibrate, "--out",
                      str(files["int8.onnx"])],
        "int8.xml": ["quantize", "--weights", str(run), "--backend", "openvino", *calibrate, "--out",
                     str(files["int8.xml"])],
    }
    needed = {f[1] for f in FORMS if not args.forms or f[0] in args.forms}
    for kind, argv in commands.items():
        if kind in needed and not files[kind].is_file():
            print("$ aticnet " + shlex.join(argv), flush=True)
            if cli(argv) != 0:
                raise SystemExit(f"aticnet {argv[0]} failed for {run}")
    return files


def cli(argv: list[str]) -> int:
    """``aticnet ARGV`` in its own process, as a user runs it; its return code."""
    return subprocess.run([sys.executable, "-m", "aticnet", *argv], check=False).returncode


def evaluate_argv(path: Path, kind: str, backend: str, precision: str, scale: float, args, drive: str | None) -> list[str]:
    """The ``aticnet evaluate`` arguments that score this form (on ``--split``, or on the held-out ``drive``)."""
    words = ["evaluate", "--weights", str(path), "--dataset", args.dataset, "--data-root", args.data_root]
    words += ["--split", "train+val", "--drive", drive] if drive else ["--split", args.split]
    words += [] if kind in ("plain", "run") and backend == "torch" else ["--backend", backend]
    words += ["--precision", precision] if precision != "32" else []
    words += ["--infer-scale", f"{scale:g}"] if scale != 1 else []
    return words + ["--workers", "0"]


def score(argv: list[str]) -> float:
    """mIoU of one ``aticnet evaluate`` command, run as it is written in the report."""
    with tempfile.TemporaryDirectory(prefix="aticnet-deploy-") as tmp:
        scores = Path(tmp) / "scores.json"
        if cli([*argv, "--json", str(scores)]) != 0:
            raise SystemExit("aticnet " + shlex.join(argv) + " failed")
        return json.loads(scores.read_text())["miou"]


def predictor(path: Path, kind: str, backend: str, precision: str, scale: float):
    """image batch (normalised) -> labels, as the form runs it."""
    if kind == "plain":  # the module as built: full-size logits, then the argmax
        model = aticnet.load(path, backend="torch", fast=False).model
        return lambda image: model(image).argmax(1)
    seg = aticnet.load(path, backend=backend, precision=precision, infer_scale=scale)
    return seg.labels_of_normalized


def timing_image(args: argparse.Namespace, size: tuple[int, int], mean, std) -> torch.Tensor:
    """A real frame of the scored split resized to ``size`` and normalised: 1 x 3 x H x W. (Noise would make a trained
    model's logits noise too, and the labels step would not behave as it does on streets.)"""
    import torch.nn.functional as F

    frames = aticnet.build_dataset(args.dataset, args.data_root, args.split)
    image = frames.read(len(frames) // 2)[0][None].float() / 255
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
    return (image - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def previous_scores(out: Path) -> dict[tuple[str, str], dict]:
    """(run, form) -> the scores of an earlier invocation (``--reuse-scores``: time again without scoring again)."""
    path = out / "deploy.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    return {(r["run"], r["form"]): {k: r[k] for k in ("miou", "held_out_drive", "held_out_miou") if k in r} for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="trained run directories")
    parser.add_argument("--dataset", default="camvid")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="val", help="the labelled split to score (default val)")
    parser.add_argument("--calibration-split", default="train")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--calibration-drive", nargs="+", default=None,
                        help="calibrate on these drives only (CamVid: 0001TP, a training drive that is neither val's "
                             "0016E5 nor the held-out 0006R0)")
    parser.add_argument("--sizes", nargs="+", default=["1024x2048", "360x480"])
    parser.add_argument("--export-tolerance", type=float, default=1e-3, help="aticnet export --tolerance")
    parser.add_argument("--timed-runs", type=int, default=10)
    parser.add_argument("--out", required=True)
    parser.add_argument("--reuse-scores", action="store_true", help="take the mIoUs of --out/deploy.json; time only")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 forms (skipped anyway where the CPU has "
                        "neither avx512_bf16 nor AMX: OpenVINO would run them in f32)")
    parser.add_argument("--forms", nargs="+", default=None, metavar="LABEL",
                        help="time and score these forms only (their labels in FORMS; default every form)")
    args = parser.parse_args()
    unknown = set(args.forms or ()) - {f[0] for f in FORMS}
    if unknown:
        parser.error(f"--forms: unknown {sorted(unknown)}; the forms are {[f[0] for f in FORMS]}")
    out = Path(args.out)
    info = aticnet.cpu_info()
    skip_bf16 = args.no_bf16 or not (info.get("avx512_bf16") or info.get("amx_bf16"))  # OpenVINO would run f32
    rows = []
    reused = previous_scores(out) if args.reuse_scores else {}
    for run in map(Path, args.runs):
        cfg = aticnet.load_config(run / "config.yaml")
        files = prepare_files(run, out / run.name, args)
        drive = cfg.holdout_drive or None
        for label, kind, backend, precision, scale in FORMS:
            if (precision == "bf16" and skip_bf16) or (args.forms and label not in args.forms):
                continue
            path = files[kind]
            row = {"run": str(run), "model": cfg.model, "form": label, "kind": kind, "file": str(path), "backend": backend,
                   "precision": precision, "infer_scale": scale}
            for key, where in (("miou", None), ("held_out_miou", drive)) if drive else (("miou", None),):
                argv = evaluate_argv(path, kind, backend, precision, scale, args, where)
                row[key.replace("miou", "command")] = "aticnet " + shlex.join(argv)
                row[key] = reused[(str(run), label)][key] if (str(run), label) in reused else score(argv)
            row.update({"held_out_drive": drive} if drive else {})
            print(f"{run.name:>28} | {label:<58} | {args.split} {100 * row['miou']:.2f}"
                  + (f" | {drive} {100 * row['held_out_miou']:.2f}" if drive else ""), flush=True)
            rows.append(row)
    start_load = os.getloadavg()
    predictors = {str(i): predictor(Path(r["file"]), r["kind"], r["backend"], r["precision"], r["infer_scale"])
                  for i, r in enumerate(rows)}
    first = aticnet.load(rows[0]["run"], backend="torch", fast=False).model.config  # each model normalises so
    for size_text in args.sizes:
        size = tuple(int(v) for v in size_text.lower().split("x"))
        image = timing_image(args, size, first.mean, first.std)
        with torch.inference_mode():
            times = aticnet.time_interleaved(predictors, image, runs=args.timed_runs, warmup=2)
        for i, r in enumerate(rows):
            r[f"latency_ms_{size_text}"] = 1000 * statistics.median(times[str(i)])
        print(f"timed at {size_text}", flush=True)
    report = {"mode": "deploy", "command": "python " + shlex.join(sys.argv), **aticnet.machine_info("cpu"),
              "sizes": args.sizes, "split": args.split, "timed_runs": args.timed_runs, "load_avg_start": start_load,
              "load_avg_end": os.getloadavg(), "rows": rows,
              "timed_region": "float32 NCHW image (a frame of the scored split, resized and normalised) -> network "
                              f"-> labels at full size, batch 1, {args.timed_runs} timed passes per form after 2 warm-up, round-robin, medians"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "deploy.json").write_text(json.dumps(report, indent=2) + "\n")
    for r in rows:
        times = ", ".join(f"{r[f'latency_ms_{s}']:.0f} ms at {s}" for s in args.sizes)
        print(f"{r['model']:>8} | {r['form']:<58} | {times} | {args.split} {100 * r['miou']:.2f}")
    print(f"wrote {out / 'deploy.json'}; BENCHMARKS.md: aticnet benchmark --report-from ... {out / 'deploy.json'}")


if __name__ == "__main__":
    main()
