"""``aticnet weights``: the trained weights that ship with aticnet, by name, with their classes, input size,
parameters and measured figures. Any command that takes --weights (or train's --init) takes these names."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import subcommand


def add_parser(subparsers: Any) -> None:
    p = subcommand(subparsers, "weights", __doc__, "list the trained weights that ship with aticnet")
    p.add_argument("name", nargs="?", default=None, help="show one model's card instead of the list")
    p.add_argument("--json", action="store_true", help="the list as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..models.pretrained import format_table, get_weights, list_weights

    if args.name:
        print((get_weights(args.name).folder / "README.md").read_text())
        return
    found = list_weights()
    if args.json:
        print(json.dumps([{"name": w.name, "model": w.model, "dataset": w.dataset, "classes": list(w.classes),
                           "input_size": list(w.input_size), "params": w.params, "metrics": w.metrics,
                           "folder": str(w.folder)} for w in found], indent=2))
        return
    print(format_table(found))
