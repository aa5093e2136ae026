"""One training step that never waits for the device: forward pass and loss, update, and what the metrics add up.

A step queues its work and moves on. Whether the loss was finite on every process is a flag on the device,
reduced over the processes there, and the optimiser skips the update on the device when it is not: torch's fused
SGD and AdamW take that flag (``found_inf``, as mixed precision's loss scaler uses them), and the moving average
takes it too. The loss and the flags add up on the device in [`LogWindow`][aticnet.training.step.LogWindow],
read back only when a metrics row is written or a checkpoint is due, which is where a non-finite loss stops the
run (naming the step it happened at) unless ``skip_nonfinite``. What the processes must agree on from the host,
a stop signal or a batch with nothing readable, is reduced on the CPU (a Gloo group beside NCCL), which waits for
no GPU. With an optimiser torch cannot fuse for the device, the step reads the flag back: one wait per step.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, NamedTuple

import torch
from torch import nn

from ..evaluation.evaluate import autocast
from ..utils.distributed import all_reduce, all_reduce_sum, host_all_reduce
from .config import TrainConfig
from .losses import CascadeLoss
from .state import TrainState

log = logging.getLogger(__name__)


class Compiled:
    """``torch.compile(net)``, called like ``net``. Compilation happens at the first call; when it fails there, the
    warning says why and every call runs ``net`` itself (a model error then surfaces from the plain module)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.compiled: Any = torch.compile(net)

    def __call__(self, images: torch.Tensor) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(images)
            except Exception as e:  # noqa: BLE001 - whatever stops Dynamo or Inductor, the plain module still runs
                reason = (str(e).strip().splitlines() or [""])[0][:300]
                log.warning("torch.compile could not compile the model (%s: %s); training goes on without it",
                            type(e).__name__, reason)
                self.compiled = None
        return self.net(images)

    def train(self, mode: bool = True) -> Compiled:
        self.net.train(mode)
        return self

    def parameters(self):
        return self.net.parameters()


def forward_loss(net: nn.Module | Compiled, criterion: CascadeLoss, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The cascade loss of N x 3 x H x W images against N x H x W labels (scalar tensor, and its parts)."""
    net.train()
    with autocast(images.device, config.precision):
        outputs = net(images)
    return criterion(outputs, labels)


def finite_everywhere(loss: torch.Tensor) -> torch.Tensor:
    """A 0-d bool on the loss's device: the loss is finite on every process (reduced on the device: no wait)."""
    nonfinite = (~torch.isfinite(loss.detach())).to(torch.float32).reshape(1)
    return all_reduce(nonfinite, "max")[0] == 0


class HostVerdict(NamedTuple):
    """What every process agrees on from the host after a step is queued."""

    stop: bool  # some process was asked to stop (SIGINT, SIGTERM): all stop after this step
    next_empty: bool  # some process has nothing readable in the next batch: all skip it


def agree_on_host(*, stop: bool = False, next_empty: bool = False) -> HostVerdict:
    """One reduction of host flags over the processes, on the CPU (a no-op in one process)."""
    flags = host_all_reduce(torch.tensor([float(stop), float(next_empty)]), "max")
    stop_any, empty_any = flags.tolist()
    return HostVerdict(bool(stop_any), bool(empty_any))


def apply_update(net: nn.Module | Compiled, state: TrainState, loss: torch.Tensor, finite: torch.Tensor,
                 config: TrainConfig) -> None:
    """Backward and optimiser step, skipped when ``finite`` (0-d bool on the device) is False: the weights, the
    optimiser's state and the moving average stay as they were. The schedule moves on either way."""
    state.optimizer.zero_grad(set_to_none=True)
    if not state.skips_on_device and not bool(finite):  # an optimiser that cannot skip on the device: one wait
        state.scheduler.step()
        return
    state.scaler.scale(loss).backward()
    if config.grad_clip:
        state.scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
    # the loss scaler (precision 16) sets found_inf itself from the gradients, which a non-finite loss makes so
    manual_flag = state.skips_on_device and not state.scaler.is_enabled()
    if manual_flag:
        state.optimizer.found_inf = (~finite).to(torch.float32)
    try:
        state.scaler.step(state.optimizer)
    finally:
        if manual_flag:
            del state.optimizer.found_inf
    state.scaler.update()
    if state.ema is not None:
        state.ema.update(state.model, finite)
    state.scheduler.step()


def train_step(net: nn.Module | Compiled, criterion: CascadeLoss, state: TrainState, images: torch.Tensor,
               labels: torch.Tensor, config: TrainConfig) -> dict[str, Any]:
    """One optimisation step on N x 3 x H x W images and N x H x W labels, with nothing read back.

    Returns:
        ``loss`` (0-d tensor), ``parts`` (its terms) and ``finite`` (0-d bool: the update was made), all on the
        device.
    """
    loss, parts = forward_loss(net, criterion, images, labels, config)
    finite = finite_everywhere(loss)
    apply_update(net, state, loss, finite, config)
    return {"loss": loss.detach(), "parts": parts, "finite": finite}


class LogWindow:
    """The training row of metrics.jsonl over the steps since the last one: mean loss, images/s, skips.

    The losses and flags add up on the device and are read back once, when the row is written (or a
    checkpoint is due: ``first_nonfinite``)."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss of finite steps; finite; non-finite
        # (step, this process's loss) of the first step whose loss was not finite on some process; step -1: none
        self.first_bad = torch.full((2,), -1.0, dtype=torch.float64, device=device)
        self.images = 0  # this process's images
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, finite: torch.Tensor, images: int, step: int) -> None:
        """Count one step of ``images`` images on this process (``finite``: 0-d bool of every process's loss)."""
        loss = loss.detach().to(torch.float64)
        ok = finite.to(torch.float64)
        self.sums += torch.stack([torch.where(finite, loss, 0.0), ok, 1 - ok])
        here = torch.stack([torch.full_like(loss, step), loss])
        self.first_bad = torch.where((self.first_bad[0] < 0) & ~finite, here, self.first_bad)
        self.images += images

    def first_nonfinite(self) -> tuple[int, float] | None:
        """(step, this process's loss there) of the window's first non-finite step, or None (reads the device)."""
        step, loss = self.first_bad.tolist()
        return None if step < 0 else (int(step), loss)

    def row(self, step: int, lr: float, parts: dict[str, torch.Tensor], skipped: int) -> dict[str, Any]:
        """The row, summed over every process (call on all of them): ``images`` and ``images_per_s`` count every
        process's images once; ``loss`` is the mean over the processes' finite steps."""
        loss_sum, finite_steps, nonfinite = self.sums.tolist()
        seconds = max(time.perf_counter() - self.start, 1e-9)
        totals = all_reduce_sum(torch.tensor([loss_sum, finite_steps, skipped, self.images], dtype=torch.float64))
        loss_total, steps_total, skipped_total, images_total = totals.tolist()
        return {
            "kind": "train",
            "step": step,
            "loss": loss_total / steps_total if steps_total else math.nan,  # every step of the row skipped: null
            "lr": lr,
            "images": int(images_total),
            "images_per_s": images_total / seconds,
            "skipped": int(skipped_total),
            "nonfinite": int(nonfinite),  # agreed: the same on every process
            **{f"loss_{k}": float(v) for k, v in parts.items()},
        }
