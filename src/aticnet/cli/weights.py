"""``aticnet weights``: the trained weights that ship with aticnet, by name, with their classes, input size,
parameters and measured figures. Any command that takes --weights (or train's --init) takes these names.
``aticnet weights NAME`` prints that model's card: how it was trained, what it scores, its limits."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from .common import subcommand

# the held-out figure of a shipped model's config.json, with the recipe behind it
HELDOUT = ("camvid_heldout_0006R0_miou", "heldout_recipe_steps", "heldout_seeds")
SPEED_COLUMNS = (("ms_360x480", "ms at 360x480", 1, "{:.1f}"), ("ms_1024x2048", "ms at 1024x2048", 1, "{:.1f}"),
                 ("miou_change", "val mIoU change", 100, "{:+.2f}"))  # key, title, scale, format


def add_parser(subparsers: Any) -> None:
    p = subcommand(subparsers, "weights", __doc__, "list the trained weights that ship with aticnet")
    p.add_argument("name", nargs="?", default=None, help="show one model's card instead of the list")
    p.add_argument("--json", action="store_true", help="the list as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..models.pretrained import get_weights, list_weights

    if args.name:
        print((get_weights(args.name).folder / "README.md").read_text())
        return
    found = list_weights()
    if args.json:
        print(json.dumps([{"name": w.name, "model": w.model, "dataset": w.dataset, "classes": list(w.classes),
                           "input_size": list(w.input_size), "params": w.params, "metrics": w.metrics,
                           "folder": str(w.folder)} for w in found], indent=2))
        return
    if not found:
        print("no weights ship with this installation")
        return
    print("\n\n".join(describe(w) for w in found))
    print("\naticnet weights NAME prints a model's card: how it was trained, its classes, what it is for.")


def readable(key: str) -> str:
    """A metric key in words: ``toy_miou`` -> "toy mIoU"."""
    return re.sub(r"\bmiou\b", "mIoU", key.replace("_", " "))


def figure(key: str, value: Any) -> str:
    """A measured value as read: mIoU fractions in percent."""
    return f"{100 * value:.2f}" if key.endswith("miou") and isinstance(value, float) else f"{value}"


def describe(w: Any) -> str:
    """One shipped model as lines of text: what it is, then each measured figure by name."""
    shipped = json.loads((w.folder / "config.json").read_text()).get("shipped", {})
    size = f"{w.input_size[0]}x{w.input_size[1]}" if all(w.input_size) else "any size"
    lines = [(f"{w.name}: {w.model}, {w.num_classes} classes ({w.dataset or 'no data set named'}), trained on "
              f"{size} frames, {w.params / 1e6:.2f} M parameters")]
    if shipped.get("trained_on"):
        minutes = f", {shipped['wall_minutes']:.0f} minutes" if shipped.get("wall_minutes") else ""
        lines.append(f"  trained on {shipped['trained_on']}{minutes}")
    metrics = dict(w.metrics)
    if HELDOUT[0] in metrics:
        miou, steps, seeds = (metrics.pop(k, None) for k in HELDOUT)
        recipe = ", ".join(part for part in (f"{steps} steps" if steps else "",
                                              f"{seeds} seed{'s' * (seeds != 1)}" if seeds else "") if part)
        lines.append(f"  mIoU on CamVid's held-out drive 0006R0: {figure(HELDOUT[0], miou)} (its recipe trained "
                     f"without that drive{': ' + recipe if recipe else ''})")
    speed = metrics.pop("speed", None)
    lines += [f"  {readable(key)}: {figure(key, value)}" for key, value in metrics.items()
              if not isinstance(value, dict)]
    if isinstance(speed, dict) and speed:
        where = f" on {shipped['cpu']}" if shipped.get("cpu") else ""
        lines.append(f"  image to labels, batch 1{where}; val mIoU change against the model as built:")
        width = max(len(form) for form in speed)
        lines.append("    " + " " * width + "".join(f"{title:>17}" for _, title, _, _ in SPEED_COLUMNS))
        for form, figures in speed.items():
            cells = "".join(f"{fmt.format(scale * figures[key]) if key in figures else '-':>17}"
                            for key, _, scale, fmt in SPEED_COLUMNS)
            lines.append(f"    {form:<{width}}{cells}")
    return "\n".join(lines)
