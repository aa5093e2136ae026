"""The ``aticnet`` command line: one subcommand per job, each a thin layer over a module."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError


def parse_size(text: str) -> tuple[int, int]:
    """'1024x2048' -> (1024, 2048); a single number means a square."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1024x2048, not {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must look like 1024x2048, not {text!r}")
    return parts[0], parts[1]


def write_json(data: object, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n")


def cmd_analyze(args: argparse.Namespace) -> None:
    from .analyze import analyze, format_report
    from .models import build_model, model_config

    names = args.model
    reports = []
    for name in names:
        overrides = {"width": args.width} if args.width else {}
        model_config(name, **overrides)  # unknown names fail here, before any work
        model = build_model(name, num_classes=args.num_classes, **overrides)
        report = analyze(model, args.size, runs=args.runs)
        print(format_report(report))
        reports.append(report)
    write_json(reports[0] if len(reports) == 1 else reports, args.json)


def cmd_train(args: argparse.Namespace) -> None:
    from .cli_train import config_from_args
    from .distributed import shutdown_distributed
    from .train import train

    config = config_from_args(args)
    try:
        summary = train(config)
    finally:
        shutdown_distributed()
    scores = summary.get("scores")
    if scores and "per_class_iou" in scores:
        from .metrics import format_scores

        print(format_scores(scores, title=f"{config.model} on {config.dataset} {config.val_split}, step {summary['step']}"))
    write_json(summary, args.json)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .metrics import format_scores

    if args.predictions:
        if args.dataset != "cityscapes":
            raise UserError("--predictions scores label-id PNGs against Cityscapes; use --dataset cityscapes")
        from .cityscapes_eval import evaluate_cityscapes_predictions

        scores = evaluate_cityscapes_predictions(args.predictions, args.data_root, args.split)
        title = f"{args.predictions} on cityscapes {args.split}"
    else:
        if not args.weights:
            raise UserError("give --weights (a run directory or .safetensors) or --predictions DIR")
        scores = evaluate_weights(args)
        title = f"{args.weights} on {args.dataset} {args.split}"
    print(format_scores(scores, title=title))
    print(f"{scores['num_images']} images in {scores['seconds']:.1f} s")
    write_json(scores, args.json)


def evaluate_weights(args: argparse.Namespace) -> dict:
    from .checkpoint import load_model
    from .data import EvalTransform, build_dataset
    from .data.loader import eval_loader
    from .distributed import pick_device
    from .evaluate import evaluate

    device = pick_device(args.device)
    model, meta = load_model(args.weights, device)
    dataset = build_dataset(args.dataset, args.data_root, args.split, transform=EvalTransform(mean=model.config.mean, std=model.config.std))
    if dataset.num_classes != model.config.num_classes:
        raise UserError(f"{args.weights}: the model predicts {model.config.num_classes} classes, {args.dataset} has {dataset.num_classes}")
    loader = eval_loader(dataset, workers=args.workers, max_images=args.max_images)
    return evaluate(model, loader, num_classes=dataset.num_classes, class_names=dataset.classes, device=device,
                    flip=args.flip, scales=args.scales, precision=args.precision)


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    results = run_demo(args.out, steps=args.steps, latency_runs=args.latency_runs, seed=args.seed, width=args.width)
    write_json({name: {k: r[k] for k in ("miou", "params", "latency_ms", "pixel_accuracy", "train_seconds", "per_class_iou")}
                for name, r in results.items()}, args.json)
    print(f"report, curves and comparison figure in {args.out}/")


def build_parser() -> argparse.ArgumentParser:
    from .models import MODEL_NAMES

    parser = argparse.ArgumentParser(prog="aticnet", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for bad input")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("analyze", help="parameters, GFLOPs, receptive fields and latency of a model")
    p.add_argument("--model", nargs="+", default=["aticnet"], choices=MODEL_NAMES, metavar="NAME",
                   help=f"one or more of: {', '.join(MODEL_NAMES)}")
    p.add_argument("--width", type=float, default=None, help="channel multiplier (default: the model's own)")
    p.add_argument("--size", type=parse_size, default=(1024, 2048), help="input HxW (default 1024x2048)")
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--runs", type=int, default=3, help="timed forward passes for the latency (0 skips)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=cmd_analyze)

    from .cli_train import add_train_flags

    p = sub.add_parser("train", help="train a model (torchrun for several processes or machines)")
    add_train_flags(p)
    p.add_argument("--json", metavar="FILE", help="write the run's summary as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="mIoU of trained weights, or of saved Cityscapes predictions")
    p.add_argument("--weights", metavar="W", help="a run directory or a .safetensors file")
    p.add_argument("--predictions", metavar="DIR", help="score label-id PNGs named as the Cityscapes evaluator expects")
    p.add_argument("--dataset", required=True, help="cityscapes, camvid, folder or synthetic")
    p.add_argument("--data-root", required=True, metavar="DIR")
    p.add_argument("--split", default="val")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="multi-scale inference, e.g. 0.75 1 1.25")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="32", choices=["32", "bf16", "16"])
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="the main job: train ICNet and AtICNet on synthetic scenes and compare them")
    p.add_argument("--out", default="runs/demo", help="where the data, runs and report go (default runs/demo)")
    p.add_argument("--json", metavar="FILE", help="also write {model: {miou, params, latency_ms, ...}} as JSON")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default: the demo recipe's)")
    p.add_argument("--latency-runs", type=int, default=3, help="timed passes at 1024x2048 per model (0 skips)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=float, default=0.5, help="channel width of both models (default 0.5, as released)")
    p.set_defaults(func=cmd_demo)

    from . import export, figures_cli, predict

    predict.add_parser(sub)
    export.add_parser(sub)
    figures_cli.add_parser(sub)  # compare and plot

    from .benchmark import add_parser as add_benchmark_parser

    add_benchmark_parser(sub)
    from . import check_data

    check_data.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:  # leave a host application's logging alone
        logging.basicConfig(level=logging.WARNING, format="aticnet: %(message)s")
        logging.getLogger("aticnet").setLevel(logging.DEBUG if args.debug else logging.INFO)
    try:
        args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"aticnet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if args.debug or e.filename is None:  # no file to name: a bug, not the user's input
            raise
        print(f"aticnet {args.command}: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aticnet {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
