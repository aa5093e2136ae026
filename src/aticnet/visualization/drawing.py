"""Figures: the side-by-side comparison (the paper's Fig. 4) and training curves (its Fig. 3), with matplotlib."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.overlay import Palette, as_numpy, colorize
from ..training.run_dir import evaluated_on, read_metrics, run_config


def comparison_figure(
    rows: Sequence[Mapping[str, Any]],
    palette: Palette,
    class_names: Sequence[str],
    out: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """A grid: one row per image, columns image | ground truth (when given) | each model.

    Each row is ``{"image": HxWx3 uint8, "label": HxW or None, "predictions": {name: HxW}}``.
    A legend shows the classes that appear anywhere in the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    has_label = any(r.get("label") is not None for r in rows)
    model_names = list(rows[0]["predictions"])
    columns = ["image", *(["ground truth"] if has_label else []), *model_names]
    h, w = as_numpy(rows[0]["image"]).shape[:2]
    cell = 3.2
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(cell * len(columns), cell * h / w * len(rows) + 1.2), squeeze=False)
    seen: set[int] = set()
    for r, row in enumerate(rows):
        panels = [as_numpy(row["image"])]
        if has_label:
            label = row.get("label")
            panels.append(colorize(label, palette) if label is not None else np.zeros_like(panels[0]))
            if label is not None:
                seen |= set(np.unique(as_numpy(label)).tolist())
        for name in model_names:
            pred = as_numpy(row["predictions"][name])
            panels.append(colorize(pred, palette))
            seen |= set(np.unique(pred).tolist())
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=11)
    handles = [Patch(color=np.asarray(palette[i]) / 255, label=class_names[i]) for i in sorted(seen) if i < len(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96 if title else 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run_offsets(run_dirs: Sequence[Path]) -> dict[Path, int]:
    """Step offset of each run: a run warm-started (``init``) from another listed run continues its x axis."""
    resolved = {Path(d).resolve(): Path(d) for d in run_dirs}
    parents: dict[Path, Path] = {}
    for d in run_dirs:
        init = run_config(d).get("init")
        if init:
            parent = Path(init).resolve()
            parent = parent if parent in resolved else parent.parent  # a .safetensors inside a run dir
            if parent in resolved:
                parents[Path(d)] = resolved[parent]

    def last_step(d: Path) -> int:
        rows = read_metrics(Path(d) / "metrics.jsonl")
        return max((r.get("step", 0) for r in rows), default=0)

    offsets: dict[Path, int] = {}

    def offset(d: Path, depth: int = 0) -> int:
        if d not in offsets:
            parent = parents.get(d)
            offsets[d] = 0 if parent is None or depth > len(run_dirs) else offset(parent, depth + 1) + last_step(parent)
        return offsets[d]

    for d in run_dirs:
        offset(Path(d))
    return offsets


def curves_figure(run_dirs: Sequence[str | Path], out: str | Path, *, labels: Sequence[str] | None = None) -> Path:
    """Training loss and validation mIoU of several runs on one figure (warm-started rounds continue).

    The mIoU panel names what the runs were scored on (a held-out drive scores a drive none of them trained on).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dirs = [Path(d) for d in run_dirs]
    offsets = run_offsets(run_dirs)
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(11, 4))
    for i, d in enumerate(run_dirs):
        rows = read_metrics(d / "metrics.jsonl")
        label = labels[i] if labels else d.name
        color = f"C{i % 10}"
        train = [r for r in rows if r.get("kind", "train") == "train" and r.get("loss") is not None]
        evals = [r for r in rows if r.get("kind") == "eval" and r.get("miou") is not None]
        x0 = offsets[d]
        if train:
            ax_loss.plot([x0 + r["step"] for r in train], [r["loss"] for r in train], color=color, label=label, lw=1.2)
        if evals:
            ax_miou.plot([x0 + r["step"] for r in evals], [100 * r["miou"] for r in evals], "o-", color=color, label=label, ms=3)
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    scored_on = {evaluated_on(d) for d in run_dirs}
    ax_miou.set(xlabel="step", ylabel="mIoU (%)", title=f"mIoU on the {' / '.join(sorted(scored_on))}")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
