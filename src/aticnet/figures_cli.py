"""``aticnet compare`` (the paper's Fig. 4: image | ground truth | each model) and
``aticnet plot`` (its Fig. 3: loss and val mIoU of several runs; warm-started rounds
continue the x axis of the run they started from)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .api import load, read_image
from .errors import DataError, UserError


def read_label(path: str | Path) -> np.ndarray:
    """A ground-truth PNG as H x W train ids: ``*_labelIds.png`` (Cityscapes label ids) goes through the
    official table; any other file is read as train ids (255 = ignore)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "label file not found")
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DataError(path, f"a label map must be a one-channel PNG, this one is {img.mode}")
            labels = np.asarray(img).astype(np.int64)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(path, f"not a readable label PNG ({e.__class__.__name__})") from None
    if path.name.endswith("_labelIds.png"):
        from .data.cityscapes_labels import label_id_to_train_id_lut

        return label_id_to_train_id_lut().numpy()[np.clip(labels, 0, 255)]
    return labels


def compare(
    weights: Sequence[str | Path],
    images: Sequence[str | Path],
    out: str | Path,
    *,
    labels: Sequence[str | Path] | None = None,
    names: Sequence[str] | None = None,
    device: str = "cpu",
    title: str | None = None,
) -> Path:
    """The side-by-side figure of several models on the same images."""
    from .visualize import comparison_figure

    if not weights or not images:
        raise UserError("compare needs --weights (one or more) and --images (one or more)")
    if labels and len(labels) != len(images):
        raise UserError(f"--labels gives {len(labels)} files for {len(images)} images; give one per image, in order")
    if names and len(names) != len(weights):
        raise UserError(f"--names gives {len(names)} names for {len(weights)} weights")
    models = [load(w, device) for w in weights]
    first = models[0]
    for w, m in zip(weights, models):
        if m.num_classes != first.num_classes:
            raise UserError(f"{w}: predicts {m.num_classes} classes, {weights[0]} predicts {first.num_classes}; "
                            "compare models trained on the same classes")
    names = list(names) if names else _default_names(weights, models)
    rows: list[dict[str, Any]] = []
    for i, path in enumerate(images):
        image = read_image(path)
        label = read_label(labels[i]) if labels else None
        if label is not None and label.shape != image.shape[:2]:
            raise DataError(labels[i], f"label is {label.shape[1]}x{label.shape[0]}, its image {path} is "
                                       f"{image.shape[1]}x{image.shape[0]}")
        rows.append({"image": image, "label": label,
                     "predictions": {n: m.predict(image).numpy() for n, m in zip(names, models)}})
    return comparison_figure(rows, first.colors, first.classes, out, title=title)


def _default_names(weights: Sequence[str | Path], models: Sequence[Any]) -> list[str]:
    """The run directory's name (or the file's stem), made unique; falls back to the model name."""
    names = []
    for w, m in zip(weights, models):
        p = Path(w)
        name = p.name if p.is_dir() else (p.parent.name if p.stem in ("model", "best") else p.stem)
        names.append(name or m.name)
    if len(set(names)) < len(names):
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    return names


def plot(run_dirs: Sequence[str | Path], out: str | Path, *, labels: Sequence[str] | None = None) -> Path:
    """Loss and val mIoU curves of ``run_dirs`` on one figure."""
    from .visualize import curves_figure

    if labels and len(labels) != len(run_dirs):
        raise UserError(f"--labels gives {len(labels)} labels for {len(run_dirs)} runs")
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            raise UserError(f"{d}: not a run directory")
        if not (d / "metrics.jsonl").is_file():
            raise DataError(d, "no metrics.jsonl in this run directory")
    return curves_figure(run_dirs, out, labels=labels)


def cmd_compare(args: argparse.Namespace) -> None:
    out = compare(args.weights, args.images, args.out, labels=args.labels, names=args.names, device=args.device,
                  title=args.title)
    print(f"wrote {out}")


def cmd_plot(args: argparse.Namespace) -> None:
    out = plot(args.runs, args.out, labels=args.labels)
    print(f"wrote {out}")


def add_parser(subparsers: Any) -> None:
    """Adds ``compare`` and ``plot``."""
    p = subparsers.add_parser("compare", help="figure: image | ground truth | each model's prediction (Fig. 4)")
    p.add_argument("--weights", nargs="+", required=True, metavar="W", help="run directories, .safetensors or .onnx")
    p.add_argument("--images", nargs="+", required=True, metavar="FILE")
    p.add_argument("--labels", nargs="+", metavar="FILE",
                   help="ground truth per image: train-id PNGs, or Cityscapes *_labelIds.png")
    p.add_argument("--names", nargs="+", metavar="NAME", help="column titles, one per --weights")
    p.add_argument("--title", default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", required=True, metavar="FIG.png")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("plot", help="figure: loss and val mIoU of runs; warm-started rounds continue (Fig. 3)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="legend entry per run (default: directory names)")
    p.add_argument("--out", required=True, metavar="FIG.png")
    p.set_defaults(func=cmd_plot)
