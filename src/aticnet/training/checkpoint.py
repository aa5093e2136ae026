"""Training checkpoints (``checkpoints/step_0001000.pt``): everything an exact resume needs (model, optimizer,
scheduler, scaler, step and RNG states). Written to a temporary file, fsynced and renamed, so a kill or a full
disk never leaves a torn file and never harms the previous checkpoint. Loaded with
``torch.load(weights_only=True)``: a file that would run code is refused."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..utils.errors import UserError
from ..utils.io import atomic_write

CHECKPOINT_PATTERN = re.compile(r"step_(\d+)\.pt$")


class UnreadableCheckpoint(UserError):
    """A checkpoint file that is damaged (truncated, not a checkpoint), as opposed to one refused as unsafe."""


def save_checkpoint(state: dict[str, Any], run_dir: Path, step: int, keep: int = 2) -> Path:
    """Write ``state`` as ``run_dir/checkpoints/step_XXXXXXX.pt`` atomically; keep the last ``keep``."""
    path = Path(run_dir) / "checkpoints" / f"step_{step:07d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    for stale in path.parent.glob(".step_*.tmp"):  # left by a process killed while saving
        stale.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [p for p in folder.glob("step_*.pt") if CHECKPOINT_PATTERN.search(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.search(p.name).group(1)))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint safely (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message explains its weights_only default; the line naming the culprit is the useful one
        culprit = next((line.strip() for line in str(e).splitlines() if "nsupported" in line), "")
        raise UserError(
            f"{path}: refused to load: the file holds Python objects that could run code "
            f"(only tensors and plain values are accepted)" + (f" [{culprit[:160]}]" if culprit else "")
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UnreadableCheckpoint(f"{path}: not a readable checkpoint ({e.__class__.__name__}: {str(e)[:120]})") from None


