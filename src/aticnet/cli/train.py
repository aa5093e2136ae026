"""``aticnet train``: one flag per TrainConfig field (same name with dashes), its help from the field's metadata.

Defaults < the --config YAML file (on --resume without --config: the run's saved config.yaml) < flags.
Several processes or machines: ``torchrun --nproc_per_node N -m aticnet train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from .common import add_json, subcommand, write_report


def add_parser(subparsers: Any) -> None:
    from ..training.config import TrainConfig, field_help, union_members

    p = subcommand(subparsers, "train", __doc__, "train a model (torchrun for several processes or machines)")
    p.add_argument("--config", metavar="FILE", help="YAML recipe (see configs/); flags override it")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue the run in --out from its latest checkpoint, or from CKPT")
    helps = field_help()
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "resume":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{helps[f.name]} (default: {default})"
        members = union_members(hints[f.name])
        if members == [bool]:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(members[0]) is dict:
            p.add_argument(flag, type=_yaml_mapping, default=None, metavar="YAML", help=help_text)
        elif any(typing.get_origin(m) is tuple for m in members):  # several words, typed by load_config
            p.add_argument(flag, nargs="+", type=_number_or_word, default=None, metavar="V", help=help_text)
        else:
            p.add_argument(flag, type=members[0], default=None, metavar=f.name.upper(), help=help_text)
    add_json(p, "the run's summary")
    p.set_defaults(func=run)


def _yaml_mapping(text: str) -> dict[str, Any]:
    """A flag's mapping in YAML flow style: '{dropout: 0.1, rates: [12, 8, 4, 2]}'."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping such as '{{dropout: 0.1}}', not {text!r}")
    return value


def _number_or_word(text: str) -> int | float | str:
    """A word of a several-word flag: a number when it reads as one ('320', '0.4', '1e-4'), else the word."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def config_from_args(args: argparse.Namespace):
    """Defaults < config file (or, on resume, the run's saved config when it has one) < flags."""
    from ..training.config import TrainConfig, load_config
    from ..utils.errors import UserError

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    overrides = {name: getattr(args, name) for name in names}
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


def run(args: argparse.Namespace) -> None:
    from ..evaluation.metrics import format_scores
    from ..training.trainer import train
    from ..utils.distributed import shutdown_distributed

    config = config_from_args(args)
    try:
        summary = train(config)
    finally:
        shutdown_distributed()
    scores = summary.get("scores")
    if scores and "per_class_iou" in scores:
        print(format_scores(scores, title=f"{config.model} on {config.dataset} {config.val_split}, step {summary['step']}"))
    write_report(args.json, summary)
