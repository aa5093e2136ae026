"""Training: the paper's recipe (SGD, poly LR, cascade loss), iteration-based, exactly resumable.

``train`` reads top to bottom: the run (process group, data, run directory), the model and
loss, the :class:`TrainState` (everything a resume restores), then ``train_step`` until
``max_steps``, with a metrics row every ``log_every`` steps, :func:`validate_and_keep_best`
every ``eval_every`` and a checkpoint every ``save_every``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .checkpoint import UnreadableCheckpoint, list_checkpoints, load_checkpoint, load_state, save_checkpoint, save_weights
from .config import TrainConfig, save_config
from .data import SegmentationDataset
from .data.loader import TrainStream, eval_loader, train_loader
from .distributed import DistInfo, all_reduce_sum, init_distributed, pick_device
from .errors import UserError
from .evaluate import autocast, evaluate
from .faults import StopSignals, all_agree, try_save
from .losses import CascadeLoss
from .recipe import build_datasets, build_loss, build_network, build_optimizer, build_scheduler
from .runlog import MetricsLog

log = logging.getLogger(__name__)


class TrainingStopped(UserError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


@dataclass
class Run:
    """The fixed parts of one training run."""

    config: TrainConfig
    device: torch.device
    dist: DistInfo
    dir: Path
    train_set: SegmentationDataset
    val_set: SegmentationDataset | None
    meta: dict[str, Any]  # what the saved weights carry besides the model config: classes, colours, data set
    metrics: MetricsLog | None = None  # the main process writes metrics.jsonl


def start_run(config: TrainConfig) -> tuple[Run, Any]:
    """Join the process group, build the data sets; returns the run and the model config."""
    device = pick_device(config.device)
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if config.batch_size % dist.world_size:
        raise UserError(f"batch_size {config.batch_size} must be a multiple of the {dist.world_size} processes")
    if config.precision == "16" and device.type != "cuda":
        raise UserError("precision 16 needs CUDA; use bf16 on the CPU")
    torch.manual_seed(config.seed)
    train_set, val_set, mcfg = build_datasets(config)
    meta = {"classes": list(train_set.classes), "colors": [list(c) for c in train_set.colors], "dataset": config.dataset}
    return Run(config, device, dist, Path(config.out), train_set, val_set, meta), mcfg


class TrainState:
    """Everything that changes as training runs, saved and restored as one object: an exact resume."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        self.model = model
        self.optimizer = build_optimizer(model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(next(model.parameters()).device.type, enabled=config.precision == "16")
        self.ema = None
        if config.ema_decay:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        self.step, self.best_miou = 0, -1.0

    @property
    def eval_model(self) -> nn.Module:
        """The weights to validate and save: the moving average when one is kept."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best_miou": self.best_miou,
            "rng_cpu": torch.get_rng_state(),
            "model_config": self.model.config.to_dict(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if torch.cuda.is_available() and next(self.model.parameters()).is_cuda:
            state["rng_cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        load_state(self.model, state["model"], source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if "ema" not in state:
                raise UserError(f"{source}: this checkpoint has no moving average; resume without --ema-decay")
            self.ema.load_state_dict(state["ema"])
        self.step, self.best_miou = int(state["step"]), float(state["best_miou"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng_cuda"])


def resume_checkpoint(config: TrainConfig) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from and its contents, or None when not resuming.

    With ``--resume`` alone (the run directory's latest), a damaged newest checkpoint is
    reported and the one before it is used: a second copy is why several are kept. A file
    refused as unsafe still stops the run, and so does a damaged file named explicitly.
    """
    if config.resume in (None, "", "none"):
        return None
    if config.resume != "auto":
        return Path(config.resume), load_checkpoint(config.resume)
    found = list_checkpoints(config.out)
    if not found:
        raise UserError(f"{config.out}: --resume: no checkpoint in this run directory")
    for path in reversed(found):
        try:
            return path, load_checkpoint(path)
        except UnreadableCheckpoint as e:
            log.warning("%s; trying the checkpoint before it", e)
    raise UserError(f"{config.out}: --resume: none of the {len(found)} checkpoints is readable")


def train_step(net: nn.Module, criterion: CascadeLoss, state: TrainState, images, labels, config: TrainConfig) -> dict:
    """One optimisation step on N x 3 x H x W images and N x H x W labels.

    Returns the loss, its parts (detached tensors) and whether it was finite (a non-finite
    loss leaves the weights alone, on every process).
    """
    net.train()
    with autocast(images.device, config.precision):
        outputs = net(images)
    loss, parts = criterion(outputs, labels)
    finite = all_agree(bool(torch.isfinite(loss)), loss.device)
    state.optimizer.zero_grad(set_to_none=True)
    if finite:
        state.scaler.scale(loss).backward()
        if config.grad_clip:
            state.scaler.unscale_(state.optimizer)
            nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        if state.ema is not None:
            state.ema.update_parameters(state.model)
    state.scheduler.step()
    return {"loss": loss.detach(), "parts": parts, "finite": finite}


class LogWindow:
    """The training row of metrics.jsonl: loss, throughput and skips over the steps since the last row."""

    def __init__(self) -> None:
        self.loss, self.steps, self.nonfinite, self.images = 0.0, 0, 0, 0
        self.start = time.perf_counter()

    def add(self, result: dict[str, Any], images: int) -> None:
        self.loss += float(result["loss"]) if result["finite"] else 0.0
        self.steps += int(result["finite"])
        self.nonfinite += int(not result["finite"])
        self.images += images

    def row(self, step: int, lr: float, parts: dict[str, torch.Tensor], skipped: int) -> dict[str, Any]:
        """The row, summed over every process (call on all of them)."""
        sums = all_reduce_sum(torch.tensor([self.loss, self.steps, skipped, self.images], dtype=torch.float64))
        return {
            "kind": "train",
            "step": step,
            "loss": float(sums[0] / sums[1]) if sums[1] else math.nan,  # every step of the row skipped: null
            "lr": lr,
            "images_per_s": float(sums[3]) / max(time.perf_counter() - self.start, 1e-9),
            "skipped": int(sums[2]),
            "nonfinite": self.nonfinite,
            **{f"loss_{k}": float(v) for k, v in parts.items()},
        }


def validate_and_keep_best(run: Run, state: TrainState) -> dict[str, Any] | None:
    """Score the model (its moving average when kept) on the val set, on every process; the main process
    logs the scores and, on a new best mIoU, saves ``best.safetensors``."""
    if run.val_set is None:
        return None
    config = run.config
    loader = eval_loader(run.val_set, rank=run.dist.rank, world_size=run.dist.world_size, workers=min(config.workers, 2),
                         max_images=config.eval_max_images, strict=config.strict)
    model = state.eval_model
    scores = evaluate(model, loader, num_classes=model.config.num_classes, class_names=run.val_set.classes,
                      device=run.device, flip=config.eval_flip, scales=(config.eval_scale,), precision=config.precision,
                      progress=False)
    skipped = int(all_reduce_sum(torch.tensor([loader.skipped], dtype=torch.int64, device=run.device))[0])
    if run.metrics is not None:
        keys = ("miou", "pixel_accuracy", "mean_accuracy", "seconds", "per_class_iou")
        run.metrics.write({"kind": "eval", "step": state.step, **{k: scores[k] for k in keys}, "skipped": skipped})
        if scores["miou"] is not None and scores["miou"] > state.best_miou:
            state.best_miou = scores["miou"]
            meta = {**run.meta, "step": state.step, "miou": state.best_miou}
            try_save(lambda: save_weights(model, run.dir / "best.safetensors", meta), "best.safetensors")
    return scores


def save_training_checkpoint(run: Run, state: TrainState) -> None:
    if run.dist.is_main:
        state_dict = {**state.state_dict(), "config": run.config.to_dict()}
        try_save(lambda: save_checkpoint(state_dict, run.dir, state.step, keep=run.config.keep_checkpoints),
                 f"the checkpoint of step {state.step}")


def stop_on_nonfinite(result: dict[str, Any], run: Run, state: TrainState) -> None:
    if result["finite"] or run.config.skip_nonfinite:
        return
    found = list_checkpoints(run.dir)
    raise TrainingStopped(
        f"loss is {result['loss'].item()} at step {state.step + 1}; stopped. "
        + (f"The last good checkpoint is {found[-1]}" if found else "No checkpoint was saved yet")
        + " (lower --lr, set --grad-clip, or pass --skip-nonfinite to skip such batches)"
    )


def due(step: int, every: int) -> bool:
    return bool(every) and step % every == 0


def train(config: TrainConfig) -> dict[str, Any]:
    """Train as ``config`` says; returns a summary (final and best val scores, steps, time)."""
    run, mcfg = start_run(config)
    model = build_network(mcfg, config).to(run.device)
    net = model
    if run.dist.enabled:
        if run.device.type == "cuda" and config.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(net, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    criterion = build_loss(model, config, run.train_set).to(run.device)
    state = TrainState(model, config)
    resume = resume_checkpoint(config)
    if resume is not None:
        state.load_state_dict(resume[1], str(resume[0]))
        log.info("resumed from %s at step %d", resume[0], state.step)
    if run.dist.is_main:
        run.metrics = MetricsLog(run.dir, resume_step=state.step if resume else None)
        save_config(config, run.dir / "config.yaml")
    loader = train_loader(run.train_set, config.batch_size, seed=config.seed, rank=run.dist.rank,
                          world_size=run.dist.world_size, start_step=state.step, workers=config.workers)
    stream = TrainStream(loader, strict=config.strict, epoch_steps=-(-len(run.train_set) // config.batch_size),
                         device=run.device, where=config.data_root)
    window, start = LogWindow(), time.perf_counter()
    bar = tqdm(total=config.max_steps, initial=state.step, disable=not run.dist.is_main, unit="step", dynamic_ncols=True)
    with StopSignals() as stop, bar:
        while state.step < config.max_steps and stop.requested is None:
            batch = stream.next(lambda: stop.requested is not None)
            if batch is None:
                continue
            result = train_step(net, criterion, state, *batch, config)
            stop_on_nonfinite(result, run, state)
            state.step += 1
            window.add(result, batch[0].shape[0] * run.dist.world_size)
            bar.update(1)
            if due(state.step, config.log_every) or state.step == config.max_steps:
                row = window.row(state.step, state.scheduler.get_last_lr()[0], result["parts"], stream.skipped)
                window, stream.skipped = LogWindow(), 0
                if run.metrics is not None:
                    run.metrics.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}", img_s=f"{row['images_per_s']:.1f}")
            if due(state.step, config.eval_every) and state.step < config.max_steps:
                validate_and_keep_best(run, state)
            if due(state.step, config.save_every):
                save_training_checkpoint(run, state)
    if stop.requested is not None:
        return stopped(run, state, stop.requested)
    return finish(run, state, time.perf_counter() - start)


def stopped(run: Run, state: TrainState, signal_name: str) -> dict[str, Any]:
    """A stop signal: checkpoint where we are, and say how to go on."""
    save_training_checkpoint(run, state)
    if run.metrics is not None:
        run.metrics.close()
    log.warning("stopped by %s at step %d; checkpoint in %s; continue with: aticnet train --out %s --resume",
                signal_name, state.step, run.dir / "checkpoints", run.dir)
    return {"stopped": signal_name, "step": state.step, "run_dir": str(run.dir)}


def finish(run: Run, state: TrainState, seconds: float) -> dict[str, Any]:
    """The last checkpoint, the final validation and ``model.safetensors``; returns the run's summary."""
    if not due(state.step, run.config.save_every):
        save_training_checkpoint(run, state)  # before the final evaluation, which a Ctrl-C may cut short
    scores = validate_and_keep_best(run, state)
    if run.metrics is not None:
        meta = {**run.meta, "step": state.step, "miou": scores["miou"] if scores else None}
        try:
            save_weights(state.eval_model, run.dir / "model.safetensors", meta)
        except OSError as e:
            raise UserError(f"{run.dir / 'model.safetensors'}: could not save ({e}); the last checkpoint is in "
                            f"{run.dir / 'checkpoints'}") from None
        run.metrics.close()
    return {
        "run_dir": str(run.dir),
        "step": state.step,
        "seconds": seconds,
        "scores": scores,
        "best_miou": state.best_miou if state.best_miou >= 0 else None,
        "model_config": state.model.config.to_dict(),
    }
