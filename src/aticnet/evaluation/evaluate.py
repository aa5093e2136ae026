"""Whole-image evaluation of a model: confusion matrix, mIoU and friends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..data.transforms import normalize_uint8
from ..inference.labels import labels_from_logits, upsample_argmax
from ..utils.distributed import all_reduce_sum
from ..utils.errors import UserError
from .metrics import ConfusionMatrix


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for "bf16" or "16"; a no-op for "32"."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def normalize_on_device(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """N x 3 x H x W uint8 -> float32 normalised, where the images are (the operations of the CPU transforms:
    [`normalize_uint8`][aticnet.data.transforms.normalize_uint8])."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).to(images.device, non_blocking=True)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).to(images.device, non_blocking=True)
    return normalize_uint8(images, m, s)


def predict_logits(model: nn.Module, images: Tensor, *, flip: bool = False, scales: Sequence[float] = (1.0,)) -> Tensor:
    """N x 3 x H x W normalised images -> N x K x H x W scores at the input size.

    With ``flip`` or several ``scales`` the softmax probabilities of every view are averaged.
    """
    if not flip and tuple(scales) == (1.0,):
        return model(images)
    size = images.shape[-2:]
    total = None
    for scale in scales:
        view = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            x = view.flip(-1) if flipped else view
            logits = model(x)
            logits = logits.flip(-1) if flipped else logits
            probs = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False).softmax(1)
            total = probs if total is None else total + probs
    return total


def predict_labels(model: nn.Module, images: Tensor, *, flip: bool = False, scales: Sequence[float] = (1.0,)) -> Tensor:
    """N x 3 x H x W normalised images -> N x H x W labels of an eval-mode model.

    A single view takes the model's low-res logits and, on the CPU, the fast, exact labels step
    (``aticnet.inference.labels.labels_from_logits``); on a GPU the plain upsample and argmax, which run
    there without a wait for the host. Flips and scales average probabilities."""
    if not flip and tuple(scales) == (1.0,) and hasattr(model, "forward_lowres"):
        low = model.forward_lowres(images).float()
        if images.device.type == "cuda":
            return upsample_argmax(low, tuple(images.shape[-2:]), model.config.align_corners)
        return labels_from_logits(low, tuple(images.shape[-2:]), model.config.align_corners)
    return predict_logits(model, images, flip=flip, scales=scales).argmax(1)


@torch.inference_mode()
def evaluate_model(
    model: nn.Module | Any,
    loader: Iterable,
    *,
    num_classes: int,
    class_names: Sequence[str],
    device: torch.device,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    precision: str = "32",
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``model`` (an ``nn.Module``, or a ``Segmenter`` on any engine) on every (image, label) pair of
    ``loader``, at full resolution.

    Under torch.distributed each process scores its share and the confusion matrices are
    summed. Returns the scores of ``ConfusionMatrix.compute`` plus ``num_images``,
    ``seconds`` and ``images_per_s``.
    """
    module = model if isinstance(model, nn.Module) else None
    if module is None and (flip or tuple(scales) != (1.0,)):
        raise UserError("flip and multi-scale evaluation run PyTorch models only; give a run or .safetensors")
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    matrix = ConfusionMatrix(num_classes, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    start = time.perf_counter()
    for images, labels in tqdm(loader, desc="eval", leave=False, disable=not progress, unit="img"):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if images.dtype == torch.uint8:  # loaded as bytes (EvalTransform(uint8=True)): normalise here
            images = (normalize_on_device(images, module.config.mean, module.config.std) if module is not None
                      else model.normalize(images.float() / 255))
        if module is None:
            predicted = model.labels_of_normalized(images)
        else:
            with autocast(device, precision):
                predicted = predict_labels(module, images, flip=flip, scales=scales)
        matrix.update(predicted.to(labels.device), labels)
        count += images.shape[0]
    matrix.reduce()
    all_reduce_sum(count)
    seconds = time.perf_counter() - start
    if module is not None:
        module.train(was_training)
    result = matrix.compute(class_names)
    result.update(num_images=int(count), seconds=seconds, images_per_s=int(count) / max(seconds, 1e-9))
    return result


def evaluate(
    weights: str | Path,
    dataset: str,
    data_root: str | Path,
    split: str = "val",
    *,
    device: str = "auto",
    workers: int = 2,
    max_images: int | None = None,
    flip: bool = False,
    scales: Sequence[float] | None = None,
    precision: str = "32",
    drives: Sequence[str] | None = None,
    backend: str | None = None,
    infer_scale: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores of a model on a labelled split, at full resolution: what ``aticnet evaluate`` prints.

    Examples:
        >>> import aticnet
        >>> scores = aticnet.evaluate("aticnet-camvid", "camvid", "CAMVID", "test")
        >>> scores["miou"], scores["per_class_iou"]["Car"]

    Args:
        weights: any deployable form [`aticnet.load`][aticnet.load] takes (a shipped name, a run, ``.safetensors``,
            ``.onnx``, OpenVINO ``.xml``, TorchScript).
        dataset: the data set's name, as [`aticnet.build_dataset`][aticnet.build_dataset] takes it.
        data_root: its top folder.
        split: the labelled split to score (``"val"``, ``"test"``, ``"train+val"``, ...).
        device: where the model runs, as [`aticnet.load`][aticnet.load] takes it.
        workers: loader processes.
        max_images: score the first N images only.
        flip: average with the mirrored view (PyTorch models only).
        scales: average over the network run at these multiples of each image's size (PyTorch models only;
            None: the scale the weights were trained for alone).
        precision: "32", or "bf16" (OpenVINO, or PyTorch under autocast).
        drives: score these drives only (CamVid's file-name prefix, Cityscapes' city).
        backend: the engine, as [`aticnet.load`][aticnet.load] takes it.
        infer_scale: run the network at this multiple of each image's size on ``aticnet.load``'s engines (None:
            a run or ``.safetensors`` is scored with PyTorch as it is, at the scale it was trained for; a deployed
            file at the scale it says).
        progress: show a progress bar.

    Returns:
        The scores, as fractions in [0, 1] (a class absent from both ground truth and prediction has None).
            ``miou``, ``per_class_iou`` and ``per_class_accuracy`` (class name to value), ``mean_accuracy``,
            ``pixel_accuracy``, ``missed_as`` (per class, the class that took most of its missed pixels and its
            share), ``num_pixels``, ``num_images`` and ``seconds``.

    Raises:
        UserError: the model's classes do not match the data set's, or the weights cannot be loaded.
    """
    from ..data import EvalTransform, build_dataset
    from ..data.loader import eval_loader
    from ..inference.backends import trained_scale
    from ..inference.segmenter import load
    from ..models.weights import load_model
    from ..utils.distributed import pick_device

    device_ = pick_device(device)
    suffix = Path(weights).suffix.lower()
    deployed = suffix in (".onnx", ".xml", ".ts", ".torchscript", ".pt", ".pth") or backend not in (None, "torch")
    if flip or scales is not None or (not deployed and infer_scale in (None, 1)):
        model, meta = load_model(weights, device_)  # the module itself: autocast, flips and scales apply
        num_classes, mean, std = model.config.num_classes, model.config.mean, model.config.std
        scales = (trained_scale(meta, infer_scale),) if scales is None else tuple(scales)
    else:
        on_openvino = backend == "openvino" or suffix == ".xml"
        model = load(weights, device_, backend=backend, infer_scale=infer_scale,
                     precision=precision if on_openvino else "32")
        num_classes, mean, std = model.num_classes, model.mean.flatten().tolist(), model.std.flatten().tolist()
        device_, scales = model.device, (1.0,)  # the segmenter runs the network at its own infer_scale
    data = build_dataset(dataset, data_root, split, EvalTransform(mean=mean, std=std), drives=drives)
    if data.num_classes != num_classes:
        raise UserError(f"{weights}: the model predicts {num_classes} classes, {dataset} has {data.num_classes}")
    loader = eval_loader(data, workers=workers, max_images=max_images)
    return evaluate_model(model, loader, num_classes=data.num_classes, class_names=data.classes, device=device_, flip=flip,
                    scales=scales, precision=precision, progress=progress)
