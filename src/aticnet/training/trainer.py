"""Training: the paper's recipe (SGD, poly LR, cascade loss), iteration-based, exactly resumable.

``train`` reads top to bottom: the run (process group, data, run directory), the model and loss, the
[`TrainState`][aticnet.training.state.TrainState] (everything a resume restores), then one step after another
until ``max_steps``, with a metrics row every ``log_every`` steps, ``validate_and_keep_best`` every
``eval_every`` and a checkpoint every ``save_every``.

No step waits for the device ([`aticnet.training.step`][aticnet.training.step]): the host queues the step, reads
the next batch while the device computes, and agrees with the other processes, in one reduction on the CPU,
whether any was asked to stop and whether any has nothing readable in the next batch. So under ``torchrun``
every process takes the same steps and stops at the same one. The device's tally (the loss, whether it was
finite) is read back only when a metrics row, a validation or a checkpoint is due.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..data import SegmentationDataset
from ..data.cache import DeviceBatches, DeviceFrames, open_frames
from ..data.loader import EvalLoader, StreamSampler, TrainStream, eval_loader, train_loader
from ..evaluation.evaluate import evaluate_model
from ..models import place_on_device
from ..models.weights import save_weights
from ..utils import cpu
from ..utils.distributed import DistInfo, all_reduce_sum, init_distributed, pick_device
from ..utils.errors import UserError
from ..utils.faults import StopSignals, try_save
from .checkpoint import UnreadableCheckpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig, save_config
from .recipe import augments_on_device, build_datasets, build_loss, build_network
from .run_dir import MetricsLog
from .state import TrainState
from .step import Compiled, LogWindow, agree_on_host, apply_update, finite_everywhere, forward_loss

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
    if config.cache != "none":  # decoded once (one process at a time builds; the others reuse its file)
        train_set.decoded = open_frames(train_set, config.cache, device=device, folder=config.cache_dir,
                                        workers=config.workers, say=log.info if dist.is_main else log.debug)
    if augments_on_device(config, device, train_set):
        train_set.transform.defer = True
    # infer_scale: the scale the model runs at (its validation's), which aticnet.load applies by default
    meta = {"classes": list(train_set.classes), "colors": [list(c) for c in train_set.colors], "dataset": config.dataset,
            "infer_scale": config.eval_scale}
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


def stop_on_nonfinite(window: LogWindow, run: Run) -> None:
    """Stop the run at a non-finite loss in ``window`` (unless ``skip_nonfinite``): its update was skipped, so the
    weights are those of the step before, and so is every checkpoint (reads the device)."""
    bad = None if run.config.skip_nonfinite else window.first_nonfinite()
    if bad is None:
        return
    step, loss = bad
    found = list_checkpoints(run.dir)
    raise TrainingStopped(
        (f"loss is {loss} at step {step}; stopped. " if not math.isfinite(loss)
         else f"the loss of another process is not finite at step {step}; stopped. ")
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


def first_batch(stream: TrainStream, stop: StopSignals) -> tuple[Any, ...] | None:
    """The next batch every process can use (batches empty on some process are skipped by all), or None when
    some process was asked to stop."""
    while True:
        batch = stream.fetch(lambda: stop.requested is not None)
        verdict = agree_on_host(stop=stop.requested is not None or batch is None,
                                next_empty=batch is not None and len(batch[0]) == 0)
        if verdict.stop:
            return None
        stream.count_empty(verdict.next_empty)
        if not verdict.next_empty:
            return batch


def training_batches(run: Run, mcfg: Any, start_step: int) -> TrainStream:
    """This process's batches from ``start_step`` on: the loader's processes, or (``cache`` device) the frames on
    the device, with the same positions and seeds either way."""
    config, train_set = run.config, run.train_set
    if config.cache == "device":
        sampler = StreamSampler(len(train_set), config.batch_size, seed=config.seed, rank=run.dist.rank,
                                world_size=run.dist.world_size, start_step=start_step)
        batches: Any = DeviceBatches(DeviceFrames(train_set.decoded, run.device), train_set.transform, sampler)
    else:
        batches = train_loader(train_set, config.batch_size, seed=config.seed, rank=run.dist.rank,
                               world_size=run.dist.world_size, start_step=start_step, workers=config.workers)
    return TrainStream(batches, strict=config.strict, epoch_steps=-(-len(train_set) // config.batch_size),
                       device=run.device, where=config.data_root,
                       normalize=(torch.tensor(mcfg.mean), torch.tensor(mcfg.std)), crop=config.crop_hw)


def settles(step: int, config: TrainConfig) -> bool:
    """Whether the host reads the device's tally after ``step``: a metrics row, a validation or a checkpoint."""
    return any(due(step, every) for every in (config.log_every, config.eval_every, config.save_every))


def train(config: TrainConfig) -> dict[str, Any]:
    """Train as ``config`` says: what ``aticnet train`` runs.

    Examples:
        >>> import aticnet
        >>> summary = aticnet.train(aticnet.load_config("my_recipe.yaml", out="runs/mine"))
        >>> summary["best_miou"], summary["run_dir"]

    Args:
        config: every choice of the run ([`TrainConfig`][aticnet.training.config.TrainConfig]; ``load_config``
            reads one).

    Returns:
        A summary dict of ``run_dir``, ``step``, ``seconds``, the final ``scores`` and ``best_miou`` on the val
            set; or, when a signal stopped the run, ``stopped`` (the signal), ``step`` and ``run_dir``
            (``--resume`` goes on).
    """
    run, mcfg = start_run(config)
    model = place_on_device(build_network(mcfg, config), run.device)
    net = wrap_for_processes(model, run)
    forward = Compiled(net) if config.compile else net
    criterion = build_loss(model, config, run.train_set).to(run.device)
    state = TrainState(model, config)
    resume = resume_checkpoint(config)
    if resume is not None:
        state.load_state_dict(resume[1], str(resume[0]), run.dist.rank)
        log.info("resumed from %s at step %d", resume[0], state.step)
    if run.dist.is_main:
        run.metrics = MetricsLog(run.dir, resume_step=state.step if resume else None)
        save_config(config, run.dir / "config.yaml")
    stream = training_batches(run, mcfg, state.step)
    window, start = LogWindow(run.device), time.perf_counter()
    bar = tqdm(total=config.max_steps, initial=state.step, disable=not run.dist.is_main, unit="step", dynamic_ncols=True)
    with StopSignals() as stop, bar:
        batch = first_batch(stream, stop) if state.step < config.max_steps else None
        while batch is not None:
            images, labels = stream.to_device(batch)
            loss, parts = forward_loss(forward, criterion, images, labels, config)
            finite = finite_everywhere(loss)
            apply_update(forward, state, loss, finite, config)
            last = state.step + 1 >= config.max_steps
            upcoming = None if last else stream.fetch(lambda: stop.requested is not None)  # read while the device works
            verdict = agree_on_host(stop=stop.requested is not None or (upcoming is None and not last),
                                    next_empty=upcoming is not None and len(upcoming[0]) == 0)
            state.step += 1
            window.add(loss, finite, len(images), state.step)
            bar.update(1)
            if settles(state.step, config) or verdict.stop or last:
                stop_on_nonfinite(window, run)
            if due(state.step, config.log_every) or last:
                row = window.row(state.step, state.scheduler.get_last_lr()[0], parts, stream.skipped)
                window, stream.skipped = LogWindow(run.device), 0
                if run.metrics is not None:
                    run.metrics.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}", img_s=f"{row['images_per_s']:.1f}")
            if due(state.step, config.eval_every) and not last:
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
