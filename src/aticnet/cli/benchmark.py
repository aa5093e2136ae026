"""``aticnet benchmark``: latency of our models beside torchvision's peers, interleaved in one process
(batch 1, warm-up, medians, device synchronised), or training throughput (``--train``); JSON reports and BENCHMARKS.md from them."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from ..benchmark import benchmark_inference, benchmark_training, format_inference, format_training
from ..benchmark.models import DEFAULT_MODELS, DEFAULT_TRAIN_MODELS, Variant, parse_variant
from ..models import PEER_NAMES
from ..utils.errors import UserError
from ..utils.io import write_json, write_text
from .common import add_device, parse_size, subcommand


def canonical_command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run, every setting spelled out."""
    words = ["aticnet", "benchmark"]
    if args.report_from:
        return shlex.join([*words, "--report-from", *args.report_from])
    if args.labels:
        return shlex.join([*words, "--labels", "--models", args.models or "", "--size", "x".join(map(str, args.size)),
                           "--runs", str(args.runs), "--warmup", str(args.warmup), "--threads",
                           str(args.threads or torch.get_num_threads())])
    if args.train:
        words += train_words(args)
    else:
        words += [
            "--models",
            args.models or ",".join(DEFAULT_MODELS),
            "--size",
            "x".join(map(str, args.size)),
            "--batch-size",
            str(args.batch_size or 1),
        ]
        if args.variants:
            words += ["--variants", args.variants]
        elif args.fast:
            words.append("--fast")
        if args.compile:
            words.append("--compile")
        words += [
            "--runs",
            str(args.runs),
            "--warmup",
            str(args.warmup),
            "--budget",
            f"{args.budget:g}",
            "--min-runs",
            str(args.min_runs),
        ]
        if args.no_memory:
            words.append("--no-memory")
        if args.matmul_size != 2048:
            words += ["--matmul-size", str(args.matmul_size)]
    if args.width:
        words += ["--width", f"{args.width:g}"]
    words += [
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--threads",
        str(args.threads or torch.get_num_threads()),
    ]
    return shlex.join(words)


def train_words(args: argparse.Namespace) -> list[str]:
    """The ``--train`` settings of ``canonical_command``, every one spelled out."""
    words = ["--train", "--models", args.models or ",".join(DEFAULT_TRAIN_MODELS), "--crop-size", str(args.crop_size),
             "--batch-size", str(args.batch_size or 8), "--workers", str(args.workers), "--steps", str(args.steps),
             "--warmup", str(args.warmup), "--pipeline-batches", str(args.pipeline_batches), "--end-to-end-steps",
             str(args.end_to_end_steps), "--cache", args.cache, "--dataset", args.dataset]
    if args.step_variants:
        words += ["--step-variants", args.step_variants]
    if args.data_root:
        words += ["--data-root", args.data_root]
    else:
        words += ["--data-size", "x".join(map(str, args.data_size)), "--data-images", str(args.data_images)]
    if args.no_end_to_end:
        words.append("--no-end-to-end")
    return words


def run(args: argparse.Namespace) -> None:
    from ..benchmark.report import render_markdown

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if args.report_from:
        reports = []
        for path in args.report_from:
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError) as e:
                raise UserError(f"{path}: cannot read a benchmark JSON ({e})") from None
            reports.extend(data if isinstance(data, list) else [data])
        if not args.markdown:
            raise UserError("--report-from renders reports: give --markdown FILE")
        write_text(args.markdown, render_markdown(reports))
        print(f"wrote {args.markdown} from {len(reports)} report(s)")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    command = canonical_command(args)
    from ..utils.distributed import pick_device

    device = pick_device(args.device)
    common = {"device": device, "width": args.width, "command": command, "log": log}
    if args.labels:
        from ..benchmark.labels import benchmark_labels, format_labels

        if not args.models:
            raise UserError("--labels measures trained models: give --models RUN_DIR[,RUN_DIR]")
        result = benchmark_labels(args.models.split(","), size=args.size, runs=args.runs, warmup=args.warmup,
                                  command=command, log=log)
        print(format_labels(result))
    elif args.train:
        models = args.models.split(",") if args.models else list(DEFAULT_TRAIN_MODELS)
        result = benchmark_training(
            models, crop=args.crop_size, batch=args.batch_size or 8, workers=args.workers, steps=args.steps,
            warmup=args.warmup, caches=args.cache.split(","),
            step_variants=args.step_variants.split(",") if args.step_variants else None,
            pipeline_batches=args.pipeline_batches, end_to_end_steps=args.end_to_end_steps, precision=args.precision,
            dataset=args.dataset, data_root=args.data_root, data_size=args.data_size, data_images=args.data_images,
            end_to_end=not args.no_end_to_end, **common,
        )
        print(format_training(result))
    else:
        models = args.models.split(",") if args.models else list(DEFAULT_MODELS)
        if args.variants:
            variants = [parse_variant(v, args.precision) for v in args.variants.split(",")]
        else:
            variants = [
                Variant(channels_last=args.fast, fold_bn=args.fast, compile=args.compile, precision=args.precision)
            ]
        result = benchmark_inference(
            models, variants=variants, size=args.size, batch=args.batch_size or 1, runs=args.runs, warmup=args.warmup,
            budget_s=args.budget, min_runs=args.min_runs, memory=not args.no_memory, matmul_size=args.matmul_size,
            **common,
        )
        print(format_inference(result))
    if args.json:
        write_json(args.json, result)
    if args.markdown:
        write_text(args.markdown, render_markdown([result]))


def add_parser(subparsers: Any) -> None:
    """The ``benchmark`` subcommand (call with the CLI's subparsers object)."""
    from ..benchmark import __doc__ as protocol

    p = subcommand(subparsers, "benchmark", protocol,
                   "latency of the models beside torchvision peers (interleaved), or training throughput")
    p.add_argument(
        "--models",
        default=None,
        metavar="A,B",
        help=f"comma-separated (default {','.join(DEFAULT_MODELS)}; with --train {','.join(DEFAULT_TRAIN_MODELS)}); "
        f"peers: {', '.join(PEER_NAMES)}; or trained runs, or deployed files (.onnx, OpenVINO .xml, int8 too) "
        "timed as they are",
    )
    p.add_argument(
        "--width", type=float, default=None, help="channel multiplier of the ICNet family (PSPNet keeps 1.0)"
    )
    p.add_argument("--size", type=parse_size, default=(1024, 2048), help="input HxW (default 1024x2048)")
    p.add_argument("--batch-size", type=int, default=None, help="images per pass (default 1; with --train 8)")
    add_device(p, default="cpu")
    p.add_argument("--precision", default="32", choices=["32", "bf16", "16"], help="16 needs CUDA")
    p.add_argument("--fast", action="store_true", help="Conv-BN folding + channels_last (aticnet.inference.fast)")
    p.add_argument(
        "--compile", action="store_true", help="also torch.compile (Inductor, freezing); compile time not timed"
    )
    p.add_argument(
        "--variants",
        default=None,
        metavar="V,V",
        help="measure several ways of running each model, e.g. plain,fast,fast+compile,fast+bf16 "
        "(parts: plain, fast, cl, fold, compile, bf16, 16); overrides --fast/--compile",
    )
    p.add_argument("--runs", type=int, default=15, help="timed passes per model (default 15)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes per model first (default 2)")
    p.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds of timed passes per model before it stops early (default 60)",
    )
    p.add_argument("--min-runs", type=int, default=3, help="timed passes every model gets, budget or not (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, = cores)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument(
        "--matmul-size", type=int, default=2048, help="n of the n x n fp32 reference matrix product (default 2048)"
    )
    p.add_argument("--train", action="store_true", help="training throughput: step vs data pipeline")
    p.add_argument("--labels", action="store_true",
                   help="the labels step alone (low-res logits -> labels at --size), every method, on trained --models")
    p.add_argument("--crop-size", type=int, default=720, help="--train: square crop (default 720, the paper's)")
    p.add_argument("--workers", type=int, default=2, help="--train: loader processes (default 2)")
    p.add_argument("--steps", type=int, default=5, help="--train: timed steps per model (default 5)")
    p.add_argument("--pipeline-batches", type=int, default=10, help="--train: timed loader batches (default 10)")
    p.add_argument("--cache", default="none", metavar="MODE[,MODE]",
                   help="--train: the data pipelines to time, as aticnet train --cache makes them: none, memory, "
                        "device, comma-separated (default none)")
    p.add_argument("--step-variants", default=None, metavar="V[,V]",
                   help="--train: the step alone, one change at a time: baseline, channels_last, fused, compile "
                        "(default: fused on the CPU; baseline,channels_last,fused on a GPU)")
    p.add_argument("--end-to-end-steps", type=int, default=100,
                   help="--train: timed steps of each model fed by each pipeline (default 100)")
    p.add_argument("--dataset", default="synthetic", help="--train: data set for the pipeline (default synthetic)")
    p.add_argument("--data-root", default=None, help="--train: its folder (default: synthetic scenes in a temp folder)")
    p.add_argument(
        "--data-size", type=parse_size, default=(1024, 2048), help="--train: synthetic scene size (default 1024x2048)"
    )
    p.add_argument("--data-images", type=int, default=16, help="--train: synthetic scenes to generate (default 16)")
    p.add_argument("--no-end-to-end", action="store_true", help="--train: skip timing loader + step together")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write BENCHMARKS.md-style markdown of the results")
    p.add_argument(
        "--report-from",
        nargs="+",
        metavar="JSON",
        default=None,
        help="measure nothing: render --markdown from these benchmark JSON files",
    )
    p.set_defaults(func=run)
