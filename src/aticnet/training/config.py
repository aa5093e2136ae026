"""The training config: one dataclass, read from YAML, overridden by command-line flags.

Every field has the same name in the YAML file and (with dashes) on the command line:
``crop_size: 720`` in a config is ``--crop-size 720`` on the command line. Each field's
help text lives in its metadata and becomes the flag's ``--help``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.cache import CACHE_MODES
from ..models.config import ModelConfig
from ..utils.errors import UserError
from .losses import AUX_WEIGHTS


def option(default: Any, help: str) -> Any:
    """A config field with its help text (mutable defaults are copied per instance)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every choice of a training run: one field each, with its help text. Each field is a YAML key of a config
    file and a flag of ``aticnet train`` (``crop_size`` is ``--crop-size``);
    [`aticnet.load_config`][aticnet.load_config] reads one."""

    # model
    model: str = option("aticnet", "icnet, aticnet, pspnet, icnet_s5x2, icnet_atrous, or torchvision's "
                                   "lraspp_mobilenet_v3, deeplabv3_mobilenet_v3")
    width: float | None = option(None, "channel multiplier; empty = the model's own (0.5 ICNet, 1.0 PSPNet)")
    model_options: dict[str, Any] = option({}, "more ModelConfig fields, e.g. '{rates: [12, 8, 4, 2], dropout: 0.1}'")
    # data
    dataset: str = option("synthetic", "cityscapes, camvid, folder, synthetic")
    data_root: str = option("data/synthetic", "the data set's top folder")
    train_split: str = option("train", "split to train on; several joined by '+', e.g. train+val")
    val_split: str = option("val", "split to validate on ('' for none); ignored with holdout_drive")
    holdout_drive: str | None = option(None, "leave this drive (CamVid file prefix, Cityscapes city) out of training "
                                             "and validate on its frames instead")
    crop_size: int | tuple[int, int] = option(720, "training crop: one number (square) or height width")
    scale_range: tuple[float, float] = option((0.5, 2.0), "random rescale before cropping")
    color_jitter: tuple[float, float, float, float] | None = option(
        None, "photometric augmentation: brightness contrast saturation hue (torchvision ColorJitter); empty = off")
    augment_on: str = option("auto", "where the colour jitter, random rescale, crop and flip run: cpu (the loader's "
                                     "processes), device (the GPU; the loader only decodes), or auto: the GPU when "
                                     "training on one with frames of one size (always with cache device)")
    batch_size: int = option(10, "images per step over all processes (the paper: 10, then 16)")
    workers: int = option(4, "data-loading processes per training process")
    cache: str = option("none", "none: decode every sample's files at every step; memory: decode the training set "
                                "once into a memory-mapped file that every loader process shares (the same batches); "
                                "device: keep the decoded frames on the training device and augment them there, "
                                "no loader processes")
    cache_dir: str | None = option(None, "where --cache keeps decoded frames; empty = $ATICNET_CACHE_DIR or "
                                         "~/.cache/aticnet/frames")
    # optimisation (the paper's recipe by default)
    max_steps: int = option(5000, "iterations; the schedule is iteration-based")
    optimizer: str = option("sgd", "sgd (the paper) or adamw")
    lr: float = option(0.001, "base learning rate")
    momentum: float = option(0.9, "SGD momentum (AdamW: beta1)")
    weight_decay: float = option(1e-4, "weight decay")
    weight_decay_scope: str = option("weights", "weights: conv and linear weights only (Caffe, the TF port); "
                                                "all: every parameter, BN and biases too")
    poly_power: float = option(0.9, "lr = base * (1 - step / max_steps) ** power")
    warmup_steps: int = option(0, "linear warm-up before the poly decay")
    aux_weights: tuple[float, ...] | str | None = option(
        None, f"aux loss weights, coarsest first, or a preset ({', '.join(AUX_WEIGHTS)}); empty = the model's")
    class_weights: str = option("none", "none, or inverse_log: 1 / ln(1.02 + frequency) (ENet's weighting)")
    loss: str = option("ce", "ce, or ohem: only the hard pixels (probability of the true class below "
                             "ohem_threshold, at least ohem_min_kept of them)")
    ohem_threshold: float = option(0.7, "ohem: pixels above this probability of their class are easy")
    ohem_min_kept: int = option(10000, "ohem: at least this many pixels per output and batch")
    ema_decay: float | None = option(None, "keep an exponential moving average of the weights with this decay, "
                                           "validated and saved instead of the raw weights; empty = off")
    grad_clip: float | None = option(None, "clip the gradient norm to this value")
    precision: str = option("32", "32, bf16 or 16 (16 only on CUDA)")
    compile: bool = option(False, "torch.compile the model (Inductor); when it cannot compile, training goes on "
                                  "without it and the log says why")
    # evaluation and logging
    eval_every: int = option(1000, "steps between validation runs (0: only at the end)")
    eval_max_images: int | None = option(None, "evaluate on the first N val images only")
    eval_flip: bool = option(False, "average with the flipped image's prediction")
    eval_scale: float = option(1.0, "validate with the network on each frame resized by this factor (a model trained "
                                    "on upsampled crops runs on upsampled frames)")
    save_every: int = option(1000, "steps between checkpoints")
    keep_checkpoints: int = option(2, "how many recent checkpoints to keep")
    log_every: int = option(20, "steps between rows of metrics.jsonl")
    # run
    out: str = option("runs/train", "the run directory")
    resume: str | None = option(None, "'auto' (latest in out) or a checkpoint file")
    init: str | None = option(None, "start from these weights (a run, .safetensors or a saved-pretrained folder); "
                                    "tensors that do not fit (another class count) start fresh")
    freeze_trunk: bool = option(False, "with init: train only what follows the trunk")
    seed: int = option(0, "seed of the weights, the data order and the augmentation")
    deterministic: bool = option(False, "deterministic algorithms only (PyTorch's and cuDNN's; slower on a GPU); "
                                        "without it cuDNN picks the fastest for each shape")
    device: str = option("auto", "auto, cpu or cuda")
    sync_bn: bool = option(True, "synchronised BatchNorm across processes (CUDA only)")
    strict: bool = option(False, "stop at an unreadable sample instead of skipping it")
    skip_nonfinite: bool = option(False, "skip a batch whose loss is not finite instead of stopping")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self.precision = str(self.precision)
        choices = {
            "optimizer": ("sgd", "adamw"),
            "precision": ("32", "bf16", "16"),
            "device": ("auto", "cpu", "cuda"),
            "class_weights": ("none", "inverse_log"),
            "loss": ("ce", "ohem"),
            "weight_decay_scope": ("weights", "all"),
            "augment_on": ("auto", "cpu", "device"),
            "cache": CACHE_MODES,
        }
        for name, allowed in choices.items():
            if str(getattr(self, name)) not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if isinstance(self.aux_weights, str) and self.aux_weights not in AUX_WEIGHTS:
            raise UserError(f"aux_weights: unknown preset {self.aux_weights!r}; presets are {', '.join(AUX_WEIGHTS)}")
        for name in ("batch_size", "max_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, not {getattr(self, name)}")
        if min(self.crop_hw) < 1:
            raise UserError(f"crop_size must be positive, not {self.crop_size}")
        if self.eval_scale <= 0:
            raise UserError(f"eval_scale must be positive, not {self.eval_scale}")
        if self.cache == "device" and self.augment_on == "cpu":
            raise UserError("cache device augments on the device: drop augment_on cpu, or use cache memory")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise UserError(f"ema_decay must be between 0 and 1, not {self.ema_decay}")

    @property
    def crop_hw(self) -> tuple[int, int]:
        """The crop as (height, width)."""
        return (self.crop_size, self.crop_size) if isinstance(self.crop_size, int) else tuple(self.crop_size)

    @property
    def resolved_aux_weights(self) -> tuple[float, ...] | None:
        """``aux_weights`` with a preset name replaced by its values (None: the model's own)."""
        return AUX_WEIGHTS[self.aux_weights] if isinstance(self.aux_weights, str) else self.aux_weights

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def field_help() -> dict[str, str]:
    """Field name -> its help text."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}


def union_members(hint: Any) -> list[Any]:
    """The types a field accepts besides None: ``int | tuple[int, int] | None`` -> [int, tuple[int, int]]."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint``, or TypeError/ValueError."""
    origin = typing.get_origin(hint) or hint
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(args) != len(value):
            raise ValueError
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if origin is dict and isinstance(value, dict):
        return value
    if origin is bool and isinstance(value, bool):
        return value
    if isinstance(value, bool):
        raise TypeError
    if origin is float and isinstance(value, (int, float)):
        return float(value)
    if origin is int and isinstance(value, int):
        return value
    if origin is str and isinstance(value, (str, int, float)):
        return str(value)
    raise TypeError


def _check_type(name: str, value: Any, hint: Any, source: str) -> Any:
    """Coerce a YAML or flag value to the field's type; a wrong type is an error naming the field."""
    members = union_members(hint)
    if value is None:
        if len(members) < len(typing.get_args(hint)):  # None is one of the accepted types
            return None
        raise UserError(f"{source}: {name} cannot be empty")
    candidates = [value]
    if isinstance(value, (list, tuple)) and len(value) == 1:  # a flag's one word: "--crop-size 320"
        candidates.append(value[0])
    for candidate in candidates:
        for member in members:
            try:
                return _coerce(candidate, member)
            except (TypeError, ValueError):
                continue
    names = " or ".join(getattr(m, "__name__", str(m)) for m in members)
    raise UserError(f"{source}: {name} must be {names}, not {value!r}")


def _check_model_options(options: dict[str, Any], source: str) -> dict[str, Any]:
    """``model_options`` entries are ModelConfig fields, checked like the config's own fields."""
    hints = typing.get_type_hints(ModelConfig)
    for key in options:
        if key not in hints or key in ("name", "num_classes"):
            allowed = ", ".join(k for k in hints if k not in ("name", "num_classes"))
            raise UserError(f"{source}: model_options: unknown field {key!r}; fields are {allowed}")
    return {key: _check_type(f"model_options.{key}", value, hints[key], source) for key, value in options.items()}


def read_yaml_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a config file, with its ``base:`` (another config, relative to this file) resolved first:
    the file's own keys override the base's, and ``model_options`` merge key by key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    if path.resolve() in _seen:
        raise UserError(f"{path}: its base: chain comes back to itself ({' -> '.join(p.name for p in _seen)})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config is a mapping of field: value")
    base = data.pop("base", None)
    if base is None:
        return data
    merged = read_yaml_config(path.parent / str(base), (*_seen, path.resolve()))
    options = {**(merged.get("model_options") or {}), **(data.get("model_options") or {})}
    merged.update(data)
    if options:
        merged["model_options"] = options
    return merged


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """A training config: the defaults, updated by a YAML file, then by overrides.

    Examples:
        >>> import aticnet
        >>> config = aticnet.load_config("my_recipe.yaml", max_steps=100, out="runs/short")
        >>> summary = aticnet.train(config)

    Args:
        path: a YAML file of TrainConfig fields; a ``base:`` key names another file (relative to this one) whose
            keys this file's override.
        **overrides: field values (as flags give them); None means not given.

    Returns:
        The [`TrainConfig`][aticnet.TrainConfig].

    Raises:
        UserError: a wrong field or type, naming the file (or the override) and the field.
    """
    values: dict[str, Any] = {}
    hints = typing.get_type_hints(TrainConfig)
    if path is not None:
        for key, value in read_yaml_config(path).items():
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
            if name == "model_options":
                values[name] = _check_model_options(values[name], "command line")
    return TrainConfig(**values)


def save_config(config: TrainConfig, path: str | Path) -> None:
    from ..utils.io import write_text

    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
