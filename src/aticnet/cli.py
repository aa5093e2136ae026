"""The ``aticnet`` command line: one subcommand per job, each a thin layer over a module."""

from __future__ import annotations

import argparse
import json
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"aticnet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aticnet {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
