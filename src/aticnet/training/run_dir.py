"""The run directory: what a training run writes, and the one place that reads it back.

A run directory holds::

    config.yaml          the TrainConfig, every field (``aticnet train --config config.yaml`` repeats the run)
    metrics.jsonl        one JSON object per row: train rows (step, loss, lr, images_per_s) and eval rows (miou...)
    checkpoints/         step_XXXXXXX.pt, everything an exact resume needs (``aticnet.training.checkpoint``)
    model.safetensors    the final weights with their model config and classes (``aticnet.models.weights``)
    best.safetensors     the weights of the best validation mIoU
    tensorboard/         the same rows for TensorBoard, when it is installed
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Append rows to ``run_dir/metrics.jsonl``; on resume, drop rows past the checkpoint's step.

    A run killed after its last checkpoint logged steps it will now redo; without the
    truncation they would appear twice.
    """

    def __init__(self, run_dir: Path, *, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            rows = read_metrics(self.path) if self.path.exists() else []
            self.path.write_text("".join(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= resume_step))
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                pass

    def write(self, row: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.writer is not None:
            kind = row.get("kind", "train")
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{kind}/{key}", value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``.

    Args:
        path: the file, or the run directory holding it.

    Returns:
        One dict per row, in order. Train rows hold ``step``, ``loss``, ``lr``, ``images_per_s``, ...; eval rows
            ``kind`` "eval", ``miou``, .... A torn last line from a killed run is skipped; no file gives no rows.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's config.yaml as a plain dict ({} when it has none)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder a training run wrote (it has config.yaml or metrics.jsonl)."""
    path = Path(path)
    return path.is_dir() and ((path / CONFIG_FILE).is_file() or (path / METRICS_FILE).is_file())


def run_dir_of(path: str | Path) -> Path | None:
    """The run directory a weights path belongs to (the folder itself, or the folder holding the file), if any."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return folder if is_run_dir(folder) else None


def evaluated_on(run_dir: str | Path) -> str:
    """What a run's eval rows score: its held-out drive, or its val split (from the run's config.yaml)."""
    config = run_config(run_dir)
    if config.get("holdout_drive"):
        return f"held-out drive {config['holdout_drive']}"
    return f"{config.get('val_split') or 'val'} split"


@dataclass
class RunRecord:
    """What a run directory tells a model card: its training config and its last eval and train rows."""

    path: str
    train_config: dict[str, Any] | None
    last_eval: dict[str, Any] | None
    last_train: dict[str, Any] | None


def read_run(run_dir: str | Path) -> RunRecord:
    """Read ``config.yaml`` and ``metrics.jsonl`` of a run directory (either may be missing)."""
    rows = read_metrics(run_dir)
    evals = [r for r in rows if r.get("kind") == "eval"]
    trains = [r for r in rows if r.get("kind", "train") == "train"]
    return RunRecord(str(run_dir), run_config(run_dir) or None, evals[-1] if evals else None,
                     trains[-1] if trains else None)
