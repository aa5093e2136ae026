"""What the benchmark measures: our models and torchvision's peers, each run as a :class:`Variant`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..fast import DTYPES, LabelPredictor, compile_module, optimize_for_inference

DEFAULT_MODELS = ("icnet", "aticnet", "pspnet", "lraspp_mobilenet_v3", "deeplabv3_mobilenet_v3")
DEFAULT_TRAIN_MODELS = ("icnet", "aticnet")
TIMED_REGION = "float32 NCHW image on the device -> forward -> final upsample to HxW -> argmax -> labels"
FLOPS_NOTE = "FlopCounterMode: 2 x multiply-accumulates of convs and matmuls (resizes, pooling, argmax not counted)"


@dataclass(frozen=True)
class Variant:
    """How a model is run: the fast-path options and the precision."""

    channels_last: bool = False
    fold_bn: bool = False
    compile: bool = False
    precision: str = "32"  # "32", "bf16", "16"

    @property
    def name(self) -> str:
        if self.channels_last and self.fold_bn:
            parts = ["fast"]
        else:
            parts = [p for p, on in (("cl", self.channels_last), ("fold", self.fold_bn)) if on] or ["plain"]
        if self.compile:
            parts.append("compile")
        if self.precision != "32":
            parts.append(self.precision)
        return "+".join(parts)


def parse_variant(text: str, precision: str = "32") -> Variant:
    """'plain', 'fast', 'cl', 'fold', 'compile', 'bf16', '16', joined by '+': 'fast+compile+bf16'.

    ``compile`` alone compiles the plain model; ``fast`` = ``cl+fold``. Without a precision
    token the variant takes ``precision``.
    """
    options = {"channels_last": False, "fold_bn": False, "compile": False, "precision": precision}
    for token in text.lower().split("+"):
        token = token.strip()
        if token == "plain":
            continue
        if token == "fast":
            options.update(channels_last=True, fold_bn=True)
        elif token in ("cl", "channels_last"):
            options["channels_last"] = True
        elif token == "fold":
            options["fold_bn"] = True
        elif token == "compile":
            options["compile"] = True
        elif token in ("bf16", "16", "fp16", "32", "fp32"):
            options["precision"] = {"fp16": "16", "fp32": "32"}.get(token, token)
        else:
            raise UserError(f"unknown variant part {token!r} in {text!r}; use plain, fast, cl, fold, compile, bf16, 16")
    return Variant(**options)


def build_benchmark_model(name: str, *, width: float | None = None, num_classes: int = 19, seed: int = 0) -> nn.Module:
    """An eval-mode model with random weights: one of ours (``width`` applies to the ICNet family; PSPNet
    keeps its own 1.0) or a torchvision peer (its own widths, as torchvision builds it)."""
    from ..models import MODEL_NAMES, PEER_NAMES, build_model

    if name not in (*MODEL_NAMES, *PEER_NAMES):
        raise UserError(f"unknown model {name!r}; choose from {', '.join((*MODEL_NAMES, *PEER_NAMES))}")
    torch.manual_seed(seed)
    overrides = {"width": width} if width and name in MODEL_NAMES and name != "pspnet" else {}
    return build_model(name, num_classes=num_classes, **overrides).eval()


def prepare(model: nn.Module, variant: Variant, device: torch.device) -> tuple[nn.Module, Callable[[], Any]]:
    """(labels module, context factory) running ``model`` as ``variant`` says.

    Optimised variants go through :func:`optimize_for_inference` (the dtype becomes the
    weights'); the plain variant in bf16/16 runs under autocast, as ``evaluate`` does.
    """
    model = model.to(device)
    dtype = DTYPES[variant.precision]
    autocast: Callable[[], Any] = contextlib.nullcontext
    if variant.channels_last or variant.fold_bn:
        model = optimize_for_inference(model, channels_last=variant.channels_last, fold_bn=variant.fold_bn, dtype=dtype)
    elif dtype is not None:
        autocast = lambda: torch.autocast(device.type, dtype=dtype)
    predictor: nn.Module = LabelPredictor(model).eval()
    if variant.compile:
        predictor = compile_module(predictor)  # the whole input -> labels, so the final resize and argmax fuse
    return predictor, autocast
