"""Training: the paper's recipe (SGD, poly LR, cascade loss), iteration-based, resumable.

Read top to bottom: ``train`` sets up data, model, optimiser and run directory, then
loops ``train_step`` until ``max_steps``, evaluating and checkpointing on the way.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LinearLR, PolynomialLR, SequentialLR
from tqdm import tqdm

from .checkpoint import UnreadableCheckpoint, list_checkpoints, load_checkpoint, load_state, read_weights, save_checkpoint, save_weights
from .config import TrainConfig, save_config
from .data import EvalTransform, TrainTransform, build_dataset
from .data.loader import eval_loader, handle_unreadable, train_loader
from .distributed import all_reduce_sum, init_distributed, pick_device
from .errors import DataError, UserError
from .evaluate import autocast, evaluate
from .faults import StopSignals, all_agree, try_save
from .losses import CascadeLoss
from .models import model_config, model_from_config
from .runlog import MetricsLog

log = logging.getLogger(__name__)


class TrainingStopped(UserError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Poly decay to 0 at ``max_steps`` (power 0.9), after an optional linear warm-up."""
    decay_steps = max(1, config.max_steps - config.warmup_steps)
    poly = PolynomialLR(optimizer, total_iters=decay_steps, power=config.poly_power)
    if config.warmup_steps <= 0:
        return poly
    warmup = LinearLR(optimizer, start_factor=1e-3, total_iters=config.warmup_steps)
    return SequentialLR(optimizer, [warmup, poly], milestones=[config.warmup_steps])


def class_weights_for(dataset, num_classes: int, strict: bool = False) -> torch.Tensor:
    """ENet's weighting, 1 / ln(1.02 + p_c), from the training labels' class frequencies."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(len(dataset)):
        try:
            _, label = dataset.read(i)
        except DataError as e:
            handle_unreadable([e], strict)
            continue
        counts += torch.bincount(label[label != 255].long().flatten(), minlength=num_classes)[:num_classes]
    freq = counts / counts.sum().clamp(min=1)
    return (1.0 / torch.log(1.02 + freq)).float()


def load_resume_state(config: TrainConfig) -> tuple[Path, dict[str, Any]] | None:
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


def train_step(model, criterion, optimizer, scheduler, scaler, images, labels, config, device) -> dict[str, Any]:
    """One optimisation step; returns the loss parts (tensors) and whether it was applied."""
    with autocast(device, config.precision):
        outputs = model(images)
    loss, parts = criterion(outputs, labels)
    finite = all_agree(bool(torch.isfinite(loss)), loss.device)  # every rank skips, or none
    optimizer.zero_grad(set_to_none=True)
    if finite:
        scaler.scale(loss).backward()
        if config.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    return {"loss": loss.detach(), "parts": parts, "finite": finite}


def build_data_and_model_config(config: TrainConfig):
    """(train set, val set or None, model config): the model's normalisation decides the transforms."""
    train_set = build_dataset(config.dataset, config.data_root, config.train_split)
    overrides = dict(config.model_options)
    if config.width is not None:
        overrides["width"] = config.width
    if config.aux_weights is not None:
        overrides["aux_weights"] = tuple(config.aux_weights)
    try:
        mcfg = model_config(config.model, num_classes=train_set.num_classes, **overrides)
    except (ValueError, TypeError) as e:
        raise UserError(f"model {config.model!r}: {e}") from None
    train_set.transform = TrainTransform(config.crop_size, scale_range=config.scale_range, mean=mcfg.mean, std=mcfg.std)
    val_set = None
    if config.val_split:
        transform = EvalTransform(mean=mcfg.mean, std=mcfg.std)
        val_set = build_dataset(config.dataset, config.data_root, config.val_split, transform=transform)
    return train_set, val_set, mcfg


def restore(path: Path, state: dict[str, Any], model, optimizer, scheduler, scaler, device: torch.device) -> tuple[int, float]:
    """Load a training checkpoint's ``state`` into the live objects; returns (step, best mIoU so far)."""
    load_state(model, state["model"], str(path))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"])
    log.info("resumed from %s at step %d", path, int(state["step"]))
    return int(state["step"]), float(state["best_miou"])


def train(config: TrainConfig) -> dict[str, Any]:
    """Train as ``config`` says; returns a summary (final and best val scores, steps, time)."""
    device = pick_device(config.device)
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if config.batch_size % dist.world_size:
        raise UserError(f"batch_size {config.batch_size} must be a multiple of the {dist.world_size} processes")
    if config.precision == "16" and device.type != "cuda":
        raise UserError("precision 16 needs CUDA; use bf16 on the CPU")
    run_dir = Path(config.out)
    torch.manual_seed(config.seed)

    train_set, val_set, mcfg = build_data_and_model_config(config)

    model = model_from_config(mcfg)
    if config.init:
        tensors, _ = read_weights(config.init)
        load_state(model, tensors, str(config.init))
    model.to(device)
    if dist.enabled and device.type == "cuda" and config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net: nn.Module = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if dist.enabled else model

    weights = class_weights_for(train_set, mcfg.num_classes, config.strict).to(device) if config.class_weights == "inverse_log" else None
    criterion = CascadeLoss(model.aux_keys, mcfg.aux_weights, class_weights=weights).to(device)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "16")

    step, best_miou = 0, -1.0
    resume = load_resume_state(config)
    if resume is not None:
        step, best_miou = restore(*resume, model, optimizer, scheduler, scaler, device)

    meta = {"classes": list(train_set.classes), "colors": [list(c) for c in train_set.colors], "dataset": config.dataset}
    metrics = MetricsLog(run_dir, resume_step=step if resume is not None else None, tensorboard=dist.is_main) if dist.is_main else None
    if dist.is_main:
        save_config(config, run_dir / "config.yaml")

    def checkpoint() -> None:
        if not dist.is_main:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "best_miou": best_miou,
            "rng_cpu": torch.get_rng_state(),
            "model_config": mcfg.to_dict(),
            "config": config.to_dict(),
        }
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state()
        try_save(lambda: save_checkpoint(state, run_dir, step, keep=config.keep_checkpoints), f"the checkpoint of step {step}")

    def validate() -> dict[str, Any] | None:
        nonlocal best_miou
        if val_set is None:
            return None
        loader = eval_loader(val_set, rank=dist.rank, world_size=dist.world_size, workers=min(config.workers, 2), max_images=config.eval_max_images, strict=config.strict)
        scores = evaluate(model, loader, num_classes=mcfg.num_classes, class_names=val_set.classes, device=device, flip=config.eval_flip, precision=config.precision, progress=False)
        skipped = int(all_reduce_sum(torch.tensor([loader.skipped], dtype=torch.int64, device=device))[0])  # every rank's share
        if dist.is_main:
            metrics.write({"kind": "eval", "step": step, "miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"], "mean_accuracy": scores["mean_accuracy"], "seconds": scores["seconds"], "skipped": skipped, "per_class_iou": scores["per_class_iou"]})
            if scores["miou"] is not None and scores["miou"] > best_miou:
                best_miou = scores["miou"]
                try_save(lambda: save_weights(model, run_dir / "best.safetensors", {**meta, "step": step, "miou": best_miou}), "best.safetensors")
        return scores

    loader = train_loader(train_set, config.batch_size, seed=config.seed, rank=dist.rank, world_size=dist.world_size, start_step=step, workers=config.workers)
    batches = iter(loader)
    bar = tqdm(total=config.max_steps, initial=step, disable=not dist.is_main, unit="step", dynamic_ncols=True)
    new_window = lambda: {"loss": 0.0, "n": 0, "images": 0, "skipped": 0, "nonfinite": 0, "start": time.perf_counter()}  # noqa: E731
    window, empty_in_a_row = new_window(), 0
    per_rank = config.batch_size // dist.world_size
    scores = None
    start_time = time.perf_counter()
    with StopSignals() as stop, bar:
        while step < config.max_steps and stop.requested is None:
            try:
                images, labels, errors = next(batches)
            except RuntimeError:
                if stop.requested is None:
                    raise
                break  # the signal went to the whole process group and ended the loader's workers too
            window["skipped"] += handle_unreadable(errors, config.strict)
            if not all_agree(images.shape[0] > 0, device):  # every sample of a batch unreadable (on some rank)
                empty_in_a_row += 1
                if empty_in_a_row >= 2 * len(train_set):  # two epochs: no sample at all is readable
                    raise UserError(f"{config.data_root}: {empty_in_a_row} batches in a row had no readable sample "
                                    "(see the warnings above; aticnet check-data lists every bad file)")
                continue
            empty_in_a_row = 0
            if images.shape[0] < min(2, per_rank):  # one sample left: BatchNorm needs two (PSPNet's 1x1 bin)
                images, labels = images.repeat(2, 1, 1, 1), labels.repeat(2, 1, 1)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            model.train()
            result = train_step(net, criterion, optimizer, scheduler, scaler, images, labels, config, device)
            if not result["finite"] and not config.skip_nonfinite:
                found = list_checkpoints(run_dir)
                raise TrainingStopped(
                    f"loss is {result['loss'].item()} at step {step + 1}; stopped. "
                    + (f"The last good checkpoint is {found[-1]}" if found else "No checkpoint was saved yet")
                    + " (lower --lr, set --grad-clip, or pass --skip-nonfinite to skip such batches)"
                )
            step += 1
            window["loss"] += float(result["loss"]) if result["finite"] else 0.0
            window["n"] += int(result["finite"])
            window["nonfinite"] += int(not result["finite"])
            window["images"] += images.shape[0] * dist.world_size
            bar.update(1)
            if step % config.log_every == 0 or step == config.max_steps:
                elapsed = time.perf_counter() - window["start"]
                loss = torch.tensor([window["loss"], window["n"], window["skipped"]], dtype=torch.float64)
                all_reduce_sum(loss)  # sums over processes
                row = {
                    "kind": "train",
                    "step": step,
                    "loss": float(loss[0] / loss[1]) if loss[1] else math.nan,  # every step of the row skipped: null in the file
                    "lr": scheduler.get_last_lr()[0],
                    "images_per_s": window["images"] / max(elapsed, 1e-9),
                    "skipped": int(loss[2]),
                    "nonfinite": window["nonfinite"],
                    **{f"loss_{k}": float(v) for k, v in result["parts"].items()},
                }
                if dist.is_main:
                    metrics.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}", img_s=f"{row['images_per_s']:.1f}")
                window = new_window()
            if config.eval_every and step % config.eval_every == 0 and step < config.max_steps:
                scores = validate()
            if config.save_every and step % config.save_every == 0:
                checkpoint()
    if stop.requested is not None:
        checkpoint()
        if metrics:
            metrics.close()
        log.warning("stopped by %s at step %d; checkpoint in %s; continue with: aticnet train --out %s --resume",
                    stop.requested, step, run_dir / "checkpoints", run_dir)
        return {"stopped": stop.requested, "step": step, "run_dir": str(run_dir)}
    if not config.save_every or step % config.save_every:
        checkpoint()  # before the final evaluation, which a Ctrl-C may cut short
    scores = validate()
    if dist.is_main:
        final_meta = {**meta, "step": step, "miou": scores["miou"] if scores else None}
        try:
            save_weights(model, run_dir / "model.safetensors", final_meta)
        except OSError as e:
            raise UserError(f"{run_dir / 'model.safetensors'}: could not save ({e}); the last checkpoint is in "
                            f"{run_dir / 'checkpoints'}") from None
        metrics.close()
    return {
        "run_dir": str(run_dir),
        "step": step,
        "seconds": time.perf_counter() - start_time,
        "scores": scores,
        "best_miou": best_miou if best_miou >= 0 else None,
        "model_config": mcfg.to_dict(),
    }
