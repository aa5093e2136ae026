"""Segmentation data sets and their transforms.

Every data set yields ``(uint8 3xHxW RGB image, uint8 HxW train ids, 255 = ignore)`` from
``read(i)`` and passes the pair through its ``transform`` in ``dataset[i]``. Bad files
raise ``aticnet.utils.errors.DataError`` naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..utils.errors import UserError
from .base import SegmentationDataset, Transform
from .camvid import CamVid
from .cityscapes import Cityscapes
from .folder import FolderDataset
from .synthetic import SyntheticDataset, generate_synthetic
from .transforms import EvalTransform, RandomScale, TrainTransform

DATASETS: dict[str, type[SegmentationDataset]] = {
    "cityscapes": Cityscapes,
    "camvid": CamVid,
    "folder": FolderDataset,
    "synthetic": SyntheticDataset,
}


def build_dataset(name: str, root: str | Path, split: str, transform: Transform | None = None,
                  **selection: Sequence[str] | None) -> SegmentationDataset:
    """A data set by name, as ``--dataset NAME --data-root DIR`` reads it on the command line.

    Examples:
        >>> import aticnet
        >>> val = aticnet.build_dataset("folder", "my_data", "val")
        >>> image, label = val.read(0)       # 3 x H x W uint8 RGB, H x W uint8 class ids (255: ignore)
        >>> val.classes, len(val)

    Args:
        name: ``cityscapes``, ``camvid``, ``folder`` or ``synthetic``.
        root: the data set's top folder.
        split: the split (``"train"``, ``"val"``, ...; several joined by ``+``: ``"train+val"``).
        transform: applied to each (image, label) pair by ``dataset[i]`` (``read(i)`` gives them untransformed).
        **selection: ``drives=[...]`` or ``exclude_drives=[...]`` keeps or leaves out frames by drive (CamVid's
            file-name prefix, Cityscapes' city).

    Returns:
        The data set (a ``SegmentationDataset``). ``read(i)`` gives a 3 x H x W uint8 image and H x W uint8 class
            ids (255 = ignore); it has ``classes``, ``colors``, ``num_classes`` and ``drives()``.

    Raises:
        UserError: an unknown data set name.
        DataError: a missing folder or a bad file, named.
    """
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name](root, split, transform=transform, **selection)


__all__ = [
    "DATASETS",
    "CamVid",
    "Cityscapes",
    "EvalTransform",
    "FolderDataset",
    "RandomScale",
    "SegmentationDataset",
    "SyntheticDataset",
    "TrainTransform",
    "build_dataset",
    "generate_synthetic",
]
