"""Training throughput: the training step alone, the data pipeline per ``--cache`` mode, and both together.

* The step alone runs on one batch resident on the device, in variants that add one change each
  ([`STEP_VARIANTS`][aticnet.benchmark.training.STEP_VARIANTS]: channels-last weights, a fused optimiser with no
  read-back per step, ``torch.compile``), so each change shows its gain; the last variant is the trainer's.
* The pipeline per cache mode delivers batches as the trainer takes them, on the device: ``none`` decodes every
  sample in the loader's processes, ``memory`` copies decoded frames out of a memory-mapped file there, ``device``
  makes the batches from frames resident on the device. Building a cache is timed apart.
* End to end, per cache mode and model: the trainer's step fed by that pipeline, timed over a stretch of steps
  (at least 100 by default) that starts once the batches the loader made before anyone asked are used up, so the
  figure shows which side bounds training.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.cache import CACHE_MODES
from ..inference.timing import synchronize
from ..utils.errors import UserError
from .machine import check_device, load_average, machine_info
from .models import DEFAULT_TRAIN_MODELS, build_benchmark_model

SCALE_RANGE = (0.5, 2.0)  # the paper's random rescale, for every data pipeline timed

# Each variant adds one change to the one before it; the last is how ``aticnet train`` runs the step.
STEP_VARIANTS: dict[str, dict[str, bool]] = {
    "baseline": {"channels_last": False, "fused": False, "compile": False},  # NCHW, multi-tensor optimiser, 1 wait
    "channels_last": {"channels_last": True, "fused": False, "compile": False},  # NHWC weights and activations
    "fused": {"channels_last": True, "fused": True, "compile": False},  # fused optimiser, no wait per step
    "compile": {"channels_last": True, "fused": True, "compile": True},  # and torch.compile (Inductor)
}


def synthetic_root_for(size: tuple[int, int], count: int, root: Path) -> Path:
    from ..data import generate_synthetic

    return generate_synthetic(root, num_train=count, num_val=0, size=size, seed=0)


def _rate(seconds: float, steps: int, per_step: int) -> dict[str, Any]:
    return {"images_per_s": steps * per_step / seconds, "step_ms": 1000 * seconds / steps, "steps": steps}


def _step_setup(name: str, variant: str, *, crop: int, batch: int, device: torch.device, precision: str,
                width: float | None, num_classes: int) -> Callable[[Tensor, Tensor], None]:
    """One training step of ``name`` as ``variant`` runs it: a function of (images, labels) on the device."""
    from ..models import place_on_device
    from ..training.config import TrainConfig
    from ..training.losses import CascadeLoss
    from ..training.recipe import build_optimizer, build_scheduler
    from ..training.state import TrainState
    from ..training.step import Compiled, apply_update, finite_everywhere, forward_loss

    options = STEP_VARIANTS[variant]
    model = build_benchmark_model(name, width=width, num_classes=num_classes)
    if hasattr(model, "config") and not options["channels_last"]:
        model.config = dataclasses.replace(model.config, channels_last=False)
    model = place_on_device(model, device).train()
    config = TrainConfig(model=name, crop_size=crop, batch_size=batch, max_steps=10**6, precision=precision)
    criterion = CascadeLoss(model.aux_keys, model.config.aux_weights).to(device)
    state = TrainState(model, config)
    if not options["fused"]:  # the multi-tensor optimiser, which reads the loss's verdict back every step
        state.optimizer = build_optimizer(model, config, fused=False)
        state.scheduler = build_scheduler(state.optimizer, config)
    forward = Compiled(model) if options["compile"] else model

    def step(images: Tensor, labels: Tensor) -> None:
        loss, _ = forward_loss(forward, criterion, images, labels, config)
        apply_update(forward, state, loss, finite_everywhere(loss), config)

    return step


def time_train_steps(name: str, *, crop: int, batch: int, steps: int, warmup: int, device: torch.device,
                     precision: str, width: float | None, num_classes: int, variant: str = "fused",
                     batches: Callable[[], tuple[Tensor, Tensor]] | None = None) -> dict[str, Any]:
    """Images/s of the training step over a stretch of ``steps`` steps after ``warmup`` untimed ones: on one random
    batch resident on the device (the step alone), or on ``batches()`` (end to end: whatever makes the batches is
    timed too). The device is waited for only at the stretch's two ends."""
    step = _step_setup(name, variant, crop=crop, batch=batch, device=device, precision=precision, width=width,
                       num_classes=num_classes)
    if batches is None:
        gen = torch.Generator().manual_seed(0)
        resident = (torch.randn(batch, 3, crop, crop, generator=gen).to(device),
                    torch.randint(0, num_classes, (batch, crop, crop), generator=gen).to(device))
        batches = lambda: resident  # noqa: E731
    for _ in range(warmup):
        step(*batches())
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(*batches())
    synchronize(device)
    return {**_rate(time.perf_counter() - start, steps, batch), "variant": variant}


def time_pipeline(make_batches: Callable[[], Iterator[tuple[Tensor, Tensor]]], *, batch: int, workers: int,
                  batches: int, device: torch.device) -> dict[str, Any]:
    """Images/s of ready batches on the device: the batches the loader's processes make before anyone asks (two
    each) are taken untimed, then ``batches`` batches are timed as one stretch."""
    it = make_batches()
    for _ in range(1 + 2 * workers):
        next(it)
    synchronize(device)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, _labels = next(it)
        n += images.shape[0]
    synchronize(device)
    elapsed = time.perf_counter() - start
    it.close()  # its loader's processes stop
    return {"images_per_s": n / elapsed, "batch_ms": 1000 * elapsed / batches, "batches": batches, "workers": workers}


def benchmark_training(
    models: Sequence[str] = DEFAULT_TRAIN_MODELS,
    *,
    crop: int = 720,
    batch: int = 8,
    workers: int = 2,
    caches: Sequence[str] = ("none",),
    step_variants: Sequence[str] | None = None,
    steps: int = 5,
    warmup: int = 1,
    pipeline_batches: int = 10,
    end_to_end_steps: int = 100,
    device: str | torch.device = "cpu",
    precision: str = "32",
    width: float | None = None,
    dataset: str = "synthetic",
    data_root: str | None = None,
    data_size: tuple[int, int] = (1024, 2048),
    data_images: int = 16,
    end_to_end: bool = True,
    command: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """The training step (per variant), the data pipeline per cache mode, then both together.

    Args:
        models: model names (ours or torchvision's peers).
        crop: square training crop; batch: images per step; workers: loader processes (``none``, ``memory``).
        caches: the ``--cache`` modes to time (none, memory, device).
        step_variants: names of ``STEP_VARIANTS`` to time the step alone in (default: the trainer's, plus the
            ladder from ``baseline`` on a GPU).
        steps, warmup: timed and untimed steps of the step alone; pipeline_batches: timed batches per pipeline;
            end_to_end_steps: timed steps end to end (``end_to_end``: whether to time them at all).
        device, precision, width: where and how the models train.
        dataset, data_root: the data set timed (default: ``data_images`` synthetic scenes of ``data_size``).
        command: the command line, recorded; log: progress lines.

    Returns:
        The report: ``pipelines`` (mode -> images/s, ms per batch), ``cache_build_s``, ``step`` (model -> the
        trainer's step), ``step_variants`` (model -> variant -> step), ``end_to_end`` (mode -> model -> images/s)
        and ``bound`` (mode -> model -> "data pipeline" or "training step"), with the machine's description.
    """
    from ..data import build_dataset
    from ..training.config import TrainConfig

    device = torch.device(device)
    check_device(device, [precision])
    variants = _step_variants(caches, step_variants, device)
    result: dict[str, Any] = {
        "command": command, "mode": "train", **machine_info(device), "crop_size": crop, "batch_size": batch,
        "workers": workers, "precision": precision, "width": width, "caches": list(caches),
        "load_avg_start": load_average(),
    }
    TrainConfig(crop_size=crop, batch_size=batch, precision=precision)  # the same validation as ``train``
    with tempfile.TemporaryDirectory(prefix="aticnet-bench-") as tmp:
        root, data_desc = _data_root(dataset, data_root, data_size, data_images, Path(tmp), log)
        train_set = build_dataset(dataset, root, "train")
        result["data"], result["num_classes"] = data_desc, train_set.num_classes
        feeds = {mode: _Feed(train_set, mode, crop=crop, batch=batch, workers=workers, device=device,
                             folder=Path(tmp) / "frames", log=log) for mode in caches}
        result["cache_build_s"] = {mode: feed.build_s for mode, feed in feeds.items() if feed.frames is not None}
        result["pipelines"] = {}
        for mode, feed in feeds.items():
            log(f"data pipeline, --cache {mode}: {data_desc}, {feed.workers} worker(s), batch {batch}")
            result["pipelines"][mode] = {**time_pipeline(feed.batches, batch=batch, workers=feed.workers,
                                                         batches=pipeline_batches, device=device),
                                         "transform": repr(feed.transform)}
        result["step_variants"] = _time_steps(models, variants, crop=crop, batch=batch, steps=steps, warmup=warmup,
                                              device=device, precision=precision, width=width,
                                              num_classes=train_set.num_classes, log=log)
        result["step"] = {name: by_variant[variants[-1]] for name, by_variant in result["step_variants"].items()}
        result["end_to_end"] = {mode: _time_end_to_end(models, feed, crop=crop, batch=batch, steps=end_to_end_steps,
                                                       device=device, precision=precision, width=width,
                                                       variant=variants[-1], log=log)
                                for mode, feed in feeds.items()} if end_to_end else {}
    result["bound"] = {mode: {name: "data pipeline" if pipe["images_per_s"] < step["images_per_s"] else "training step"
                              for name, step in result["step"].items()}
                       for mode, pipe in result["pipelines"].items()}
    result["load_avg_end"] = load_average()
    return result


def _step_variants(caches: Sequence[str], step_variants: Sequence[str] | None, device: torch.device) -> list[str]:
    """The step variants to time (default: the trainer's, and the ladder to it on a GPU); unknown names refused."""
    unknown = [c for c in caches if c not in CACHE_MODES] + [v for v in step_variants or () if v not in STEP_VARIANTS]
    if unknown:
        raise UserError(f"unknown cache mode or step variant {', '.join(unknown)}: caches are "
                        f"{', '.join(CACHE_MODES)}, variants {', '.join(STEP_VARIANTS)}")
    return list(step_variants or (list(STEP_VARIANTS)[:-1] if device.type == "cuda" else ["fused"]))


class _Feed:
    """One ``--cache`` mode's batches of ``train_set``, as ``aticnet train`` makes them: its transform (on a GPU,
    or with the device cache, the loader only decodes and the device augments), its decoded frames (built here,
    timed apart) and its loader processes."""

    def __init__(self, train_set: Any, mode: str, *, crop: int, batch: int, workers: int, device: torch.device,
                 folder: Path, log: Callable[[str], None]) -> None:
        from ..data import TrainTransform
        from ..data.cache import open_frames
        from ..models.config import IMAGENET_MEAN, IMAGENET_STD

        on_device = mode == "device" or device.type == "cuda"
        self.train_set, self.mode, self.crop, self.batch, self.device = train_set, mode, crop, batch, device
        self.workers = 0 if mode == "device" else workers
        self.transform = TrainTransform(crop, scale_range=SCALE_RANGE, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                        uint8=on_device, defer=on_device)
        self.frames, self.build_s = None, 0.0
        if mode != "none":
            start = time.perf_counter()
            self.frames = open_frames(train_set, mode, device=device, folder=folder, workers=max(workers, 1), say=log)
            self.build_s = time.perf_counter() - start

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches on the device, endless: (N x 3 x crop x crop float32 images, N x crop x crop labels)."""
        from ..data.cache import DeviceBatches, DeviceFrames
        from ..data.loader import StreamSampler, batch_to_device, train_loader
        from ..models.config import IMAGENET_MEAN, IMAGENET_STD

        train_set, device = self.train_set, self.device
        normalize = tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
        train_set.transform = self.transform
        if self.mode == "device":
            sampler = StreamSampler(len(train_set), self.batch, seed=0)
            source: Any = DeviceBatches(DeviceFrames(self.frames, device), self.transform, sampler)
        else:
            train_set.decoded = self.frames
            source = train_loader(train_set, self.batch, seed=0, rank=0, world_size=1, start_step=0,
                                  workers=self.workers)
        try:
            for *parts, _errors in source:
                yield batch_to_device(tuple(parts), device, normalize, (self.crop, self.crop))
        finally:
            train_set.decoded = None


def _time_steps(models: Sequence[str], variants: Sequence[str], *, log: Callable[[str], None], **common: Any
                ) -> dict[str, dict[str, Any]]:
    """{model: {variant: the step alone}}."""
    out: dict[str, dict[str, Any]] = {}
    for name in models:
        for variant in variants:
            log(f"training step of {name} ({variant}): crop {common['crop']}, batch {common['batch']}, "
                f"{common['steps']} steps after {common['warmup']} warm-up")
            out.setdefault(name, {})[variant] = time_train_steps(name, variant=variant, **common)
    return out


def _time_end_to_end(models: Sequence[str], feed: _Feed, *, crop: int, batch: int, steps: int, device: torch.device,
                     log: Callable[[str], None], **common: Any) -> dict[str, Any]:
    """{model: the trainer's step fed by ``feed``}, timed after the loader's head start is used up."""
    out = {}
    for name in models:
        it = feed.batches()
        log(f"  {name} end to end with --cache {feed.mode}: {steps} steps")
        # the loader's processes fill a buffer of 2 batches each before the first step: used up untimed
        out[name] = time_train_steps(name, crop=crop, batch=batch, steps=steps, warmup=1 + 2 * feed.workers,
                                     device=device, num_classes=feed.train_set.num_classes,
                                     batches=functools.partial(next, it), **common)
        it.close()
        del it
        gc.collect()
    return out


def _data_root(dataset: str, data_root: str | None, data_size: tuple[int, int], data_images: int, tmp: Path,
               log: Callable[[str], None]) -> tuple[Path, str]:
    """(root, description) of the data to time: the given root, or synthetic scenes generated under ``tmp``."""
    if data_root is not None:
        return Path(data_root), f"{dataset} at {data_root}"
    if dataset != "synthetic":
        raise UserError("--data-root is needed for a data set other than synthetic")
    log(f"generating {data_images} synthetic scenes of {data_size[0]}x{data_size[1]} in a temporary folder")
    root = synthetic_root_for(data_size, data_images, tmp / "synthetic")
    return root, f"synthetic, {data_images} scenes of {data_size[0]}x{data_size[1]} (PNG)"


def format_training(result: dict[str, Any]) -> str:
    """The report as a few lines of text (what ``aticnet benchmark --train`` prints)."""
    from .tables import train_views

    pipelines, end_to_end, _ = train_views(result)
    lines = [
        f"{result['device']} ({result.get('gpu') or result['cpu']['model']}), {result['threads']} threads, torch "
        f"{result['torch']}, crop {result['crop_size']}, batch {result['batch_size']}, precision {result['precision']}"]
    for mode, p in pipelines.items():
        lines.append(f"data pipeline --cache {mode} ({result['data']}, {p['workers']} workers): "
                     f"{p['images_per_s']:.2f} images/s")
    for name, by_variant in result.get("step_variants", {}).items():
        for variant, r in by_variant.items():
            lines.append(f"training step {name:<8} {variant:<14}: {r['images_per_s']:.2f} images/s "
                         f"({r['step_ms']:.0f} ms/step)")
    for mode, by_model in end_to_end.items():
        for name, r in by_model.items():
            lines.append(f"end to end {name:<8} --cache {mode:<7}: {r['images_per_s']:.2f} images/s "
                         f"({r['images_per_s'] / result['step'][name]['images_per_s']:.2f}x the step alone)")
    lines.append(f"load average: start {result['load_avg_start']}, end {result['load_avg_end']}")
    return "\n".join(lines)
