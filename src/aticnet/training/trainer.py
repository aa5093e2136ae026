"""Training: the paper's recipe (SGD, poly LR, cascade loss), iteration-based, exactly resumable.

``train`` reads top to bottom: the run (process group, data, run directory), the model and loss, the
:class:`~aticnet.training.state.TrainState` (everything a resume restores), then one step after another
until ``max_steps``, with a metrics row every ``log_every`` steps, :func:`validate_and_keep_best` every
``eval_every`` and a checkpoint every ``save_every``.

Each step waits for the device once: after the forward pass, one reduction over the processes (a no-op
in a single process) settles together whether the loss is finite everywhere, whether any process was
asked to stop, and whether any has nothing readable in the next batch, which is read ahead while the
device computes. So under ``torchrun`` every process takes the same steps and stops at the same one,
and the loss itself is read back only when a metrics row is written.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..data import SegmentationDataset
from ..data.loader import EvalLoader, TrainStream, eval_loader, train_loader
from ..evaluation.evaluate import autocast, evaluate_model
from ..models import place_on_device
from ..models.weights import save_weights
from ..utils import cpu
from ..utils.distributed import DistInfo, all_reduce, all_reduce_sum, init_distributed, pick_device
from ..utils.errors import UserError
from ..utils.faults import StopSignals, try_save
from .checkpoint import UnreadableCheckpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig, save_config
from .losses import CascadeLoss
from .recipe import augments_on_device, build_datasets, build_loss, build_network
from .run_dir import MetricsLog
from .state import TrainState

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
    val_loader: EvalLoader | None = field(default=None, repr=False)  # built once, reused by every validation


def start_run(config: TrainConfig) -> tuple[Run, Any]:
    """Join the process group, seed this process, build the data sets; returns the run and the model config."""
    device = pick_device(config.device)
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if config.batch_size % dist.world_size:
        raise UserError(f"batch_size {config.batch_size} must be a multiple of the {dist.world_size} processes")
    if config.precision == "16" and device.type != "cuda":
        raise UserError("precision 16 needs CUDA; use bf16 on the CPU")
    if config.precision == "bf16" and device.type == "cpu" and cpu.lacks_native_bf16(info := cpu.cpu_info()):
        log.warning("precision bf16 on a CPU without avx512_bf16 or AMX (%s): bf16 runs emulated, many times "
                    "slower than float32; --precision 32 trains the same recipe in float32", info["model"])
    set_determinism(config.deterministic, device)
    # Each process its own seed: dropout masks differ across processes. The weights start equal all the same
    # (DDP copies process 0's), and the data depend on config.seed alone (data/loader.py).
    torch.manual_seed(config.seed + dist.rank)
    # on a GPU the images cross the bus as bytes and are normalised there (TrainStream, evaluate_model), and the
    # random rescale and crop run there too when the frames allow it (recipe.augments_on_device)
    train_set, val_set, mcfg = build_datasets(config, uint8_images=device.type == "cuda")
    if augments_on_device(config, device, train_set):
        train_set.transform.defer = True
    meta = {"classes": list(train_set.classes), "colors": [list(c) for c in train_set.colors], "dataset": config.dataset}
    run = Run(config, device, dist, Path(config.out), train_set, val_set, meta)
    if val_set is not None:
        run.val_loader = eval_loader(val_set, rank=dist.rank, world_size=dist.world_size,
                                     workers=min(config.workers, 2), max_images=config.eval_max_images,
                                     strict=config.strict, persistent=config.workers > 0)
    return run, mcfg


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """``--deterministic``: PyTorch's deterministic algorithms and cuDNN's (ops with no deterministic CUDA kernel,
    such as bilinear upsampling's backward, warn instead of failing); otherwise cuDNN picks its fastest
    convolution algorithms for the shapes it sees."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


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


class Verdict(NamedTuple):
    """What every process agrees on after a step's forward pass."""

    finite: bool  # the loss is finite on every process: the weights may change
    stop: bool  # some process was asked to stop (SIGINT, SIGTERM): all stop after this step
    next_empty: bool  # some process has nothing readable in the next batch: all skip it


def agree(loss: torch.Tensor, *, stop: bool = False, next_empty: bool = False) -> Verdict:
    """One reduction over the processes (a no-op in one process) and the step's one wait for the device."""
    device = loss.device  # the flags are made where the loss is (fills, not copies from the host: no wait)
    flags = torch.stack([(~torch.isfinite(loss.detach())).float().reshape(()),
                         torch.full((), float(stop), device=device), torch.full((), float(next_empty), device=device)])
    nonfinite, stop_any, empty_any = all_reduce(flags, "max").tolist()
    return Verdict(not nonfinite, bool(stop_any), bool(empty_any))


def forward_loss(net: nn.Module, criterion: CascadeLoss, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The cascade loss of N x 3 x H x W images against N x H x W labels (scalar tensor, and its parts)."""
    net.train()
    with autocast(images.device, config.precision):
        outputs = net(images)
    return criterion(outputs, labels)


def apply_update(net: nn.Module, state: TrainState, loss: torch.Tensor, finite: bool, config: TrainConfig) -> None:
    """Backward and optimiser step when the loss was finite on every process; the schedule moves on either way."""
    state.optimizer.zero_grad(set_to_none=True)
    if finite:
        state.scaler.scale(loss).backward()
        if config.grad_clip:
            state.scaler.unscale_(state.optimizer)
            nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        if state.ema is not None:
            state.ema.update(state.model)
    state.scheduler.step()


def train_step(net: nn.Module, criterion: CascadeLoss, state: TrainState, images, labels, config: TrainConfig) -> dict:
    """One optimisation step on N x 3 x H x W images and N x H x W labels.

    Returns the loss, its parts (detached tensors) and whether it was finite (a non-finite
    loss leaves the weights alone, on every process).
    """
    loss, parts = forward_loss(net, criterion, images, labels, config)
    finite = agree(loss).finite
    apply_update(net, state, loss, finite, config)
    return {"loss": loss.detach(), "parts": parts, "finite": finite}


class LogWindow:
    """The training row of metrics.jsonl: loss, throughput and skips over the steps since the last row.

    The losses add up on the device; they are read back once, when the row is written."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.steps, self.nonfinite, self.images = 0, 0, 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, finite: bool, images: int) -> None:
        if finite:
            self.loss += loss.detach()
        self.steps += int(finite)
        self.nonfinite += int(not finite)
        self.images += images

    def row(self, step: int, lr: float, parts: dict[str, torch.Tensor], skipped: int) -> dict[str, Any]:
        """The row, summed over every process (call on all of them)."""
        sums = torch.stack([self.loss.cpu(), *torch.tensor([self.steps, skipped, self.images], dtype=torch.float64)])
        sums = all_reduce_sum(sums)
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
    if run.val_loader is None:
        return None
    config, loader = run.config, run.val_loader
    skipped_before = loader.skipped
    model = state.eval_model
    scores = evaluate_model(model, loader, num_classes=model.config.num_classes, class_names=run.val_set.classes,
                            device=run.device, flip=config.eval_flip, scales=(config.eval_scale,), precision=config.precision,
                            progress=False)
    skipped = int(all_reduce_sum(torch.tensor([loader.skipped - skipped_before], dtype=torch.int64))[0])
    if run.metrics is not None:
        keys = ("miou", "pixel_accuracy", "mean_accuracy", "seconds", "per_class_iou")
        run.metrics.write({"kind": "eval", "step": state.step, **{k: scores[k] for k in keys}, "skipped": skipped})
        if scores["miou"] is not None and scores["miou"] > state.best_miou:
            state.best_miou = scores["miou"]
            meta = {**run.meta, "step": state.step, "miou": state.best_miou}
            try_save(lambda: save_weights(model, run.dir / "best.safetensors", meta), "best.safetensors")
    return scores


def save_training_checkpoint(run: Run, state: TrainState) -> None:
    """Write a checkpoint (call on every process: each gives its random-number state; the main one writes)."""
    state_dict = {**state.state_dict(), "config": run.config.to_dict()}
    if run.dist.is_main:
        try_save(lambda: save_checkpoint(state_dict, run.dir, state.step, keep=run.config.keep_checkpoints),
                 f"the checkpoint of step {state.step}")


def stop_on_nonfinite(loss: torch.Tensor, finite: bool, run: Run, state: TrainState) -> None:
    if finite or run.config.skip_nonfinite:
        return
    found = list_checkpoints(run.dir)
    raise TrainingStopped(
        (f"loss is {loss.item()} at step {state.step + 1}; stopped. " if not torch.isfinite(loss)
         else f"the loss of another process is not finite at step {state.step + 1}; stopped. ")
        + (f"The last good checkpoint is {found[-1]}" if found else "No checkpoint was saved yet")
        + " (lower --lr, set --grad-clip, or pass --skip-nonfinite to skip such batches)"
    )


def due(step: int, every: int) -> bool:
    return bool(every) and step % every == 0


def wrap_for_processes(model: nn.Module, run: Run) -> nn.Module:
    """The module the steps run: ``model`` itself, or under torchrun DDP (SyncBatchNorm on CUDA)."""
    if not run.dist.enabled:
        return model
    cuda = run.device.type == "cuda"
    net = nn.SyncBatchNorm.convert_sync_batchnorm(model) if cuda and run.config.sync_bn else model
    # SyncBatchNorm keeps the running statistics equal on every process: nothing to broadcast each step.
    # Gradients as views of DDP's buckets: no copy per bucket (channels_last weights give matching strides).
    return DistributedDataParallel(net, device_ids=[run.device.index] if cuda else None,
                                   broadcast_buffers=not (cuda and run.config.sync_bn), gradient_as_bucket_view=True)


def first_batch(stream: TrainStream, stop: StopSignals) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The next batch every process can use (batches empty on some process are skipped by all), or None when
    some process was asked to stop."""
    while True:
        batch = stream.fetch(lambda: stop.requested is not None)
        flags = torch.tensor([float(stop.requested is not None or batch is None),
                              float(batch is not None and batch[0].shape[0] == 0)])
        stop_any, empty_any = all_reduce(flags, "max").tolist()
        if stop_any:
            return None
        stream.count_empty(bool(empty_any))
        if not empty_any:
            return batch


def train(config: TrainConfig) -> dict[str, Any]:
    """Train as ``config`` says.

    Args:
        config: every choice of the run (:class:`~aticnet.training.config.TrainConfig`; ``load_config`` reads one).

    Returns:
        A summary: ``run_dir``, ``step``, ``seconds``, final ``scores`` and ``best_miou`` on the val set; or, when a
        signal stopped the run, ``stopped`` (the signal), ``step`` and ``run_dir`` (``--resume`` goes on).
    """
    run, mcfg = start_run(config)
    model = place_on_device(build_network(mcfg, config), run.device)
    net = wrap_for_processes(model, run)
    criterion = build_loss(model, config, run.train_set).to(run.device)
    state = TrainState(model, config)
    resume = resume_checkpoint(config)
    if resume is not None:
        state.load_state_dict(resume[1], str(resume[0]), run.dist.rank)
        log.info("resumed from %s at step %d", resume[0], state.step)
    if run.dist.is_main:
        run.metrics = MetricsLog(run.dir, resume_step=state.step if resume else None)
        save_config(config, run.dir / "config.yaml")
    loader = train_loader(run.train_set, config.batch_size, seed=config.seed, rank=run.dist.rank,
                          world_size=run.dist.world_size, start_step=state.step, workers=config.workers)
    stream = TrainStream(loader, strict=config.strict, epoch_steps=-(-len(run.train_set) // config.batch_size),
                         device=run.device, where=config.data_root,
                         normalize=(torch.tensor(mcfg.mean), torch.tensor(mcfg.std)), crop=config.crop_hw)
    window, start = LogWindow(run.device), time.perf_counter()
    bar = tqdm(total=config.max_steps, initial=state.step, disable=not run.dist.is_main, unit="step", dynamic_ncols=True)
    with StopSignals() as stop, bar:
        batch = first_batch(stream, stop) if state.step < config.max_steps else None
        while batch is not None:
            images, labels = stream.to_device(batch)
            loss, parts = forward_loss(net, criterion, images, labels, config)
            last = state.step + 1 >= config.max_steps
            upcoming = None if last else stream.fetch(lambda: stop.requested is not None)  # read while the device works
            verdict = agree(loss, stop=stop.requested is not None or (upcoming is None and not last),
                            next_empty=upcoming is not None and upcoming[0].shape[0] == 0)
            stop_on_nonfinite(loss, verdict.finite, run, state)
            apply_update(net, state, loss, verdict.finite, config)
            state.step += 1
            window.add(loss, verdict.finite, images.shape[0] * run.dist.world_size)
            bar.update(1)
            if due(state.step, config.log_every) or state.step == config.max_steps:
                row = window.row(state.step, state.scheduler.get_last_lr()[0], parts, stream.skipped)
                window, stream.skipped = LogWindow(run.device), 0
                if run.metrics is not None:
                    run.metrics.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}", img_s=f"{row['images_per_s']:.1f}")
            if due(state.step, config.eval_every) and state.step < config.max_steps:
                validate_and_keep_best(run, state)
            if due(state.step, config.save_every):
                save_training_checkpoint(run, state)
            if verdict.stop or last:
                break
            stream.count_empty(verdict.next_empty)
            batch = first_batch(stream, stop) if verdict.next_empty else upcoming
    if state.step < config.max_steps:  # left the loop early: some process was asked to stop
        return stopped(run, state, stop.requested or "a stop signal to another process")
    return finish(run, state, time.perf_counter() - start)


def stopped(run: Run, state: TrainState, reason: str) -> dict[str, Any]:
    """A stop signal: checkpoint where we are (every process at the same step), and say how to go on."""
    if not due(state.step, run.config.save_every):
        save_training_checkpoint(run, state)
    if run.metrics is not None:
        run.metrics.close()
    log.warning("stopped by %s at step %d; checkpoint in %s; continue with: aticnet train --out %s --resume",
                reason, state.step, run.dir / "checkpoints", run.dir)
    return {"stopped": reason, "step": state.step, "run_dir": str(run.dir)}


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
