"""The official Cityscapes label table (cityscapesScripts ``helpers/labels.py``).

Only what this package needs: name, label id, train id, colour and whether the class is
scored. Train id 255 marks classes that are not trained on; the 19 others are the
benchmark's classes, in train-id order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Label(NamedTuple):
    name: str
    id: int
    train_id: int
    color: tuple[int, int, int]
    ignore_in_eval: bool


LABELS = [
    Label("unlabeled", 0, 255, (0, 0, 0), True),
    Label("ego vehicle", 1, 255, (0, 0, 0), True),
    Label("rectification border", 2, 255, (0, 0, 0), True),
    Label("out of roi", 3, 255, (0, 0, 0), True),
    Label("static", 4, 255, (0, 0, 0), True),
    Label("dynamic", 5, 255, (111, 74, 0), True),
    Label("ground", 6, 255, (81, 0, 81), True),
    Label("road", 7, 0, (128, 64, 128), False),
    Label("sidewalk", 8, 1, (244, 35, 232), False),
    Label("parking", 9, 255, (250, 170, 160), True),
    Label("rail track", 10, 255, (230, 150, 140), True),
    Label("building", 11, 2, (70, 70, 70), False),
    Label("wall", 12, 3, (102, 102, 156), False),
    Label("fence", 13, 4, (190, 153, 153), False),
    Label("guard rail", 14, 255, (180, 165, 180), True),
    Label("bridge", 15, 255, (150, 100, 100), True),
    Label("tunnel", 16, 255, (150, 120, 90), True),
    Label("pole", 17, 5, (153, 153, 153), False),
    Label("polegroup", 18, 255, (153, 153, 153), True),
    Label("traffic light", 19, 6, (250, 170, 30), False),
    Label("traffic sign", 20, 7, (220, 220, 0), False),
    Label("vegetation", 21, 8, (107, 142, 35), False),
    Label("terrain", 22, 9, (152, 251, 152), False),
    Label("sky", 23, 10, (70, 130, 180), False),
    Label("person", 24, 11, (220, 20, 60), False),
    Label("rider", 25, 12, (255, 0, 0), False),
    Label("car", 26, 13, (0, 0, 142), False),
    Label("truck", 27, 14, (0, 0, 70), False),
    Label("bus", 28, 15, (0, 60, 100), False),
    Label("caravan", 29, 255, (0, 0, 90), True),
    Label("trailer", 30, 255, (0, 0, 110), True),
    Label("train", 31, 16, (0, 80, 100), False),
    Label("motorcycle", 32, 17, (0, 0, 230), False),
    Label("bicycle", 33, 18, (119, 11, 32), False),
    Label("license plate", -1, -1, (0, 0, 142), True),
]

TRAIN_LABELS = sorted((lb for lb in LABELS if 0 <= lb.train_id < 255), key=lambda lb: lb.train_id)
CLASS_NAMES = [lb.name for lb in TRAIN_LABELS]  # the 19 classes, in train-id order
CLASS_COLORS = [lb.color for lb in TRAIN_LABELS]
TRAIN_ID_TO_LABEL_ID = [lb.id for lb in TRAIN_LABELS]


def label_id_to_train_id_lut() -> torch.Tensor:
    """A 256-entry uint8 table: label id -> train id, everything not trained on -> 255."""
    lut = torch.full((256,), 255, dtype=torch.uint8)
    for lb in LABELS:
        if lb.id >= 0 and 0 <= lb.train_id < 255:
            lut[lb.id] = lb.train_id
    return lut


def train_id_to_label_id_lut() -> torch.Tensor:
    """A 256-entry uint8 table: train id -> label id (255 and unknown ids -> 0, 'unlabeled')."""
    lut = torch.zeros(256, dtype=torch.uint8)
    lut[: len(TRAIN_ID_TO_LABEL_ID)] = torch.tensor(TRAIN_ID_TO_LABEL_ID, dtype=torch.uint8)
    return lut
