"""The training config: one dataclass, read from YAML, overridden by command-line flags.

Every field has the same name in the YAML file and (with dashes) on the command line:
``crop_size: 720`` in a config is ``--crop-size 720`` on the command line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .models.config import ModelConfig


@dataclass
class TrainConfig:
    # model
    model: str = "aticnet"  # icnet, aticnet, pspnet, icnet_s5x2, icnet_atrous
    width: float | None = None  # channel multiplier; None = the model's default (0.5 ICNet, 1.0 PSPNet)
    model_options: dict[str, Any] = field(default_factory=dict)  # more ModelConfig fields, e.g. rates
    # data
    dataset: str = "synthetic"  # cityscapes, camvid, folder, synthetic
    data_root: str = "data/synthetic"  # the data set's top folder
    train_split: str = "train"
    val_split: str = "val"
    crop_size: int = 720  # square training crop (the paper: 720)
    scale_range: tuple[float, float] = (0.5, 2.0)  # random rescale before cropping
    batch_size: int = 10  # images per step over all processes (the paper: 10, then 16)
    workers: int = 4  # data-loading processes per training process
    # optimisation (the paper's recipe by default)
    max_steps: int = 5000  # iterations; the schedule is iteration-based
    optimizer: str = "sgd"  # sgd (the paper) or adamw
    lr: float = 0.001  # base learning rate
    momentum: float = 0.9  # SGD momentum (AdamW: beta1)
    weight_decay: float = 1e-4
    poly_power: float = 0.9  # lr = base * (1 - step / max_steps) ** power
    warmup_steps: int = 0  # linear warm-up before the poly decay
    aux_weights: tuple[float, ...] | None = None  # None = the model's (ICNet 0.4, 0.4)
    class_weights: str = "none"  # none, or inverse_log: 1 / ln(1.02 + frequency) (ENet's weighting)
    grad_clip: float | None = None  # clip the gradient norm to this value
    precision: str = "32"  # 32, bf16 or 16 (16 only on CUDA)
    # evaluation and logging
    eval_every: int = 1000  # steps between validation runs (0: only at the end)
    eval_max_images: int | None = None  # evaluate on the first N val images only
    eval_flip: bool = False  # average with the flipped image's prediction
    save_every: int = 1000  # steps between checkpoints
    keep_checkpoints: int = 2  # how many recent checkpoints to keep
    log_every: int = 20  # steps between rows of metrics.jsonl
    # run
    out: str = "runs/train"  # the run directory
    resume: str | None = None  # "auto" (latest in out) or a checkpoint file
    init: str | None = None  # warm-start weights (.safetensors or a run directory)
    seed: int = 0
    device: str = "auto"  # auto, cpu or cuda
    sync_bn: bool = True  # synchronised BatchNorm across processes (CUDA only)
    strict: bool = False  # stop at an unreadable sample instead of skipping it
    skip_nonfinite: bool = False  # skip a batch whose loss is not finite instead of stopping

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        choices = {
            "optimizer": ("sgd", "adamw"),
            "precision": ("32", "bf16", "16"),
            "device": ("auto", "cpu", "cuda"),
            "class_weights": ("none", "inverse_log"),
        }
        for name, allowed in choices.items():
            if str(getattr(self, name)) not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        self.precision = str(self.precision)
        for name in ("batch_size", "max_steps", "crop_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, not {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _check_type(name: str, value: Any, hint: Any, source: str) -> Any:
    """Coerce YAML scalars to the field's type; a wrong type is an error naming the field."""
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise UserError(f"{source}: {name} cannot be empty")
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else hint
    origin = typing.get_origin(base) or base
    try:
        if origin is tuple:
            if not isinstance(value, (list, tuple)):
                raise TypeError
            item = typing.get_args(base)[0]
            return tuple(item(v) for v in value)
        if origin is dict:
            if not isinstance(value, dict):
                raise TypeError
            return value
        if origin is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    except (TypeError, ValueError):
        pass
    raise UserError(f"{source}: {name} must be {getattr(base, '__name__', base)}, not {value!r}")


def _check_model_options(options: dict[str, Any], source: str) -> dict[str, Any]:
    """``model_options`` entries are ModelConfig fields, checked like the config's own fields."""
    hints = typing.get_type_hints(ModelConfig)
    for key in options:
        if key not in hints or key in ("name", "num_classes"):
            allowed = ", ".join(k for k in hints if k not in ("name", "num_classes"))
            raise UserError(f"{source}: model_options: unknown field {key!r}; fields are {allowed}")
    return {key: _check_type(f"model_options.{key}", value, hints[key], source) for key, value in options.items()}


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The defaults, updated by the YAML file at ``path``, then by ``overrides`` (flags)."""
    values: dict[str, Any] = {}
    hints = _field_types()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: a config is a mapping of field: value")
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in hints:
                raise UserError(f"{path}: unknown field {key!r}; fields are {', '.join(hints)}")
            values[name] = _check_type(name, value, hints[name], str(path))
            if name == "model_options":
                values[name] = _check_model_options(values[name], str(path))
    for name, value in overrides.items():
        if name not in hints:
            raise UserError(f"unknown option {name!r}")
        if value is not None:
            values[name] = _check_type(name, value, hints[name], "command line")
    return TrainConfig(**values)


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
