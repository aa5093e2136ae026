"""Score saved Cityscapes predictions the way cityscapesScripts does (class IoUs equal to 1e-4).

Predictions are label-id PNGs (not train ids) at the ground truth's size, found anywhere
under a folder by the name prefix ``{city}_{seq}_{frame}``, as in the official
``evalPixelLevelSemanticLabeling.getPrediction``. Both maps go through the official table
to the 19 train ids: ground-truth pixels of a class that is not scored are ignored, and a
predicted id that is not scored is a miss for the true class (the "other" column of
``aticnet.evaluation.metrics.ConfusionMatrix``). The class IoUs then equal the official ones.
"""

from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path

import torch

from ..data.cityscapes_labels import CLASS_NAMES, LABELS, label_id_to_train_id_lut
from ..utils.errors import DataError
from ..utils.io import read_label_map
from .metrics import ConfusionMatrix

GT_SUFFIX = "_gtFine_labelIds.png"
MAX_LABEL_ID = max(lb.id for lb in LABELS)  # 33; the official confusion matrix has no room for more


def evaluate_cityscapes_predictions(pred_dir: str | Path, data_root: str | Path, split: str = "val") -> dict:
    """Official-style scores of the label-id PNGs under ``pred_dir`` against ``data_root/gtFine/split``.

    Returns ``ConfusionMatrix.compute``'s keys with the 19 class names, plus
    ``num_images`` and ``seconds``. Raises DataError naming the file for a missing, doubled,
    unreadable or mis-sized prediction, or a value that is not a Cityscapes label id.
    """
    start = time.perf_counter()
    pred_dir, gt_dir = Path(pred_dir), Path(data_root) / "gtFine" / split
    if not gt_dir.is_dir():
        raise DataError(gt_dir, "no such ground-truth folder (expected data_root/gtFine/<split>/<city>/)")
    if not pred_dir.is_dir():
        raise DataError(pred_dir, "no such prediction folder")
    gt_files = sorted(gt_dir.glob(f"*/*{GT_SUFFIX}"))
    if not gt_files:
        raise DataError(gt_dir, f"no *{GT_SUFFIX} files in its city folders")

    # One walk for all images, as the official script does.
    walk = [(root, sorted(files)) for root, _, files in os.walk(pred_dir)]
    lut = label_id_to_train_id_lut()
    cm = ConfusionMatrix(len(CLASS_NAMES), ignore_index=255)
    for gt_file in gt_files:
        pred_file = find_prediction(walk, gt_file)
        gt = read_label_ids(gt_file)
        pred = read_label_ids(pred_file)
        if pred.shape != gt.shape:
            raise DataError(
                pred_file, f"size {tuple(pred.shape)} differs from its ground truth {gt_file} {tuple(gt.shape)}"
            )
        # Indexing the table with uint8 would be read as a mask: index with int64.
        cm.update(lut[pred.long()], lut[gt.long()])

    scores = cm.compute(CLASS_NAMES)
    scores["num_images"] = len(gt_files)
    scores["seconds"] = time.perf_counter() - start
    return scores


def find_prediction(walk: list[tuple[str, list[str]]], gt_file: Path) -> Path:
    """The one file under the walked folder named ``{city}_{seq}_{frame}*.png`` for ``gt_file``."""
    core = gt_file.name[: -len(GT_SUFFIX)]
    pattern = f"{core}*.png"  # the official pattern, matched the official way
    matches = [Path(root) / name for root, names in walk for name in fnmatch.filter(names, pattern)]
    if not matches:
        raise DataError(gt_file, f"no prediction named {pattern} under the prediction folder")
    if len(matches) > 1:
        shown = ", ".join(str(p) for p in matches[:5])
        raise DataError(gt_file, f"{len(matches)} predictions match {pattern}: {shown}")
    return matches[0]


def read_label_ids(path: Path) -> torch.Tensor:
    """A one-channel 8-bit PNG of Cityscapes label ids as an H x W uint8 tensor."""
    image = read_label_map(path)
    if image.dtype != torch.uint8:
        raise DataError(path, f"is {image.dtype}; label-id maps must be one-channel 8-bit PNGs")
    top = int(image.max())
    if top > MAX_LABEL_ID:
        # 255 here usually means train ids (with 255 = ignore) were saved instead of label ids.
        raise DataError(path, f"holds value {top}, which is not a Cityscapes label id (0..{MAX_LABEL_ID})")
    return image

