"""The cascade loss: cross-entropy on the main output plus weighted auxiliary outputs, optionally OHEM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Weights of ICNet's two auxiliary outputs (1/16, 1/8; the main 1/4 output has 1.0). Three sources disagree:
AUX_WEIGHTS: dict[str, tuple[float, float]] = {
    "icnet": (0.4, 0.4),  # the ICNet paper (Zhao et al. 2018, Sec. 3.4) and mmsegmentation's ICNet configs
    "tensorflow": (0.16, 0.4),  # hellochick/ICNet-tensorflow, train.py LAMBDA1/LAMBDA2: the defaults of the port
    # whose training recipe the AtICNet paper's equals, so most likely the AtICNet authors' setting
    "tensorflow_readme": (0.4, 0.6),  # the same port's README
}


def resize_labels(labels: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of N x H x W integer labels to N x size (no new values)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


@dataclass(frozen=True)
class OHEM:
    """Online hard example mining over pixels (mmsegmentation's ``OHEMPixelSampler``): keep the valid
    pixels whose probability of the true class is below ``threshold``, and at least the ``min_kept``
    hardest ones; the loss is the (class-weighted) mean over the kept pixels."""

    threshold: float = 0.7
    min_kept: int = 10_000


def cross_entropy(
    logits: Tensor, target: Tensor, *, weight: Tensor | None, ignore_index: int, ohem: OHEM | None = None
) -> Tensor:
    """Mean cross-entropy of N x K x h x w logits against N x h x w labels over the valid (or OHEM-kept) pixels.

    The (class-weighted) mean is a sum over the valid pixels divided by their (weighted) count, so an
    all-ignore batch gives 0, not NaN, and still reaches every logit (DDP's gradient all-reduce sees every
    parameter), with no wait for the device to find out whether any pixel is valid.
    """
    logits = logits.float()
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    pixel_weight = weight[safe] if weight is not None else torch.ones_like(safe, dtype=logits.dtype)
    if ohem is None:
        total = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="sum")
        return total / (pixel_weight * valid).sum().clamp(min=torch.finfo(logits.dtype).tiny)
    with torch.no_grad():
        # p of the true class; ignored pixels 2.0, never hard. The min_kept-th smallest p bounds the hardest
        # min_kept (ties kept too); with fewer valid pixels it is an ignored one's 2.0, and every valid pixel is kept.
        # No count is read back: nothing waits for the device.
        p_true = torch.where(valid, logits.softmax(1).gather(1, safe[:, None])[:, 0], 2.0)
        kth = p_true.flatten().kthvalue(min(ohem.min_kept, p_true.numel())).values
        keep = valid & ((p_true < ohem.threshold) | (p_true <= kth))
    per_pixel = F.cross_entropy(logits, safe, weight=weight, reduction="none")
    kept = keep.to(per_pixel.dtype)
    return (per_pixel * kept).sum() / (pixel_weight * kept).sum().clamp(min=torch.finfo(logits.dtype).tiny)


class CascadeLoss(nn.Module):
    """``CE(out) + sum_i w_i CE(aux_i)``, each at its output's resolution.

    By default the labels are resized (nearest) down to each output, as the ICNet releases
    train; with ``upsample_logits`` each output's logits are upsampled (bilinear) to the
    labels' size instead, as mmsegmentation trains PSPNet.

    Args:
        aux_keys: names of the auxiliary outputs, coarsest first (the model's ``aux_keys``).
        aux_weights: one weight per auxiliary output (ICNet paper: 0.4, 0.4; see ``AUX_WEIGHTS``).
        class_weights: optional K weights for the cross-entropy.
        ohem: mine hard pixels (``OHEM``) instead of averaging over all of them.
    """

    def __init__(
        self,
        aux_keys: Sequence[str],
        aux_weights: Sequence[float],
        *,
        class_weights: Tensor | None = None,
        ignore_index: int = 255,
        upsample_logits: bool = False,
        align_corners: bool = True,
        ohem: OHEM | None = None,
    ) -> None:
        super().__init__()
        if len(aux_keys) != len(aux_weights):
            raise ValueError(f"one weight per aux output {tuple(aux_keys)}, got {tuple(aux_weights)}")
        self.weights = {"out": 1.0, **dict(zip(aux_keys, aux_weights))}
        self.ignore_index = ignore_index
        self.upsample_logits, self.align_corners = upsample_logits, align_corners
        self.ohem = ohem
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, outputs: dict[str, Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """outputs: name -> N x K x h x w logits; labels: N x H x W. Returns (loss, detached parts)."""
        total = labels.new_zeros((), dtype=torch.float32)
        parts = {}
        for key, weight in self.weights.items():
            logits = outputs[key].float()  # fp16/bf16 logits from autocast: upsample and score them in float32
            if self.upsample_logits:
                logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=self.align_corners)
                target = labels
            else:
                target = resize_labels(labels, logits.shape[-2:])
            loss = cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index, ohem=self.ohem)
            parts[key] = loss.detach()
            total = total + weight * loss
        return total, parts
