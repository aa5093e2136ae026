"""Training throughput: the training step against the data pipeline."""

from __future__ import annotations

import functools
import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..inference.timing import synchronize
from ..models import place_on_device
from ..utils.errors import UserError
from .machine import check_device, load_average, machine_info
from .models import DEFAULT_TRAIN_MODELS, build_benchmark_model

SCALE_RANGE = (0.5, 2.0)  # the paper's random rescale, for both data pipelines timed


def synthetic_root_for(size: tuple[int, int], count: int, root: Path) -> Path:
    from ..data import generate_synthetic

    return generate_synthetic(root, num_train=count, num_val=0, size=size, seed=0)


def _rates(times: Sequence[float], per: int) -> dict[str, Any]:
    median = statistics.median(times)
    return {
        "images_per_s": per / median,
        "step_ms": 1000 * median,
        "runs": len(times),
        "step_min_ms": 1000 * min(times),
        "step_max_ms": 1000 * max(times),
    }


def time_train_steps(
    name: str,
    *,
    crop: int,
    batch: int,
    steps: int,
    warmup: int,
    device: torch.device,
    precision: str,
    width: float | None,
    num_classes: int,
    batches: Callable[[], tuple[Tensor, Tensor]] | None = None,
) -> dict[str, Any]:
    """Training-step throughput on one random batch resident on the device (the step alone), or on ``batches()``
    when given (end to end: loading and the copy to the device are timed too)."""
    from ..training.config import TrainConfig
    from ..training.losses import CascadeLoss
    from ..training.trainer import TrainState, train_step

    model = place_on_device(build_benchmark_model(name, width=width, num_classes=num_classes), device).train()
    config = TrainConfig(model=name, crop_size=crop, batch_size=batch, max_steps=10**6, precision=precision)
    criterion = CascadeLoss(model.aux_keys, model.config.aux_weights).to(device)
    state = TrainState(model, config)
    gen = torch.Generator().manual_seed(0)

    def random_batch() -> tuple[Tensor, Tensor]:
        images = torch.randn(batch, 3, crop, crop, generator=gen)
        labels = torch.randint(0, num_classes, (batch, crop, crop), generator=gen)
        return images, labels

    if batches is None:  # the step alone: one batch made on the device before timing, reused
        resident = tuple(t.to(device) for t in random_batch())
        source: Callable[[], tuple[Tensor, Tensor]] = lambda: resident  # noqa: E731
    else:
        source = batches
    times = []
    for i in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        images, labels = source()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        train_step(model, criterion, state, images, labels, config)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return _rates(times, batch)


def batches_of(loader, device: torch.device | None = None, crop: tuple[int, int] | None = None
               ) -> Callable[[], tuple[Tensor, Tensor]]:
    """A function returning the loader's next (images, labels); with ``device``, on it as the trainer puts them there
    (uint8 images normalised, or whole frames rescaled and cropped to ``crop``, on the device:
    :func:`~aticnet.data.loader.batch_to_device`)."""
    from ..data.loader import batch_to_device
    from ..models.config import IMAGENET_MEAN, IMAGENET_STD

    it = iter(loader)
    normalize = None if device is None else tuple(torch.tensor(v, device=device).view(1, -1, 1, 1)
                                                  for v in (IMAGENET_MEAN, IMAGENET_STD))

    def next_batch() -> tuple[Tensor, Tensor]:
        *batch, _skipped = next(it)
        return tuple(batch) if device is None else batch_to_device(tuple(batch), device, normalize, crop)

    return next_batch


def time_pipeline(dataset, *, batch: int, workers: int, batches: int) -> dict[str, Any]:
    """Images/s the training loader delivers (decode + augment + collate in ``workers`` processes).

    The batches its processes make before anyone asks (two each) are taken untimed; then ``batches`` batches
    are timed as one stretch, so the workers' parallelism counts and nothing made beforehand does.
    """
    from ..data.loader import train_loader

    loader = train_loader(dataset, batch, seed=0, rank=0, world_size=1, start_step=0, workers=workers)
    it = iter(loader)
    for _ in range(1 + 2 * workers):
        next(it)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, *_rest = next(it)
        n += images.shape[0]
    elapsed = time.perf_counter() - start
    del it
    return {"images_per_s": n / elapsed, "batch_ms": 1000 * elapsed / batches, "batches": batches, "workers": workers}


def benchmark_training(
    models: Sequence[str] = DEFAULT_TRAIN_MODELS,
    *,
    crop: int = 720,
    batch: int = 8,
    workers: int = 2,
    steps: int = 5,
    warmup: int = 1,
    pipeline_batches: int = 10,
    device: str | torch.device = "cpu",
    precision: str = "32",
    width: float | None = None,
    dataset: str = "synthetic",
    data_root: str | None = None,
    data_size: tuple[int, int] = (1024, 2048),
    data_images: int = 16,
    end_to_end: bool = True,
    compare_transforms: bool = True,
    transform_factory: Callable[..., Any] | None = None,
    command: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Images/s of the training step (random data) and of the data pipeline, then both together."""
    from ..data import TrainTransform, build_dataset
    from ..models.config import IMAGENET_MEAN, IMAGENET_STD
    from ..training.config import TrainConfig

    device = torch.device(device)
    check_device(device, [precision])
    result: dict[str, Any] = {
        "command": command,
        "mode": "train",
        **machine_info(device),
        "crop_size": crop,
        "batch_size": batch,
        "workers": workers,
        "precision": precision,
        "width": width,
        "load_avg_start": load_average(),
    }
    TrainConfig(crop_size=crop, batch_size=batch, precision=precision)  # the same validation as ``train``
    factory = transform_factory or TrainTransform
    with tempfile.TemporaryDirectory(prefix="aticnet-bench-") as tmp:
        root, data_desc = _data_root(dataset, data_root, data_size, data_images, Path(tmp), log)
        # on a GPU the frames travel as bytes and are rescaled, cropped and normalised there, as the trainer does
        uint8 = {"uint8": True, "defer": True} if device.type == "cuda" and factory is TrainTransform else {}
        transform = factory(crop, scale_range=SCALE_RANGE, mean=IMAGENET_MEAN, std=IMAGENET_STD, **uint8)
        train_set = build_dataset(dataset, root, "train", transform=transform)
        result["data"] = data_desc
        result["num_classes"] = train_set.num_classes
        log(f"data pipeline: {data_desc}, {workers} worker(s), batch {batch}")
        result["pipeline"] = time_pipeline(train_set, batch=batch, workers=workers, batches=pipeline_batches)
        result["pipeline"]["transform"] = repr(transform)
        if compare_transforms and transform_factory is None:
            result["pipeline_composed"] = _time_composed_pipeline(train_set, crop, batch=batch, workers=workers,
                                                                  batches=pipeline_batches, log=log)
        result["step"], result["end_to_end"] = _time_models(
            models, train_set, crop=crop, batch=batch, workers=workers, steps=steps, warmup=warmup, device=device,
            precision=precision, width=width, end_to_end=end_to_end, log=log)
    pipe = result["pipeline"]["images_per_s"]
    fastest_step = max(r["images_per_s"] for r in result["step"].values())
    result["bound"] = "data pipeline" if pipe < fastest_step else "training step"
    result["load_avg_end"] = load_average()
    return result


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


def _time_composed_pipeline(train_set: Any, crop: int, *, batch: int, workers: int, batches: int,
                            log: Callable[[str], None]) -> dict[str, Any]:
    """The pipeline timed again with ComposedTrainTransform (the same samples); the data set's transform is put back."""
    from ..data.transforms import ComposedTrainTransform
    from ..models.config import IMAGENET_MEAN, IMAGENET_STD

    transform = train_set.transform
    train_set.transform = ComposedTrainTransform(crop, scale_range=SCALE_RANGE, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    log("data pipeline again with ComposedTrainTransform (same output, normalise before cropping)")
    try:
        alt = time_pipeline(train_set, batch=batch, workers=workers, batches=batches)
        return {**alt, "transform": repr(train_set.transform)}
    finally:
        train_set.transform = transform


def _time_models(models: Sequence[str], train_set: Any, *, crop: int, batch: int, workers: int, steps: int,
                 warmup: int, device: torch.device, precision: str, width: float | None, end_to_end: bool,
                 log: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """({model: training step on random data}, {model: loader + step}) images/s."""
    step: dict[str, Any] = {}
    both: dict[str, Any] = {}
    for name in models:
        # the models compute channels-last by default (ModelConfig.channels_last), so this step is NHWC already
        time_steps = functools.partial(
            time_train_steps, name, crop=crop, batch=batch, steps=steps, warmup=warmup, device=device,
            precision=precision, width=width, num_classes=train_set.num_classes,
        )
        log(f"training step of {name}: crop {crop}, batch {batch}, {steps} steps after {warmup} warm-up")
        step[name] = time_steps()
        if end_to_end:
            from ..data.loader import train_loader

            loader = train_loader(train_set, batch, seed=0, rank=0, world_size=1, start_step=0, workers=workers)
            from_loader = batches_of(loader, device if device.type == "cuda" else None, (crop, crop))
            log(f"  {name} end to end (loader + step)")
            # the loader's processes fill a buffer of 2 batches each before the first step: drained untimed; and the
            # workers deliver in bursts (each makes a whole batch), so the timed stretch spans several rounds of them
            both[name] = time_steps(batches=from_loader, warmup=warmup + 2 * workers, steps=max(steps, 6 * workers))
            del from_loader, loader  # the last reference to the iterator: its workers stop
            gc.collect()
    return step, both


def format_training(result: dict[str, Any]) -> str:
    p = result["pipeline"]
    lines = [
        (
            f"{result['device']} ({result.get('gpu') or result['cpu']['model']}), {result['threads']} threads, torch "
            f"{result['torch']}, crop {result['crop_size']}, batch {result['batch_size']}, precision {result['precision']}"
        ),
        f"data pipeline ({result['data']}, {p['workers']} workers): {p['images_per_s']:.2f} images/s",
    ]
    alt = result.get("pipeline_composed")
    if alt:
        lines.append(f"data pipeline with ComposedTrainTransform (same samples, v2.Compose): {alt['images_per_s']:.2f} images/s")
    for name, r in result["step"].items():
        e2e = result["end_to_end"].get(name)
        tail = f"; with the loader {e2e['images_per_s']:.2f}" if e2e else ""
        lines.append(f"training step {name:<12}: {r['images_per_s']:.2f} images/s ({r['step_ms']:.0f} ms/step){tail}")
    lines.append(
        f"bound by: {result['bound']}; load average: start {result['load_avg_start']}, end {result['load_avg_end']}"
    )
    return "\n".join(lines)
