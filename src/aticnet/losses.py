"""The cascade loss: cross-entropy on the main output plus weighted auxiliary outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize_labels(labels: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of N x H x W integer labels to N x size (no new values)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


class CascadeLoss(nn.Module):
    """``CE(out) + sum_i w_i CE(aux_i)``, each at its output's resolution.

    The labels are resized (nearest) down to each output, as the ICNet releases train,
    rather than upsampling the logits: cheaper, and the same for the regions that matter.

    Args:
        aux_keys: names of the auxiliary outputs, coarsest first (the model's ``aux_keys``).
        aux_weights: one weight per auxiliary output (ICNet paper: 0.4, 0.4).
        class_weights: optional K weights for the cross-entropy.
    """

    def __init__(
        self,
        aux_keys: Sequence[str],
        aux_weights: Sequence[float],
        *,
        class_weights: Tensor | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if len(aux_keys) != len(aux_weights):
            raise ValueError(f"one weight per aux output {tuple(aux_keys)}, got {tuple(aux_weights)}")
        self.weights = {"out": 1.0, **dict(zip(aux_keys, aux_weights))}
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, outputs: dict[str, Tensor], labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """outputs: name -> N x K x h x w logits; labels: N x H x W. Returns (loss, parts)."""
        total = labels.new_zeros((), dtype=torch.float32)
        parts = {}
        for key, weight in self.weights.items():
            logits = outputs[key]
            target = resize_labels(labels, logits.shape[-2:])
            loss = F.cross_entropy(logits.float(), target, weight=self.class_weights, ignore_index=self.ignore_index)
            if not (target != self.ignore_index).any():
                loss = logits.sum() * 0.0  # an all-ignore crop: no signal, but keep the graph
            parts[key] = loss.detach()
            total = total + weight * loss
        return total, parts
