"""Segmentation scores from a confusion matrix: IoU per class, mIoU, accuracies.

The matrix has one column more than it has rows. Rows are ground-truth classes, columns
predicted classes, and the last column counts valid pixels whose prediction is none of the
K classes (a void or non-evaluated label). Such a pixel is a false negative for its true
class and a false positive for no class, which is what cityscapesScripts does with a
predicted id that is not scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..utils.distributed import all_reduce_sum


class ConfusionMatrix:
    """Pixel counts ``matrix[true, predicted]``: int64, K x (K + 1), last column "other".

    ``update`` over the batches, ``reduce`` once at the end when distributed, then ``compute``.

    Examples:
        >>> from aticnet.evaluation.metrics import ConfusionMatrix
        >>> matrix = ConfusionMatrix(num_classes=3)
        >>> matrix.update(predicted_labels, true_labels)       # integer tensors of one shape
        >>> matrix.compute(["road", "car", "sky"])["miou"]

    Args:
        num_classes: K, the number of classes.
        ignore_index: the label of pixels left out (255).
        device: where the counts live (None: the CPU).

    Raises:
        ValueError: ``num_classes`` below 1, or ``ignore_index`` one of the classes.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, not {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is one of the {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch.

        Target pixels equal to ``ignore_index`` are left out. Predicted values outside [0, K) are counted in the
        "other" column.

        Args:
            pred: predicted class ids, an integer tensor (N x H x W, H x W, ...).
            target: true class ids, an integer tensor of the same shape.

        Raises:
            ValueError: a target value is neither a class in [0, K) nor ``ignore_index``: the labels do not match
                the classes, and dropping those pixels silently would inflate the scores.
            TypeError: float tensors (take the argmax of the logits first).
        """
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError("prediction and target must be integer class maps (take the argmax of the logits first)")
        k = self.num_classes
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).long()
        valid = target != self.ignore_index
        in_range = (target >= 0) & (target < k)
        # One host sync per batch: the price of refusing mismatched labels.
        if (valid & ~in_range).any():
            bad = torch.unique(target[valid & ~in_range])[:10].tolist()
            raise ValueError(
                f"target holds value(s) {bad} that are neither a class in [0, {k}) "
                f"nor the ignore index {self.ignore_index}"
            )
        target, pred = target[valid], pred[valid]
        pred = torch.where((pred >= 0) & (pred < k), pred, k)
        counts = torch.bincount(target * (k + 1) + pred, minlength=k * (k + 1))
        self.matrix += counts.reshape(k, k + 1).to(self.matrix.device)

    def reduce(self) -> None:
        """Sum the counts over all processes (no-op unless torch.distributed is initialized).

        Call it once, after the last ``update``: a second call would add the totals again.
        """
        all_reduce_sum(self.matrix)

    def reset(self) -> None:
        """Set every count to 0."""
        self.matrix.zero_()

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        """Scores as plain Python numbers (JSON-ready).

        A class without pixels in ground truth nor prediction has IoU None (accuracy None when it has no
        ground-truth pixels) and is left out of the means, which are None when nothing is left.

        Args:
            class_names: K names, the keys of the per-class results (default: "0", "1", ...).

        Returns:
            The scores as fractions in [0, 1]. ``miou``, ``per_class_iou`` (name to IoU), ``per_class_accuracy``
                (name to true positives over ground-truth pixels), ``mean_accuracy``, ``pixel_accuracy``,
                ``num_pixels`` and ``missed_as`` (name to ``{"class", "share"}``, the class that took the largest
                share of this class's ground-truth pixels, or None when none was missed).

        Raises:
            ValueError: ``class_names`` does not hold K names.
        """
        k = self.num_classes
        if class_names is None:
            class_names = [str(c) for c in range(k)]
        if len(class_names) != k:
            raise ValueError(f"{len(class_names)} class names for {k} classes")
        m = self.matrix.cpu().double()
        tp = m.diagonal()
        gt = m.sum(dim=1)  # includes the "other" column: predicted void is a miss
        predicted = m[:, :k].sum(dim=0)  # only valid rows exist, so ignored pixels are never false positives
        union = gt + predicted - tp
        total = m.sum().item()

        ious = [tp[c].item() / union[c].item() if union[c] > 0 else None for c in range(k)]
        accs = [tp[c].item() / gt[c].item() if gt[c] > 0 else None for c in range(k)]
        missed = m.clone()
        missed.diagonal().zero_()
        count, worst = missed.max(dim=1)  # per true class: the most pixels taken by one other column
        names_out = [*class_names, "other"]  # the last column: predictions outside the classes
        missed_as = {name: {"class": names_out[w], "share": n / g} if n > 0 else None
                     for name, w, n, g in zip(class_names, worst.tolist(), count.tolist(), gt.tolist(), strict=True)}
        return {
            "miou": _mean(ious),
            "per_class_iou": dict(zip(class_names, ious, strict=True)),
            "per_class_accuracy": dict(zip(class_names, accs, strict=True)),
            "mean_accuracy": _mean(accs),
            "pixel_accuracy": tp.sum().item() / total if total > 0 else None,
            "num_pixels": int(total),
            "missed_as": missed_as,
        }


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _percent(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def format_scores(scores: dict, title: str = "") -> str:
    """A terminal table of ``ConfusionMatrix.compute``'s scores, in percent."""
    names = list(scores["per_class_iou"])
    width = max([len("pixel accuracy"), *(len(n) for n in names)])
    lines = [title] if title else []
    missed_as = scores.get("missed_as", {})
    header = f"{'class':<{width}}    IoU    Acc" + ("  mostly missed as" if missed_as else "")
    lines += [header, "-" * len(header)]
    for name in names:
        iou, acc = scores["per_class_iou"][name], scores["per_class_accuracy"].get(name)
        worst = missed_as.get(name)
        missed = f"  {worst['class']} {100 * worst['share']:.1f}%" if worst else ""
        lines.append(f"{name:<{width}} {_percent(iou)} {_percent(acc)}{missed}")
    lines.append("-" * len(header))
    lines.append(f"{'mIoU':<{width}} {_percent(scores['miou'])} {_percent(scores.get('mean_accuracy'))}")
    lines.append(f"{'pixel accuracy':<{width}} {_percent(scores['pixel_accuracy'])}")
    lines.append(f"{'pixels':<{width}} {scores['num_pixels']:,}")
    return "\n".join(lines)
