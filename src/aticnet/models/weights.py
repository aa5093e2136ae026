"""The weights file format: safetensors with the model config, class names and colours in its metadata,
so one file is enough to rebuild the model (``model.safetensors``, ``best.safetensors`` of a run, a Hub folder's
``model.safetensors``). Written atomically; a JSON copy of the metadata lies beside it (``model.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..utils.errors import UserError
from ..utils.io import atomic_write, write_json
from . import ModelConfig, model_from_config


def save_weights(model: nn.Module, path: str | Path, meta: dict[str, Any], *, sidecar: bool = True,
                 dtype: torch.dtype | None = None) -> None:
    """Write the model's weights as safetensors with the model config and ``meta`` (classes...) in its
    metadata, and (``sidecar``) the same as readable JSON beside it (``model.json``). ``dtype`` (e.g.
    ``torch.float16``) stores the floating-point tensors in that type; they load as float32."""
    model = getattr(model, "module", model)  # unwrap DDP
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    header = {"model_config": json.dumps(model.config.to_dict()), **{k: json.dumps(v) for k, v in meta.items()}}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))
    if sidecar:
        write_json(Path(path).with_suffix(".json"), {"model_config": model.config.to_dict(), **meta})


def resolve_weights(path: str | Path) -> Path:
    """The safetensors file that ``path`` names: a file is itself; a run directory or a saved-pretrained folder
    means its ``model.safetensors`` (or ``best.safetensors``); a shipped name (``aticnet-camvid``,
    ``aticnet.models.pretrained``) means that model's file. A path that exists wins over a name."""
    from .pretrained import get_weights, is_weights_name

    path = Path(path)
    if not path.exists() and is_weights_name(str(path)):
        path = get_weights(str(path)).folder
    if path.is_dir():
        for name in ("model.safetensors", "best.safetensors"):
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path}: no model.safetensors or best.safetensors in this run directory")
    if not path.is_file():
        looks_like_name = len(path.parts) == 1 and not path.suffix
        if looks_like_name:
            from .pretrained import weight_names

            known = ", ".join(weight_names()) or "none in this installation"
            raise UserError(f"{path}: weights not found (no such file or folder, and no shipped weights of that "
                            f"name; shipped: {known})")
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
    # weights stored in half precision (the shipped ones) compute in float32
    tensors = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in tensors.items()}
    return tensors, meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from weights written by ``save_weights``; returns (model in eval mode, meta)."""
    path = resolve_weights(path)
    tensors, meta = read_weights(path)
    if "model_config" not in meta:
        raise UserError(f"{path}: no model config in its metadata (not written by aticnet?)")
    try:
        config = ModelConfig.from_dict(meta.pop("model_config"))
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: bad model config ({e})") from None
    model = model_for_tensors(config, tensors, str(path))
    return model.to(device).eval(), meta


def model_for_tensors(config: ModelConfig, tensors: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The model of ``config`` holding ``tensors``, checked to fit before any of its memory is allocated.

    The model is built first on PyTorch's meta device (shapes, no memory), so a config that does not fit its
    file (a 1 kB file whose config asks for 1,000 classes) is refused before allocating anything.

    Args:
        config: the model config read from the file.
        tensors: the file's tensors (name -> tensor).
        source: the file, named in errors.

    Returns:
        The model (CPU, training mode) with ``tensors`` loaded.

    Raises:
        UserError: the tensors do not fit the config's model.
    """
    with torch.device("meta"):
        check_fit(model_from_config(config), tensors, source)
    model = model_from_config(config)
    load_state(model, tensors, source)
    return model


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with a clear message when the weights are for another model or class count."""
    check_fit(model, tensors, source)
    model.load_state_dict(tensors)


def check_fit(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise a `UserError` naming the first mismatches when ``tensors`` are not exactly ``model``'s state."""
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
