"""Cityscapes fine annotations: 19 train ids from the official label table.

Layout (as downloaded)::

    root/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    root/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png       (raw label ids 0..33)
    root/gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png  (optional, train ids)

``*_labelTrainIds.png`` (written by cityscapesScripts' ``createTrainIdLabelImgs``) is used
when present, as it needs no mapping; otherwise label ids go through the official table.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..utils.errors import DataError
from .base import SegmentationDataset, Transform, make_lut
from .cityscapes_labels import CLASS_COLORS, CLASS_NAMES, LABELS, label_id_to_train_id_lut

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"


def label_id_lut() -> torch.Tensor:
    """Label ids 0..33 -> train id or 255; values above 33 do not exist in Cityscapes."""
    lut = label_id_to_train_id_lut()
    last_id = max(lb.id for lb in LABELS)
    lut[last_id + 1 :] = make_lut()[last_id + 1 :]  # INVALID, 255 stays ignored
    return lut


class Cityscapes(SegmentationDataset):
    """Cityscapes ``gtFine``: 19 classes, train 2975 / val 500 / test 1525 images."""

    classes = list(CLASS_NAMES)
    colors = list(CLASS_COLORS)

    image_folder, label_folder = "leftImg8bit/{split}", "gtFine/{split}"

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None, **drives) -> None:
        self.label_lut = label_id_lut()
        self.train_id_lut = make_lut(identity=len(CLASS_NAMES))
        super().__init__(root, split, transform, **drives)

    def keyed_files(self, image_dir: Path, label_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
        images = {str(p.relative_to(image_dir))[: -len(IMAGE_SUFFIX)]: p for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}")}
        labels: dict[str, Path] = {}
        for suffix in (LABEL_ID_SUFFIX, TRAIN_ID_SUFFIX):  # train ids last: they win
            for p in label_dir.glob(f"*/*{suffix}"):
                labels[str(p.relative_to(label_dir))[: -len(suffix)]] = p
        if not images and not labels:
            raise DataError(image_dir, f"no *{IMAGE_SUFFIX} files in its city folders")
        return images, labels

    def lut_for(self, label_path: Path) -> torch.Tensor:
        return self.train_id_lut if label_path.name.endswith(TRAIN_ID_SUFFIX) else self.label_lut
