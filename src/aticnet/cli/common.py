"""What several subcommands share: size and device arguments, and writing a JSON report."""

from __future__ import annotations

import argparse
from typing import Any

DEVICES = ["auto", "cpu", "cuda"]


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


def add_device(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument("--device", default=default, choices=DEVICES, help=f"where to run (default {default})")


def add_json(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", metavar="FILE", help=f"also write {what} as JSON")


def write_report(path: str | None, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` when the user gave one."""
    if path:
        from ..utils.io import write_json

        write_json(path, data)


def subcommand(subparsers: Any, name: str, doc: str | None, help: str) -> argparse.ArgumentParser:
    """A subparser whose ``--help`` shows the module docstring ``doc`` as written."""
    return subparsers.add_parser(name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_engine(parser: argparse.ArgumentParser) -> None:
    """--backend, --infer-scale and --precision: how a deployable form runs (see aticnet.load)."""
    parser.add_argument("--backend", default=None, choices=["torch", "onnxruntime", "openvino"],
                        help="the engine, where the weights can run on more than one (default: the file's own; a "
                             "run or .safetensors runs on openvino, converted when loaded, on a CPU where it is "
                             "installed, else torch; evaluate scores a run with torch unless told)")
    parser.add_argument("--infer-scale", type=float, default=None, metavar="S",
                        help="run the network at S x the image size; labels still at the image's size (default: the "
                             "scale the weights were trained for, 1 unless they say otherwise)")
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "16"],
                        help="32; bf16: OpenVINO computes in bfloat16, PyTorch under autocast (16: CUDA only)")
