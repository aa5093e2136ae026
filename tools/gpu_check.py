"""The CUDA paths on one GPU (two where there are), measured in about ten minutes by one prepared run.

    tools/gpu_check.sh OUT                     # the whole check (what a lent GPU runs)
    python tools/gpu_check.py --out OUT        # the same, stage by stage; --stages tests resume ... for some
    python tools/gpu_check.py --out OUT --device cpu --quick   # the script itself, checked on a CPU

Stages, each in its own process with its own time limit, so that one that fails or hangs costs only itself:

* ``env``: GPU, driver, torch, CUDA and cuDNN versions, TF32 flags;
* ``tests``: the tests marked ``cuda`` (mixed precision across a resume, channels-last weights, no wait in a step,
  NCCL collectives, evaluation equal to the CPU's, the benchmark's variants);
* ``training``: ``aticnet benchmark --train`` of ICNet and AtICNet at 1024x2048 frames and 720 crops, batch 16,
  fp16: the step alone one change at a time (baseline, channels_last, fused, compile), the pipeline per cache mode
  (none, memory, device) and each model fed by each pipeline over 100 steps;
* ``torchrun``: ``aticnet train --cache device`` on one GPU and under torchrun on two (skipped with fewer);
* ``resume``: ICNet in fp16 and AtICNet in bf16 trained briefly on synthetic scenes, each once unbroken and once
  stopped by SIGTERM midway and resumed; the losses after the resume against the unbroken run's;
* ``max_batch``: the largest training batch of 1024x2048 frames that fits (fp16 autocast, AdamW), per model;
* ``inference``: ``aticnet benchmark`` at 1024x2048, batch 1: as built, BN folded, fp16, fp16 compiled with CUDA graphs.

Writes OUT/summary.json (what each stage found, its return code and seconds) and OUT/gpu_inference.json,
OUT/gpu_train.json (benchmark reports); ``aticnet benchmark --report-from`` renders them, with the summary,
into BENCHMARKS.md's GPU section.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("env", "tests", "training", "torchrun", "inference", "resume", "max_batch")  # the most wanted first
LIMITS = {"env": 30, "tests": 150, "training": 330, "torchrun": 150, "inference": 150, "resume": 90, "max_batch": 60}


def run(cmd: list[str], limit: float, log: Path, env: dict[str, str] | None = None) -> tuple[int, float]:
    """(return code, seconds) of ``cmd``, its output in ``log``; 124 when it ran past ``limit``."""
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = 124
    return rc, time.perf_counter() - start


def aticnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "aticnet", *args]


# ----------------------------------------------------------------------------- stages
def stage_env(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version(), "device": args.device}
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}",
                    tf32={"cudnn_conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32})
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False)
        info["nvidia_smi"] = smi.stdout.strip()
        info["driver"] = smi.stdout.strip().split(", ")[1] if smi.returncode == 0 and ", " in smi.stdout else None
    return info


def stage_tests(args: argparse.Namespace) -> dict[str, Any]:
    log = args.out / "tests.log"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda or cuda2", "-rs",
           "tests/training/test_cuda.py", "tests/benchmark/test_cuda_benchmark.py"]
    rc, seconds = run(cmd, LIMITS["tests"] - 10, log)
    tail = log.read_text().strip().splitlines()
    return {"rc": rc, "seconds": seconds, "result": tail[-1] if tail else "", "failures":
            [line for line in tail if line.startswith(("FAILED", "ERROR"))]}


def synthetic(args: argparse.Namespace, size: tuple[int, int], count: int) -> Path:
    from aticnet.data import generate_synthetic

    root = args.work / f"synthetic_{size[0]}x{size[1]}"
    if not (root / "synthetic.json").is_file():
        generate_synthetic(root, num_train=count, num_val=2, size=size, seed=0)
    return root


def train_losses(run_dir: Path) -> dict[int, float]:
    from aticnet.training.run_dir import read_metrics

    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r.get("kind") == "train" and r.get("loss")}


def stage_resume(args: argparse.Namespace) -> dict[str, Any]:
    """Each model x precision: an unbroken run, and one stopped by SIGTERM at about half way and resumed."""
    from aticnet.training.run_dir import read_metrics

    data = synthetic(args, (256, 512) if args.quick else (512, 1024), 8 if args.quick else 24)
    steps = 6 if args.quick else 40
    common = ["--dataset", "synthetic", "--data-root", str(data), "--device", args.device, "--val-split", "",
              "--crop-size", "128" if args.quick else "512", "--batch-size", "2" if args.quick else "8",
              "--max-steps", str(steps), "--save-every", str(steps // 4), "--keep-checkpoints", "8",
              "--log-every", "1", "--workers", "2" if args.quick else "6", "--optimizer", "adamw", "--lr", "0.002"]
    if args.quick:
        common += ["--width", "0.125"]
    combos = [("icnet", "16"), ("aticnet", "bf16")] if args.device == "cuda" else [("icnet", "bf16"), ("aticnet", "bf16")]
    results = {}
    for model, precision in combos:
        key = f"{model}_{precision}"
        base = [*common, "--model", model, "--precision", precision]
        whole, cut = args.work / f"{key}_whole", args.work / f"{key}_cut"
        rc_whole, s_whole = run(aticnet("train", *base, "--out", str(whole)), 60, args.out / f"{key}_whole.log")
        log = args.out / f"{key}_cut.log"
        with log.open("w") as f:
            proc = subprocess.Popen(aticnet("train", *base, "--out", str(cut)), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
            deadline = time.time() + 60
            while proc.poll() is None and time.time() < deadline and max(train_losses(cut) or [0]) < steps // 2:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            try:
                rc_cut = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc_cut = -9
        stopped_at = max(train_losses(cut) or [0])
        rc_resume, _ = run(aticnet("train", "--out", str(cut), "--resume"), 60, args.out / f"{key}_resume.log")
        want, got = train_losses(whole), train_losses(cut)
        after = [s for s in want if s > stopped_at and s in got]
        rel = [abs(got[s] - want[s]) / max(abs(want[s]), 1e-9) for s in after]
        rows = [r for r in read_metrics(whole) if r.get("kind") == "train"]
        rates = [r["images_per_s"] for r in rows[len(rows) // 2:]]
        results[key] = {"rc": [rc_whole, rc_cut, rc_resume], "steps": steps, "stopped_at": stopped_at,
                        "steps_compared": len(after),
                        "max_rel_loss_diff": max(rel) if rel else None, "all_steps": sorted(got) == list(range(1, steps + 1)),
                        "images_per_s": sorted(rates)[len(rates) // 2] if rates else None, "seconds_whole": s_whole,
                        "final_loss": want.get(steps)}
    return results


def largest_batch(model_name: str, size: tuple[int, int], device: str, cap: int) -> dict[str, Any]:
    """The largest batch of ``size`` frames one training step of ``model_name`` fits (fp16 autocast, AdamW)."""
    import torch

    from aticnet import build_model
    from aticnet.models import place_on_device
    from aticnet.training.config import TrainConfig
    from aticnet.training.losses import CascadeLoss
    from aticnet.training.state import TrainState
    from aticnet.training.step import apply_update, finite_everywhere, forward_loss

    dev = torch.device(device)
    precision = "16" if device == "cuda" else "bf16"
    model = place_on_device(build_model(model_name), dev)
    config = TrainConfig(model=model_name, optimizer="adamw", lr=1e-4, max_steps=100, precision=precision)
    state = TrainState(model, config)
    criterion = CascadeLoss(model.aux_keys, model.config.aux_weights).to(dev)

    def fits(batch: int) -> tuple[bool, float]:
        try:
            images = torch.randn(batch, 3, *size, device=dev)
            labels = torch.randint(0, 19, (batch, *size), device=dev)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            loss, _ = forward_loss(model, criterion, images, labels, config)
            apply_update(model, state, loss, finite_everywhere(loss), config)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
            del images, labels, loss
            return True, peak if device == "cuda" else seconds
        except torch.cuda.OutOfMemoryError:
            state.optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.empty_cache()
            return False, 0.0

    ok, fail, peaks = 0, None, {}
    batch = 4
    while batch <= cap:  # double until it no longer fits
        good, peak = fits(batch)
        if not good:
            fail = batch
            break
        ok, peaks[batch] = batch, peak
        batch *= 2
    while fail is not None and fail - ok > max(1, ok // 8):  # then halve the gap, to within an eighth
        mid = (ok + fail) // 2
        good, peak = fits(mid)
        if good:
            ok, peaks[mid] = mid, peak
        else:
            fail = mid
    return {"model": model_name, "size": list(size), "precision": precision, "largest_batch": ok,
            "first_failing": fail, "capped_at": cap if fail is None else None, "peak_gib": peaks.get(ok)}


def stage_max_batch(args: argparse.Namespace) -> dict[str, Any]:
    size = (128, 256) if args.quick else (1024, 2048)
    cap = 8 if args.quick else 512
    return {m: largest_batch(m, size, args.device, cap) for m in ("icnet", "aticnet")}


def stage_inference(args: argparse.Namespace) -> dict[str, Any]:
    out = args.out / "gpu_inference.json"
    size = "128x256" if args.quick else "1024x2048"
    variants = "plain,fast" if args.device == "cpu" else "plain,fast,fast+16,fast+bf16,fast+compile+16"
    cmd = aticnet("benchmark", "--device", args.device, "--models", "icnet,aticnet", "--size", size,
                  "--variants", variants, "--runs", "5" if args.quick else "60", "--warmup", "1" if args.quick else "10",
                  "--budget", "10", "--json", str(out))
    rc, seconds = run(cmd, LIMITS["inference"] - 10, args.out / "inference.log")
    found: dict[str, Any] = {"rc": rc, "seconds": seconds, "json": out.name if out.is_file() else None}
    if out.is_file():
        report = json.loads(out.read_text())
        found["fps"] = {key: round(r["fps"], 1) for key, r in report["models"].items()}
    return found


def stage_training(args: argparse.Namespace) -> dict[str, Any]:
    """``aticnet benchmark --train``: the step alone one change at a time, the pipeline per cache mode, end to end."""
    out = args.out / "gpu_train.json"
    quick = ["--crop-size", "128", "--batch-size", "2", "--steps", "3", "--warmup", "1", "--pipeline-batches", "3",
             "--end-to-end-steps", "4", "--data-size", "256x512", "--data-images", "8", "--workers", "2",
             "--width", "0.25", "--step-variants", "baseline,fused"]
    full = ["--crop-size", "720", "--batch-size", "16", "--steps", "30", "--warmup", "5", "--pipeline-batches", "30",
            "--end-to-end-steps", "100", "--data-size", "1024x2048", "--data-images", "24", "--workers", "14",
            "--step-variants", "baseline,channels_last,fused,compile"]
    cmd = aticnet("benchmark", "--train", "--device", args.device, "--models", "icnet,aticnet",
                  "--cache", "none,memory,device", "--precision", "16" if args.device == "cuda" else "32",
                  *(quick if args.quick else full), "--json", str(out))
    rc, seconds = run(cmd, LIMITS["training"] - 10, args.out / "training.log")
    found: dict[str, Any] = {"rc": rc, "seconds": seconds, "json": out.name if out.is_file() else None}
    if out.is_file():
        report = json.loads(out.read_text())
        found["feeds"] = {f"{m}/{mode}": round(e["images_per_s"] / report["step"][m]["images_per_s"], 3)
                          for mode, by_model in report["end_to_end"].items() for m, e in by_model.items()}
    return found


def stage_torchrun(args: argparse.Namespace) -> dict[str, Any]:
    """Training with ``--cache device`` on one GPU, then under torchrun on two (skipped with fewer): images/s."""
    import torch

    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    if gpus < 2 and not args.quick:
        return {"skipped": f"{gpus} GPU(s)"}
    data = synthetic(args, (256, 512) if args.quick else (1024, 2048), 8 if args.quick else 24)
    steps = 6 if args.quick else 120
    common = ["train", "--dataset", "synthetic", "--data-root", str(data), "--device", args.device, "--val-split", "",
              "--cache", "device", "--cache-dir", str(args.work / "frames"), "--crop-size", "128" if args.quick else "720",
              "--batch-size", "4" if args.quick else "32", "--max-steps", str(steps), "--log-every", str(steps // 3),
              "--save-every", "0", "--precision", "16" if args.device == "cuda" else "32", "--optimizer", "adamw"]
    if args.quick:
        common += ["--width", "0.125"]
    results: dict[str, Any] = {}
    for procs in (1, 2):
        out = args.work / f"torchrun_{procs}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m",
                "aticnet", *common] if procs > 1 else aticnet(*common))
        rc, seconds = run([*cmd, "--out", str(out)], 120, args.out / f"torchrun_{procs}.log")
        rows = [r for r in read_rows(out) if r.get("kind") == "train"]
        results[f"{procs}_process"] = {"rc": rc, "seconds": round(seconds, 1),
                                       "images_per_s": rows[-1]["images_per_s"] if rows else None}
    return results


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    from aticnet.training.run_dir import read_metrics

    return read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []


# ----------------------------------------------------------------------------- driver
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check of this script, not of the GPU")
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # one stage, in a child process
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = args.out.resolve().parent / (args.out.name + "_work")
    args.work.mkdir(exist_ok=True)
    if args.stage:  # the child: run one stage, print its result as the last line
        print(json.dumps(globals()[f"stage_{args.stage}"](args)), flush=True)
        return 0
    summary_path = args.out / "summary.json"
    summary = {"mode": "gpu_check", "device": args.device, "quick": args.quick, "command": "tools/gpu_check.sh",
               "stages": {}}
    for name in args.stages:
        log = args.out / f"stage_{name}.log"
        cmd = [sys.executable, __file__, "--out", str(args.out), "--device", args.device, "--stage", name]
        rc, seconds = run(cmd + (["--quick"] if args.quick else []), LIMITS[name], log)
        lines = log.read_text().strip().splitlines()
        try:
            result = json.loads(lines[-1]) if rc == 0 and lines else {"error": lines[-3:] if lines else "no output"}
        except json.JSONDecodeError:
            result = {"error": lines[-3:]}
        summary["stages"][name] = {"rc": rc, "seconds": round(seconds, 1), "result": result}
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")  # after every stage: a cut run keeps the rest
        (args.out / "gpu_check.json").write_text(json.dumps(report_of(summary), indent=1) + "\n")
        print(f"{name}: rc {rc}, {seconds:.0f} s", flush=True)
    return 0


def report_of(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary as the report ``aticnet benchmark --report-from`` renders (mode ``gpu_check``)."""
    found = {name: stage["result"] for name, stage in summary["stages"].items()}
    resume = {}
    for key, res in (found.get("resume") or {}).items():
        if isinstance(res, dict) and "stopped_at" in res:
            diff = res.get("max_rel_loss_diff")
            resume[key] = {"stopped_at": res["stopped_at"], "steps": res.get("steps"),
                           "resumed_to_end": res["rc"] == [0, 0, 0] and res["all_steps"],
                           "note": "" if diff is None else f"Largest relative loss difference after the resume: {diff:.1e}."}
    return {"mode": "gpu_check", "device": summary["device"], "command": summary["command"],
            "env": found.get("env", {}), "tests": found.get("tests", {}),
            "max_batch": {k: v for k, v in (found.get("max_batch") or {}).items() if isinstance(v, dict)},
            "resume": resume, "torchrun": found.get("torchrun")}


if __name__ == "__main__":
    sys.exit(main())
