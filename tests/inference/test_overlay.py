"""Class colours and the overlay against the float formulas they stand for."""

import numpy as np
import pytest
import torch

import aticnet
from aticnet.utils.errors import UserError

PALETTE = [(128, 64, 128), (70, 70, 70), (220, 20, 60), (0, 0, 142), (255, 255, 255)]


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    labels = rng.integers(0, len(PALETTE), (33, 47)).astype(np.int64)
    labels[:4] = 255  # ignore
    labels[4, :5] = [-1, 260, 5, 6, 254]  # ids no palette entry names
    return image, labels


def expected_colors(labels, palette, ignore=(0, 0, 0)):
    out = np.empty(labels.shape + (3,), np.uint8)
    for (y, x), v in np.ndenumerate(labels):
        out[y, x] = palette[v] if 0 <= v < len(palette) else ignore
    return out


def test_colorize_gives_each_id_its_colour_and_every_other_id_the_ignore_colour(scene):
    _, labels = scene
    want = expected_colors(labels, PALETTE, (1, 2, 3))
    np.testing.assert_array_equal(aticnet.colorize(labels, PALETTE, (1, 2, 3)), want)
    in_range = np.where((labels >= 0) & (labels <= 255), labels, 255)
    np.testing.assert_array_equal(aticnet.colorize(torch.from_numpy(in_range).to(torch.uint8), PALETTE, (1, 2, 3)),
                                  expected_colors(in_range, PALETTE, (1, 2, 3)))


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.85])
def test_overlay_is_the_float_blend_within_one_level(scene, alpha):
    image, labels = scene
    colors = expected_colors(labels, PALETTE).astype(np.float64)
    blend = np.rint((1 - alpha) * image + alpha * colors)
    outside = ((labels < 0) | (labels >= len(PALETTE)))[..., None]
    want = np.where(outside, image, blend)
    got = aticnet.overlay(image, labels, PALETTE, alpha)
    assert got.dtype == np.uint8 and got.shape == image.shape
    assert np.abs(got.astype(int) - want).max() <= 1
    np.testing.assert_array_equal(got[outside[..., 0]], image[outside[..., 0]])  # ignored pixels untouched


def test_overlay_ends_are_the_image_and_the_colours(scene):
    image, labels = scene
    inside = (labels >= 0) & (labels < len(PALETTE))
    np.testing.assert_array_equal(aticnet.overlay(image, labels, PALETTE, 0.0), image)
    np.testing.assert_array_equal(aticnet.overlay(image, labels, PALETTE, 1.0)[inside],
                                  expected_colors(labels, PALETTE)[inside])


def test_overlay_takes_channels_first_tensors_and_refuses_an_opacity_outside_0_1(scene):
    image, labels = scene
    want = aticnet.overlay(image, labels, PALETTE, 0.4)
    chw = torch.from_numpy(image).permute(2, 0, 1)
    np.testing.assert_array_equal(aticnet.overlay(chw, torch.from_numpy(labels), PALETTE, 0.4), want)
    with pytest.raises(UserError, match="between 0 and 1"):
        aticnet.overlay(image, labels, PALETTE, 1.5)
