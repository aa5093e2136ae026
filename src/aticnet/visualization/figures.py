"""The paper's two figures from trained runs: ``compare_models`` (its Fig. 4: image | ground truth |
each model) and ``plot_runs`` (its Fig. 3: loss and val mIoU of several runs; warm-started rounds
continue the x axis of the run they started from)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.segmenter import load
from ..utils.errors import DataError, UserError
from ..utils.io import read_image, read_label_map


def read_label(path: str | Path) -> np.ndarray:
    """A ground-truth PNG as H x W train ids: ``*_labelIds.png`` (Cityscapes label ids) goes through the
    official table; any other file is read as train ids (255 = ignore)."""
    labels = read_label_map(path).numpy().astype(np.int64)
    if Path(path).name.endswith("_labelIds.png"):
        from ..data.cityscapes_labels import label_id_to_train_id_lut

        return label_id_to_train_id_lut().numpy()[np.clip(labels, 0, 255)]
    return labels


def compare_models(
    weights: Sequence[str | Path],
    images: Sequence[str | Path],
    out: str | Path,
    *,
    labels: Sequence[str | Path] | None = None,
    names: Sequence[str] | None = None,
    device: str = "cpu",
    title: str | None = None,
) -> Path:
    """The side-by-side figure of several models on the same images (the paper's Fig. 4), with a legend of the
    classes; what ``aticnet compare`` draws.

    Examples:
        >>> import aticnet
        >>> aticnet.compare_models(["icnet-camvid", "aticnet-camvid"], ["street.png"], "compare.png")

    Args:
        weights: one or more models, in any form [`aticnet.load`][aticnet.load] takes; a column each.
        images: picture files, a row each.
        out: the figure to write (PNG).
        labels: ground truth per image (class-id PNGs, or Cityscapes ``*_labelIds.png``), a column of its own.
        names: column titles (default: the runs' folder names).
        device: where the models run.
        title: a title above the figure.

    Returns:
        ``out``, as a ``Path``.

    Raises:
        UserError: no weights or images, counts that do not match, or models with different classes.
    """
    from .drawing import comparison_figure

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
        image = read_image(path).permute(1, 2, 0).numpy()
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


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, *, labels: Sequence[str] | None = None) -> Path:
    """Loss and validation mIoU of several runs on one figure (the paper's Fig. 3); what ``aticnet plot`` draws.

    A run warm-started (``--init``) from another listed run continues its x axis.

    Args:
        run_dirs: run directories (each with its ``metrics.jsonl``).
        out: the figure to write (PNG).
        labels: one legend entry per run (default: the folder names).

    Returns:
        ``out``, as a ``Path``.

    Raises:
        UserError: a folder is not a run directory, or the labels do not match the runs.
    """
    from .drawing import curves_figure

    if labels and len(labels) != len(run_dirs):
        raise UserError(f"--labels gives {len(labels)} labels for {len(run_dirs)} runs")
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            raise UserError(f"{d}: not a run directory")
        if not (d / "metrics.jsonl").is_file():
            raise DataError(d, "no metrics.jsonl in this run directory")
    return curves_figure(run_dirs, out, labels=labels)
