"""Everything that changes as training runs, saved and restored as one object: an exact resume.

``TrainState`` holds the model, optimiser, schedule, loss scaler, the moving average of the
weights, the step, the best score and (in a checkpoint) every process's random-number state.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from ..models.weights import load_state
from ..utils.distributed import all_gather_objects
from ..utils.errors import UserError
from .config import TrainConfig
from .recipe import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


class MovingAverage:
    """An exponential moving average of a model's parameters and buffers (the weights to validate and save).

    ``update`` after each optimiser step: the first copies the model, later ones move each floating-point
    tensor by ``1 - decay`` towards the model's (``torch._foreach_lerp_``, as ``torch.optim.swa_utils``'s EMA
    does) and copy the integer ones (BatchNorm's step counter). It counts its updates in Python, so no step
    waits for the device.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module, finite: torch.Tensor | None = None) -> None:
        """Move the average towards ``model``; ``finite`` (a 0-d bool on the device) False leaves it as it was,
        decided on the device (the step's loss was not finite and its update was skipped)."""
        own = list(self.module.state_dict().values())
        new = list(model.state_dict().values())
        if self.updates == 0:
            torch._foreach_copy_(own, new)
        else:
            averages = [a for a in own if a.is_floating_point()]
            current = [b for a, b in zip(own, new) if a.is_floating_point()]
            if averages and finite is None:
                torch._foreach_lerp_(averages, current, 1 - self.decay)
            elif averages:  # a += (1 - decay) * finite * (b - a), the weight a tensor on the device (no read-back)
                steps = torch._foreach_sub(current, averages)
                torch._foreach_mul_(steps, finite.to(torch.float32) * (1 - self.decay))
                torch._foreach_add_(averages, steps)
            for a, b in zip(own, new):
                if not a.is_floating_point():
                    a.copy_(b if finite is None else torch.where(finite, b, a))
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "n_averaged" in state:  # torch.optim.swa_utils.AveragedModel's layout: module.* and n_averaged
            self.module.load_state_dict({k.removeprefix("module."): v for k, v in state.items() if k != "n_averaged"})
            self.updates = int(state["n_averaged"])
            return
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def rng_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    """This process's generators: the CPU's and, when training on CUDA, its GPU's."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


class TrainState:
    """Everything that changes as training runs, saved and restored as one object: an exact resume."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        self.model = model
        self.config = config
        self.optimizer = build_optimizer(model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(next(model.parameters()).device.type, enabled=config.precision == "16")
        self.ema = MovingAverage(model, config.ema_decay) if config.ema_decay else None
        self.step, self.best_miou = 0, -1.0

    @property
    def eval_model(self) -> nn.Module:
        """The weights to validate and save: the moving average when one is kept."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def skips_on_device(self) -> bool:
        """Whether the optimiser can skip a step on the device (torch's fused ones take a ``found_inf`` flag), so
        that no step need wait for it."""
        return bool(getattr(self.optimizer, "_step_supports_amp_scaling", False))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's content. Call it on every process: it gathers each one's random-number state."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best_miou": self.best_miou,
            "rng": all_gather_objects(rng_state(self.device)),  # one entry per process, in rank order
            "model_config": self.model.config.to_dict(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], source: str, rank: int = 0) -> None:
        load_state(self.model, state["model"], source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.load_scaler(state.get("scaler") or {}, source)
        if self.ema is not None:
            if "ema" not in state:
                raise UserError(f"{source}: this checkpoint has no moving average; resume without --ema-decay")
            self.ema.load_state_dict(state["ema"])
        self.step, self.best_miou = int(state["step"]), float(state["best_miou"])
        self.load_rng(state, source, rank)

    def load_scaler(self, saved: dict[str, Any], source: str) -> None:
        """The loss scale of fp16 training; a run saved in another precision has none to give."""
        if not self.scaler.is_enabled():
            return
        if saved:
            self.scaler.load_state_dict(saved)
        else:
            log.warning("%s: saved without loss scaling (precision 32 or bf16); --precision 16 starts a fresh loss "
                        "scale", source)

    def load_rng(self, state: dict[str, Any], source: str, rank: int) -> None:
        """Restore this process's generators from the checkpoint (every process's state is in it)."""
        saved = state.get("rng") or [{"cpu": state.get("rng_cpu"), "cuda": state.get("rng_cuda")}]
        if rank >= len(saved) or saved[rank].get("cpu") is None:
            log.warning("%s: no random-number state for process %d (saved by %d); it starts from the seed, so the "
                        "run does not repeat an unbroken one exactly", source, rank, len(saved))
            return
        torch.set_rng_state(saved[rank]["cpu"])
        if saved[rank].get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(saved[rank]["cuda"], self.device)
