"""What a training config asks for, built: data sets, model, loss, optimiser and schedule.

Each function takes the ``aticnet.training.config.TrainConfig`` (and what was built before it)
and returns one thing, so ``train`` reads as a list of them and a test can build any piece alone.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LinearLR, LRScheduler, PolynomialLR, SequentialLR

from ..data import EvalTransform, SegmentationDataset, TrainTransform, build_dataset
from ..data.loader import handle_unreadable
from ..models import ModelConfig, model_config, model_from_config
from ..models.weights import load_matching, read_weights
from ..utils.errors import DataError, UserError
from .config import TrainConfig
from .losses import OHEM, CascadeLoss

log = logging.getLogger(__name__)


def build_datasets(config: TrainConfig, *, uint8_images: bool = False, augment_on_device: bool = False
                   ) -> tuple[SegmentationDataset, SegmentationDataset | None, ModelConfig]:
    """(train set, val set or None, model config): the model's normalisation decides the transforms.

    With ``holdout_drive`` the drive's frames leave the training split and become the val set. With
    ``uint8_images`` both sets yield uint8 images, to be normalised on the device; with ``augment_on_device`` the
    training set yields whole frames and the random draws, for ``aticnet.data.device_augment``.
    """
    held_out = [config.holdout_drive] if config.holdout_drive else []
    train_set = build_dataset(config.dataset, config.data_root, config.train_split, exclude_drives=held_out)
    mcfg = network_config(config, train_set.num_classes)
    train_set.transform = TrainTransform(config.crop_hw, scale_range=config.scale_range, color_jitter=config.color_jitter,
                                         mean=mcfg.mean, std=mcfg.std, uint8=uint8_images, defer=augment_on_device)
    transform = EvalTransform(mean=mcfg.mean, std=mcfg.std, uint8=uint8_images)
    val_set = None
    if held_out:
        val_set = build_dataset(config.dataset, config.data_root, config.train_split, transform, drives=held_out)
    elif config.val_split:
        val_set = build_dataset(config.dataset, config.data_root, config.val_split, transform)
    return train_set, val_set, mcfg


def augments_on_device(config: TrainConfig, device: torch.device, train_set: SegmentationDataset) -> bool:
    """Whether the device does the colour jitter, rescale and crop (``augment_on``): always with ``cache`` device
    (its batches are made there); "auto" picks it on a GPU when every frame has one size (a batch of whole frames
    from the loader must stack)."""
    if config.cache == "device":
        return True
    if config.augment_on == "cpu" or (config.augment_on == "auto" and device.type != "cuda"):
        return False
    sizes = train_set.frame_sizes()
    if len(sizes) > 1:
        if config.augment_on == "device":
            shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:4])
            raise UserError(f"{config.data_root}: --augment-on device needs frames of one size, not {shown}...; "
                            "use --augment-on cpu, or --cache device")
        log.info("augmentation on the CPU: the frames differ in size (%d sizes)", len(sizes))
        return False
    return True


def network_config(config: TrainConfig, num_classes: int) -> ModelConfig:
    """The model config that ``config`` asks for (model, width, options, aux weights), with ``num_classes`` outputs."""
    overrides = dict(config.model_options)
    if config.width is not None:
        overrides["width"] = config.width
    if config.aux_weights is not None:
        overrides["aux_weights"] = config.resolved_aux_weights
    try:
        return model_config(config.model, num_classes=num_classes, **overrides)
    except (ValueError, TypeError) as e:
        raise UserError(f"model {config.model!r}: {e}") from None


def build_network(mcfg: ModelConfig, config: TrainConfig) -> nn.Module:
    """The network, warm-started from ``config.init`` (what fits) and with its trunk frozen when asked."""
    model = model_from_config(mcfg)
    if config.init:
        tensors, _ = read_weights(config.init)
        report = load_matching(model, tensors, str(config.init))
        log.info("init from %s: %d tensors loaded, %d started fresh%s, %d in the file unused%s", config.init,
                 len(report["loaded"]), len(report["reinitialised"]), _examples(report["reinitialised"]),
                 len(report["unexpected"]), _examples(report["unexpected"]))
    if config.freeze_trunk:
        if not config.init:
            raise UserError("--freeze-trunk keeps the trunk as --init left it: give --init too")
        for p in model.trunk.parameters():
            p.requires_grad_(False)
    return model


def _examples(names: list[str]) -> str:
    return f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""


def class_weights_for(dataset: SegmentationDataset, num_classes: int, strict: bool = False) -> torch.Tensor:
    """ENet's weighting, 1 / ln(1.02 + p_c), from the training labels' class frequencies p_c."""
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


def build_loss(model: nn.Module, config: TrainConfig, train_set: SegmentationDataset) -> CascadeLoss:
    """The cascade loss of ``model`` with the config's class weighting and pixel mining."""
    mcfg = model.config
    weights = class_weights_for(train_set, mcfg.num_classes, config.strict) if config.class_weights == "inverse_log" else None
    ohem = OHEM(config.ohem_threshold, config.ohem_min_kept) if config.loss == "ohem" else None
    return CascadeLoss(model.aux_keys, mcfg.aux_weights, class_weights=weights, upsample_logits=mcfg.loss_on == "labels",
                       align_corners=mcfg.align_corners, ohem=ohem)


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """The trainable parameters; with ``weight_decay_scope="weights"`` only conv and linear weights decay.

    Caffe's ICNet and PSPNet releases set ``decay_mult: 0`` on BatchNorm and bias terms and the
    TensorFlow port decays conv weights only: decaying BN scales pulls them towards 0 for no gain.
    """
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if config.weight_decay_scope == "all":
        return [{"params": [p for _, p in params], "weight_decay": config.weight_decay}]
    decay = [p for _, p in params if p.ndim > 1]  # conv and linear weights; BN weights and every bias are 1-D
    rest = [p for _, p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: TrainConfig, *, fused: bool = True) -> torch.optim.Optimizer:
    """SGD or AdamW over ``parameter_groups``: torch's fused implementation (one kernel for every parameter, and a
    step it can skip on the device: ``found_inf``) where this torch has one for the parameters' device, else (or
    with ``fused`` False) its multi-tensor one."""
    groups = parameter_groups(model, config)
    if config.optimizer == "adamw":
        make = functools.partial(torch.optim.AdamW, groups, lr=config.lr, betas=(config.momentum, 0.999))
    else:
        make = functools.partial(torch.optim.SGD, groups, lr=config.lr, momentum=config.momentum)
    if not fused:
        return make()
    try:
        return make(fused=True)
    except (RuntimeError, TypeError, ValueError) as e:  # no fused kernel for this device or dtype in this torch
        log.info("%s: not fused on this device (%s)", config.optimizer, e)
        return make()


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LRScheduler:
    """Poly decay to 0 at ``max_steps`` (power 0.9), after an optional linear warm-up from lr/1000."""
    decay_steps = max(1, config.max_steps - config.warmup_steps)
    poly = PolynomialLR(optimizer, total_iters=decay_steps, power=config.poly_power)
    if config.warmup_steps <= 0:
        return poly
    warmup = LinearLR(optimizer, start_factor=1e-3, total_iters=config.warmup_steps)
    return SequentialLR(optimizer, [warmup, poly], milestones=[config.warmup_steps])
