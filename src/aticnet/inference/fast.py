"""Fast inference: the same network, rearranged to run faster on the same hardware.

``optimize_for_inference`` applies, on a copy of the model:

* **Conv-BN folding** (``fold_bn``): every BatchNorm2d that directly follows a Conv2d in an
  ``nn.Sequential`` (our ``ConvBN``, torchvision's ``Conv2dNormActivation``, DeepLab's and
  LRASPP's heads) is folded into the conv's weight and bias
  (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replaced by ``nn.Identity`` (so module
  indices such as ``block.expand[1]`` stay valid). Exact in real arithmetic; in float32 the
  logits move by a few ulps (see ``tests/inference/test_fast.py``).
* **channels_last** (``channels_last``): weights and the input in NHWC. oneDNN's (CPU) and
  cuDNN's convolutions run natively in NHWC; NCHW tensors get reordered around each conv.
  NHWC logits also make the final ``argmax`` over channels a contiguous reduction (on
  NCHW logits at 1024x2048 the argmax alone costs ~0.2 s on 2 CPU cores).
* **dtype** (``dtype=torch.bfloat16`` or ``torch.float16``): weights and input in that dtype.
  Not the same labels as float32 (about 98% of pixels agree on a randomly initialised
  model, whose logits are nearly tied; more on a trained one), so never a silent default.
* **torch.compile** (``compile``): Inductor with ``freezing`` (constant-folds the weights
  and pre-packs them for oneDNN on the CPU). The first call compiles (tens of seconds on
  2 cores); callers that time must warm up first.

Inference itself should run under ``torch.inference_mode()``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

DTYPES = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def fold_conv_bn(model: nn.Module) -> int:
    """Fold, in place, each ``Conv2d -> BatchNorm2d`` pair adjacent in an ``nn.Sequential``.

    The model must be in eval mode (folding uses the running statistics). Returns how many
    pairs were folded. BatchNorms that follow something else are left alone.
    """
    if model.training:
        raise ValueError("fold_conv_bn needs a model in eval mode (it folds the running statistics)")
    folded = 0
    for seq in list(model.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if (
                type(conv) is nn.Conv2d
                and type(bn) is nn.BatchNorm2d
                and bn.track_running_stats
                and bn.running_mean is not None
                and conv.out_channels == bn.num_features
            ):
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = nn.Identity()
                folded += 1
    return folded


def _cast_input(dtype: torch.dtype | None, channels_last: bool):
    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x, *rest = args
        if dtype is not None and x.is_floating_point() and x.dtype != dtype:
            x = x.to(dtype)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return (x, *rest)

    return hook


def optimize_for_inference(
    model: nn.Module,
    *,
    channels_last: bool = True,
    fold_bn: bool = True,
    compile: bool = False,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """An eval-mode copy of ``model`` that computes the same function faster on the same hardware.

    BatchNorms are folded into the convolutions before them (exact in real arithmetic; in float32 the logits move
    by a few ulps), weights and activations go channels-last (NHWC, native to oneDNN and cuDNN), and optionally to
    a lower precision or through ``torch.compile``. [`aticnet.load`][aticnet.load] applies it with ``fast=True``.
    The copy takes the same input as the original (a float32 NCHW image batch): a forward pre-hook converts it to
    ``dtype`` and channels-last. With ``compile`` the result is a ``torch.compile`` wrapper (attributes such as
    ``config`` still reach the model); its first call compiles.

    Args:
        model: the model (left as it is).
        channels_last: weights and input in NHWC.
        fold_bn: fold BatchNorms into the preceding convs.
        compile: ``torch.compile`` with Inductor freezing (CUDA graphs on a GPU).
        dtype: weights and input in this type (``torch.bfloat16``, ``torch.float16``; None: float32). Not the same
            labels as float32, so never a default.

    Returns:
        The copy, mapping N x 3 x H x W images to the model's output (in ``dtype``).
    """
    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    if fold_bn:
        fold_conv_bn(fast)
    if dtype is not None:
        fast = fast.to(dtype)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    if dtype is not None or channels_last:
        fast.register_forward_pre_hook(_cast_input(dtype, channels_last))
    if compile:
        fast = compile_module(fast)
    return fast


class FrozenCompiled(nn.Module):
    """``torch.compile(module)`` whose calls (so its compilation, on the first) run with Inductor's
    ``freezing`` on: weights become constants, Conv-BN folds and oneDNN weights are pre-packed.

    (``torch.compile(options={"freezing": True})`` does not reach the freezing pass in torch 2.14,
    measured: the compiled ICNet ran 1.9x slower than with the config patched; freezing only
    applies where autograd is off, i.e. under ``inference_mode``/``no_grad``.)
    Attributes the wrapper lacks (``config``, ``aux_keys``) come from the wrapped module.
    """

    def __init__(self, module: nn.Module, mode: str | None = None) -> None:
        super().__init__()
        self.compiled = torch.compile(module, dynamic=False, mode=mode)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        from torch._inductor import config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["compiled"]._orig_mod, name)


def compile_module(module: nn.Module) -> nn.Module:
    """``torch.compile`` for inference: static shapes, Inductor freezing (see ``FrozenCompiled``); on a GPU
    also CUDA graphs (``mode="reduce-overhead"``): a batch-1 pass of small kernels is launched as one graph."""
    param = next(module.parameters(), None)
    on_gpu = param is not None and param.device.type == "cuda"
    return FrozenCompiled(module, mode="reduce-overhead" if on_gpu else None)


def logits_of(output: Tensor | dict[str, Tensor]) -> Tensor:
    """The logits of a model's eval output: ours return a tensor, torchvision's ``{"out": ...}``."""
    return output["out"] if isinstance(output, dict) else output


class LabelPredictor(nn.Module):
    """image batch -> N x H x W labels: the model, then argmax over classes.

    One module, so ``torch.compile`` can fuse the final upsampling with the argmax.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return logits_of(self.model(image)).argmax(1)


__all__ = [
    "DTYPES",
    "FrozenCompiled",
    "LabelPredictor",
    "compile_module",
    "fold_conv_bn",
    "logits_of",
    "optimize_for_inference",
]
