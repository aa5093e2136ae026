"""CamVid in the 11-class SegNet form (480x360 PNGs).

Layout::

    root/{split}/NAME.png         RGB frames
    root/{split}annot/NAME.png    8-bit labels 0..10, 11 = void (ignored)
"""

from __future__ import annotations

from pathlib import Path

from .base import IGNORE, SegmentationDataset, Transform, make_lut

CLASSES = [
    "Sky", "Building", "Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]  # fmt: skip
COLORS = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]  # fmt: skip
VOID = 11


class CamVid(SegmentationDataset):
    """CamVid, SegNet version: train 367 / val 101 / test 233 images, 11 classes."""

    classes = CLASSES
    colors = COLORS

    image_folder, label_folder = "{split}", "{split}annot"

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None, **drives) -> None:
        # 255 is accepted too: it is what void becomes in copies already mapped to train ids.
        self.label_lut = make_lut({VOID: IGNORE}, identity=len(CLASSES))
        super().__init__(root, split, transform, **drives)

    def keyed_files(self, image_dir: Path, label_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
        return {p.name: p for p in image_dir.glob("*.png")}, {p.name: p for p in label_dir.glob("*.png")}
