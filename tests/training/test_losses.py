"""The cascade loss, class weighting, OHEM and the aux-weight presets, against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from aticnet.training.config import TrainConfig, load_config
from aticnet.training.losses import AUX_WEIGHTS, OHEM, CascadeLoss, cross_entropy, resize_labels
from tests.helpers import ROOT


def ce(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target], by hand."""
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def constant_logits(values: list[float], size: tuple[int, int]) -> torch.Tensor:
    """1 x K x h x w logits equal to ``values`` at every pixel."""
    return torch.tensor(values).view(1, -1, 1, 1).expand(1, len(values), *size).clone().requires_grad_()


def test_cascade_loss_weights_each_output_at_its_own_resolution():
    # labels 4x4: left half class 0, right half class 1, one ignored pixel
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 255, 1, 1]]])
    outputs = {"out": constant_logits([2.0, 0.0], (4, 4)), "aux_16": constant_logits([0.0, 1.0], (1, 1)),
               "aux_8": constant_logits([1.0, 1.0], (2, 2))}
    loss, parts = CascadeLoss(("aux_16", "aux_8"), (0.4, 0.16))(outputs, labels)
    main = (7 * ce([2, 0], 0) + 8 * ce([2, 0], 1)) / 15  # 15 valid pixels
    aux_16 = ce([0, 1], 0)  # 1x1: nearest picks the top-left label, 0
    aux_8 = (2 * ce([1, 1], 0) + 2 * ce([1, 1], 1)) / 4  # 2x2: labels[::2, ::2] = [[0, 1], [0, 1]]
    assert parts["out"].item() == pytest.approx(main)
    assert parts["aux_16"].item() == pytest.approx(aux_16)
    assert parts["aux_8"].item() == pytest.approx(aux_8)
    assert loss.item() == pytest.approx(main + 0.4 * aux_16 + 0.16 * aux_8)


def test_labels_are_shrunk_by_nearest_neighbour_top_left():
    labels = torch.arange(16).view(1, 4, 4)
    assert resize_labels(labels, (2, 2)).tolist() == [[[0, 2], [8, 10]]]
    assert resize_labels(labels, (4, 4)) is labels


def test_class_weights_give_a_weighted_mean():
    labels = torch.tensor([[[0, 0, 0, 1]]])
    logits = constant_logits([0.5, -0.5], (1, 4))
    weights = torch.tensor([1.0, 3.0])
    loss, _ = CascadeLoss((), (), class_weights=weights)({"out": logits}, labels)
    expected = (3 * 1.0 * ce([0.5, -0.5], 0) + 1 * 3.0 * ce([0.5, -0.5], 1)) / (3 * 1.0 + 1 * 3.0)
    assert loss.item() == pytest.approx(expected)


def test_an_all_ignore_crop_gives_zero_and_a_zero_gradient_everywhere():
    logits = constant_logits([1.0, 2.0, 3.0], (2, 2))
    loss, parts = CascadeLoss((), ())({"out": logits}, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and parts["out"].item() == 0.0
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_upsampled_logits_are_scored_at_the_labels_size():
    # 2x2 logits, class 0 strong on the left column; upsampled bilinearly (align_corners) to 2x4
    logits = torch.tensor([[[[4.0, 0.0], [4.0, 0.0]], [[0.0, 4.0], [0.0, 4.0]]]], requires_grad=True)
    labels = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 255]]])
    loss, _ = CascadeLoss((), (), upsample_logits=True, align_corners=True)({"out": logits}, labels)
    columns = [[4 * (1 - t), 4 * t] for t in (0, 1 / 3, 2 / 3, 1)]  # align_corners: the ends land on the ends
    expected = (ce(columns[0], 0) * 2 + ce(columns[1], 0) + ce(columns[1], 1) + ce(columns[2], 1) * 2
                + ce(columns[3], 1)) / 7
    assert loss.item() == pytest.approx(expected)


def test_ohem_keeps_the_hard_pixels_and_at_least_min_kept():
    # four pixels whose probability of the true class is known: softmax([z, 0]) of class 0
    z = [3.0, 1.0, -1.0, 0.5]  # p = 0.95, 0.73, 0.27, 0.62
    logits = torch.tensor([[[z], [[0.0] * 4]]]).float()  # 1 x 2 x 1 x 4
    labels = torch.zeros(1, 1, 4, dtype=torch.long)
    hard = [ce([v, 0.0], 0) for v in z]
    got = cross_entropy(logits, labels, weight=None, ignore_index=255, ohem=OHEM(threshold=0.7, min_kept=1))
    assert got.item() == pytest.approx((hard[2] + hard[3]) / 2)  # p < 0.7: the third and the fourth
    got = cross_entropy(logits, labels, weight=None, ignore_index=255, ohem=OHEM(threshold=0.7, min_kept=3))
    assert got.item() == pytest.approx((hard[1] + hard[2] + hard[3]) / 3)  # the three hardest
    got = cross_entropy(logits, labels, weight=None, ignore_index=255, ohem=OHEM(threshold=0.99, min_kept=1))
    assert got.item() == pytest.approx(sum(hard) / 4)


def test_ohem_skips_ignored_pixels_and_weights_classes():
    logits = torch.tensor([[[[0.0, 2.0, 1.0]], [[1.0, 0.0, 0.0]]]])
    labels = torch.tensor([[[0, 255, 1]]])
    weights = torch.tensor([2.0, 1.0])
    got = cross_entropy(logits, labels, weight=weights, ignore_index=255, ohem=OHEM(threshold=0.9, min_kept=5))
    expected = (2.0 * ce([0, 1], 0) + 1.0 * ce([1, 0], 1)) / 3.0
    assert got.item() == pytest.approx(expected)
    # min_kept 1, nothing under the threshold: the hardest valid pixel, however many ignored ones there are
    got = cross_entropy(logits, labels, weight=None, ignore_index=255, ohem=OHEM(threshold=0.0, min_kept=1))
    assert got.item() == pytest.approx(max(ce([0, 1], 0), ce([1, 0], 1)))


def test_aux_weight_presets_and_their_use_in_configs():
    assert AUX_WEIGHTS == {"icnet": (0.4, 0.4), "tensorflow": (0.16, 0.4), "tensorflow_readme": (0.4, 0.6)}
    assert TrainConfig(aux_weights="tensorflow").resolved_aux_weights == (0.16, 0.4)
    assert TrainConfig(aux_weights=(0.3, 0.2)).resolved_aux_weights == (0.3, 0.2)
    assert TrainConfig().resolved_aux_weights is None

    for name in ("cityscapes", "cityscapes_60k"):
        config = load_config(ROOT / "configs" / f"{name}.yaml")
        assert config.resolved_aux_weights == (0.16, 0.4), name
        assert config.weight_decay_scope == "weights" and config.model_options.get("bn_momentum") == 0.05, name


def test_half_precision_logits_are_upsampled_in_float32():
    # bf16 logits from autocast: cast first, then upsample and score; upsampling in bf16 rounds the scores
    torch.manual_seed(0)
    logits = (torch.randn(1, 3, 5, 7) * 4).to(torch.bfloat16)
    labels = torch.randint(0, 3, (1, 37, 53))
    criterion = CascadeLoss((), (), upsample_logits=True, align_corners=True)
    loss, _ = criterion({"out": logits}, labels)
    reference, _ = criterion({"out": logits.float()}, labels)
    assert loss.dtype == torch.float32 and loss.item() == reference.item()


def test_the_mean_needs_no_look_at_the_device():
    # the valid-pixel mean is a weighted sum over a weighted count: the same number as PyTorch's own mean
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 6, 6)
    target = torch.randint(0, 4, (2, 6, 6))
    target[0, :3] = 255
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    ours = cross_entropy(logits, target, weight=weight, ignore_index=255)
    torchs = torch.nn.functional.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert ours.item() == pytest.approx(torchs.item(), rel=1e-6)
