"""The window of an enlarged frame, computed alone, against the whole frame enlarged and cut."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from aticnet.data.resample import enlarge_window, resize_label_window

SIZES = [(60, 80), (61, 83), (90, 120), (127, 170), (120, 160)]  # the same, odd ratios, 1.5x, 2x and about 2.1x


@pytest.mark.parametrize("size", SIZES)
def test_a_window_is_the_whole_enlarged_frame_cut(size):
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8, generator=g)
    label = torch.randint(0, 19, (60, 80), dtype=torch.uint8, generator=g)
    rows, cols = (3, size[0] - 5), (9, size[1] - 1)
    window = enlarge_window(image, size, rows, cols)
    whole = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    cut = whole[:, rows[0] : rows[1], cols[0] : cols[1]]
    assert window.shape == cut.shape and (window - cut).abs().max() <= 0.5 + 1e-4  # the float value, rounded
    assert torch.equal(window, enlarge_window(image, size, (0, size[0]), (0, size[1]))[:, rows[0]:rows[1], cols[0]:cols[1]])
    torchvision_u8 = TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    assert (window - torchvision_u8[:, rows[0]:rows[1], cols[0]:cols[1]].float()).abs().max() <= 1
    labels = TF.resize_image(label[None], list(size), interpolation=InterpolationMode.NEAREST_EXACT)[0]
    assert torch.equal(resize_label_window(label, size, rows, cols), labels[rows[0] : rows[1], cols[0] : cols[1]])


def test_the_edges_repeat_the_last_pixels():
    image = torch.tensor([[[10, 20], [30, 40]]], dtype=torch.uint8)  # 1 x 2 x 2
    window = enlarge_window(image, (4, 4), (0, 4), (0, 4))[0]
    assert window[0].tolist() == [10, 12, 18, 20] and window[:, 0].tolist() == [10, 15, 25, 30]
    assert window[3, 3] == 40
