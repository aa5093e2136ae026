"""Saving and loading: atomic training checkpoints and safetensors weights.

* A training checkpoint (``checkpoints/step_0001000.pt``) holds everything an exact resume
  needs: model, optimizer, scheduler, scaler, step and RNG states. It is written to a
  temporary file, fsynced and renamed, so a kill or a full disk never leaves a torn file
  and never harms the previous checkpoint. It loads with ``torch.load(weights_only=True)``:
  a file that would run code is refused.
* Weights for use (``model.safetensors``) carry their model config, class names and
  colours in the safetensors metadata, so one file is enough to rebuild the model.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import UserError
from .io import atomic_write, write_json
from .models import ModelConfig, model_from_config

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


def save_weights(model: nn.Module, path: str | Path, meta: dict[str, Any], *, sidecar: bool = True) -> None:
    """Write the model's weights as safetensors with the model config and ``meta`` (classes...) in its
    metadata, and (``sidecar``) the same as readable JSON beside it (``model.json``)."""
    model = getattr(model, "module", model)  # unwrap DDP
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"model_config": json.dumps(model.config.to_dict()), **{k: json.dumps(v) for k, v in meta.items()}}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))
    if sidecar:
        write_json(Path(path).with_suffix(".json"), {"model_config": model.config.to_dict(), **meta})


def resolve_weights(path: str | Path) -> Path:
    """A run directory (or a saved-pretrained folder) means its ``model.safetensors`` (or ``best.safetensors``);
    a file is itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "best.safetensors"):
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path}: no model.safetensors or best.safetensors in this run directory")
    if not path.is_file():
        raise UserError(f"{path}: weights not found")
    return path


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the decoded metadata of a safetensors file."""
    path = resolve_weights(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a safetensors weights file ({str(e)[:120]})") from None
    try:
        meta = {k: json.loads(v) for k, v in header.items()}
    except json.JSONDecodeError:
        raise UserError(f"{path}: its metadata is not the JSON aticnet writes") from None
    return tensors, meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from weights written by :func:`save_weights`; returns (model in eval mode, meta)."""
    path = resolve_weights(path)
    tensors, meta = read_weights(path)
    if "model_config" not in meta:
        raise UserError(f"{path}: no model config in its metadata (not written by aticnet?)")
    try:
        config = ModelConfig.from_dict(meta.pop("model_config"))
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: bad model config ({e})") from None
    model = model_from_config(config)
    load_state(model, tensors, str(path))
    return model.to(device).eval(), meta


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with a clear message when the weights are for another model or class count."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    mismatched = [k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape]
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            k = sorted(mismatched)[0]
            details.append(f"{len(mismatched)} shape mismatches (e.g. {k}: {tuple(tensors[k].shape)} vs {tuple(own[k].shape)})")
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise UserError(f"{source}: weights do not fit {name}: {'; '.join(details)}")
    model.load_state_dict(tensors)


def load_matching(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> dict[str, list[str]]:
    """Load every tensor whose name and shape fit ``model``; the rest of the model keeps its fresh init.

    Returns {"loaded", "reinitialised" (the model's tensors the file had nothing for, or another
    shape: the classifiers of another class count), "unexpected" (the file's tensors the model
    lacks)}. When what fits is under a tenth of the model's numbers, these are another network's
    weights (another width, another architecture) and that is an error.
    """
    own = model.state_dict()
    fits = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    share = sum(v.numel() for v in fits.values()) / max(1, sum(v.numel() for v in own.values()))
    if share < 0.1:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise UserError(f"{source}: no tensor of these weights fits {name} beyond {100 * share:.1f}% of its numbers "
                        "(another architecture or width?)")
    model.load_state_dict(fits, strict=False)
    return {
        "loaded": sorted(fits),
        "reinitialised": sorted(k for k in own if k not in fits),
        "unexpected": sorted(k for k in tensors if k not in own),
    }
