"""Command-line flags of ``aticnet train``, made from :class:`TrainConfig`'s fields.

One flag per field, same name with dashes, the field's comment as help: the config file
and the command line cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from pathlib import Path

from .config import TrainConfig, load_config
from .errors import UserError

SKIPPED = {"model_options", "resume"}  # YAML-only, or a flag with its own shape below


def field_comments() -> dict[str, str]:
    comments = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if m:
            comments[m.group(1)] = m.group(2).strip()
    return comments


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML recipe (see configs/); flags override it")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                        help="continue the run in --out from its latest checkpoint, or from CKPT")
    comments = field_comments()
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in SKIPPED:
            continue
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if isinstance(hint, types.UnionType) else hint
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{comments.get(f.name, '')} (default: {default})"
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            parser.add_argument(flag, nargs="+", type=item, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=base, default=None, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < config file (or, on resume, the run's saved config when it has one) < flags."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name not in SKIPPED}
    overrides["resume"] = args.resume
    path = args.config
    if path is None and args.resume:
        out = args.out or TrainConfig.out
        saved = Path(out) / "config.yaml"
        if saved.is_file():
            path = saved
        elif args.resume == "auto":
            raise UserError(f"{out}: --resume needs the run's config.yaml (is --out the run directory?)")
    config = load_config(path, **overrides)
    if args.resume is None:
        config.resume = None
    return config
