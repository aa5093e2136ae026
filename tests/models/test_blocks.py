"""Every building block against a second implementation written here from the papers' descriptions with
torch.nn.functional.

BatchNorms get random running statistics and affine parameters first, so a BN that is skipped,
misplaced or fed the wrong tensor changes the numbers. Blocks run in eval mode (running statistics).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aticnet import build_model
from aticnet.models.cascade import CascadeFeatureFusion, HighResBranch
from aticnet.models.layers import Bottleneck, ConvBN, half
from aticnet.models.pyramid import AtrousLevel, AtrousPyramidPooling, ConcatPyramidPooling, SumPyramidPooling


def randomize_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.5)
    return module.eval()


def bn(x: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
    return (x - m.running_mean[:, None, None]) / torch.sqrt(m.running_var[:, None, None] + m.eps) * m.weight[
        :, None, None
    ] + m.bias[:, None, None]


def up(x: torch.Tensor, size, align_corners: bool = True) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def cell_means(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Average of each of the bins x bins equal cells of an N x C x H x W map (H, W divisible by bins)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, bins, h // bins, bins, w // bins).mean(dim=(3, 5))


# ------------------------------------------------------------------ layers
def test_convbn_is_conv_then_bn_then_relu_with_same_padding():
    block = randomize_bn(ConvBN(3, 5, 3, stride=2, dilation=2))
    x = torch.randn(2, 3, 11, 13)
    conv = block[0]
    expected = F.relu(bn(F.conv2d(x, conv.weight, stride=2, padding=2, dilation=2), block[1]))
    torch.testing.assert_close(block(x), expected)
    plain = ConvBN(3, 5, 1, norm=False, relu=False).eval()
    torch.testing.assert_close(plain(x), F.conv2d(x, plain[0].weight, plain[0].bias))


@pytest.mark.parametrize("stride, stride_in_1x1", [(1, True), (2, True), (2, False)])
def test_bottleneck_by_hand(stride, stride_in_1x1):
    block = randomize_bn(Bottleneck(8, 4, 16, stride=stride, dilation=2, stride_in_1x1=stride_in_1x1))
    x = torch.randn(2, 8, 12, 10)
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    y = F.relu(bn(F.conv2d(x, block.reduce[0].weight, stride=s1), block.reduce[1]))
    y = F.relu(bn(F.conv2d(y, block.conv[0].weight, stride=s3, padding=2, dilation=2), block.conv[1]))
    y = bn(F.conv2d(y, block.expand[0].weight), block.expand[1])
    shortcut = bn(F.conv2d(x, block.shortcut[0].weight, stride=stride), block.shortcut[1])
    torch.testing.assert_close(block(x), F.relu(y + shortcut))


def test_bottleneck_without_projection_adds_its_input():
    block = randomize_bn(Bottleneck(16, 4, 16))
    assert isinstance(block.shortcut, nn.Identity)
    x = torch.randn(1, 16, 6, 6)
    y = F.relu(bn(F.conv2d(x, block.reduce[0].weight), block.reduce[1]))
    y = F.relu(bn(F.conv2d(y, block.conv[0].weight, padding=1), block.conv[1]))
    y = bn(F.conv2d(y, block.expand[0].weight), block.expand[1])
    torch.testing.assert_close(block(x), F.relu(y + x))


def test_half_rounds_odd_sizes_up_and_keeps_every_other_pixel():
    # Caffe's Interp with shrink_factor 2: (n - 1) / 2 + 1; with align_corners an odd side samples pixels 0, 2, 4, ...
    x = torch.randn(1, 2, 65, 33)
    y = half(x, align_corners=True)
    assert y.shape[-2:] == (33, 17)
    torch.testing.assert_close(y, x[..., ::2, ::2])
    assert half(torch.randn(1, 1, 64, 96), align_corners=True).shape[-2:] == (32, 48)


# ------------------------------------------------------------------ pyramids
@pytest.mark.parametrize("align_corners", [True, False])
def test_sum_pyramid_is_input_plus_upsampled_pools(align_corners):
    x = torch.randn(2, 4, 12, 18)
    expected = x.clone()
    for b in (1, 2, 3, 6):
        expected += up(F.adaptive_avg_pool2d(x, b), (12, 18), align_corners)
    torch.testing.assert_close(SumPyramidPooling(4, align_corners=align_corners)(x), expected)


@pytest.mark.parametrize("bins, rate", [(1, 2), (2, 4), (3, 8), (6, 12)])
def test_atrous_level_by_hand(bins, rate):
    level = randomize_bn(AtrousLevel(16, 4, bins, rate), seed=bins)
    x = torch.randn(2, 16, 12, 12)
    a, p = level.atrous, level.project
    branch = F.relu(bn(F.conv2d(x, a[0].weight, padding=rate, dilation=rate), a[1]))  # the stated dilation
    projected = bn(F.conv2d(branch, p[0].weight), p[1])  # 1x1 + BN, no ReLU by default
    pooled = cell_means(projected, bins)  # constant on each of the bins x bins cells
    torch.testing.assert_close(level(x), up(pooled, (12, 12)))


def test_atrous_level_options_remove_and_add_what_they_say():
    x = torch.randn(1, 8, 6, 6)
    bare = randomize_bn(AtrousLevel(8, 4, 2, 2, inner_bn=False, inner_relu=False, final_relu=True))
    a, p = bare.atrous, bare.project
    assert not any(isinstance(m, nn.BatchNorm2d) for m in a.modules())
    branch = F.conv2d(x, a[0].weight, a[0].bias, padding=2, dilation=2)
    projected = F.relu(bn(F.conv2d(branch, p[0].weight), p[1]))
    torch.testing.assert_close(bare(x), up(cell_means(projected, 2), (6, 6)))


def test_atrous_pyramid_sums_its_levels_with_the_input_in_bin_rate_order():
    pyramid = randomize_bn(AtrousPyramidPooling(16, (1, 2, 3, 6), (2, 4, 8, 12)))
    assert [(lv.bins, lv.atrous[0].dilation[0], lv.atrous[0].padding[0]) for lv in pyramid.levels] == [
        (1, 2, 2), (2, 4, 4), (3, 8, 8), (6, 12, 12)]  # fmt: skip
    assert pyramid.levels[0].atrous[0].out_channels == 16 // 8  # DeepLab's C/8
    x = torch.randn(1, 16, 12, 12)
    torch.testing.assert_close(pyramid(x), x + sum(level(x) for level in pyramid.levels))


def test_concat_pyramid_by_hand():
    pyramid = randomize_bn(ConcatPyramidPooling(8, (1, 2, 3, 6)))
    x = torch.randn(2, 8, 12, 12)
    parts = [x]
    for b, conv in zip((1, 2, 3, 6), pyramid.convs):
        pooled = F.adaptive_avg_pool2d(x, b)
        if b == 1:  # a single pixel: conv with bias, no BatchNorm
            assert not any(isinstance(m, nn.BatchNorm2d) for m in conv.modules())
            y = F.relu(F.conv2d(pooled, conv[0].weight, conv[0].bias))
        else:
            y = F.relu(bn(F.conv2d(pooled, conv[0].weight), conv[1]))
        parts.append(up(y, (12, 12)))
    torch.testing.assert_close(pyramid(x), torch.cat(parts, dim=1))


def test_pspnet_trains_on_a_single_image():
    model = build_model("pspnet", num_classes=3, width=0.125).train()
    out = model(torch.randn(1, 3, 64, 64))  # BN on a 1x1 map with batch 1 would raise
    assert out["out"].shape == (1, 3, 8, 8)


# ------------------------------------------------------------------ the cascade
@pytest.mark.parametrize("align_corners", [True, False])
def test_cascade_feature_fusion_by_hand(align_corners):
    cff = randomize_bn(CascadeFeatureFusion(6, 4, 5, num_classes=3, align_corners=align_corners))
    low, high = torch.randn(2, 6, 5, 7), torch.randn(2, 4, 10, 14)
    upsampled = up(low, (10, 14), align_corners)
    low_path = bn(F.conv2d(upsampled, cff.low[0].weight, padding=2, dilation=2), cff.low[1])  # dilation 2, no ReLU
    high_path = bn(F.conv2d(high, cff.high[0].weight), cff.high[1])
    out, aux = cff(low, high)
    torch.testing.assert_close(out, F.relu(low_path + high_path))
    assert aux is None  # label guidance only in training
    cff.train()
    for m in cff.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # keep the running statistics: only the aux head's switch is under test
    _, aux = cff(low, high)
    torch.testing.assert_close(aux, F.conv2d(upsampled, cff.aux_classifier.weight, cff.aux_classifier.bias))


def test_high_resolution_branch_by_hand():
    branch = randomize_bn(HighResBranch(3, (4, 4, 8)))
    x = torch.randn(1, 3, 33, 50)
    y = x
    for conv in branch:
        y = F.relu(bn(F.conv2d(y, conv[0].weight, stride=2, padding=1), conv[1]))
    torch.testing.assert_close(branch(x), y)
    assert y.shape[-2:] == (5, 7)  # ceil(33 / 8), ceil(50 / 8)


# ------------------------------------------------------------------ the trunk as the ICNet release lists it
def three_by_three(block: Bottleneck) -> nn.Conv2d:
    return block.conv[0]


@pytest.mark.parametrize("name, stage5", [("icnet", 3), ("aticnet", 2), ("icnet_s5x2", 2), ("icnet_atrous", 3)])
def test_cascade_trunk_blocks_strides_dilations_and_widths(name, stage5):
    model = build_model(name, width=0.5)
    stages = model.trunk.stages
    assert [len(s) for s in stages] == [3, 4, 6, stage5]
    stem = [model.trunk.stem[i][0] for i in range(3)]
    assert [(c.kernel_size[0], c.stride[0], c.out_channels) for c in stem] == [(3, 2, 32), (3, 1, 32), (3, 1, 64)]
    assert (model.trunk.stem[3].kernel_size, model.trunk.stem[3].stride) == (3, 2)
    for stage, dilation, out, first_stride in zip(stages, (1, 1, 2, 4), (128, 256, 512, 1024), (1, 2, 1, 1)):
        assert {three_by_three(b).dilation[0] for b in stage} == {dilation}
        assert stage[-1].expand[0].out_channels == out
        assert stage[0].reduce[0].stride[0] == first_stride  # stride in the 1x1, as Caffe
        assert all(three_by_three(b).stride[0] == 1 for b in stage)
        assert not isinstance(stage[0].shortcut, nn.Identity)
        assert all(isinstance(b.shortcut, nn.Identity) for b in stage[1:])


def test_cascade_feature_sizes_are_the_releases():
    """I -> medium I/2 -> stem 1/8 -> stage 2 1/8 -> conv3_1 1/16 -> shrunk 1/32 -> stages 3-5 at 1/32."""
    model = build_model("icnet", num_classes=3, width=0.125).eval()
    sizes = {}

    def record(name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            sizes[name] = (tuple(out.shape[-2:]), out.shape[1])
        return hook

    parts = {"stem": model.trunk.stem, "stage2": model.trunk.stages[0], "conv3_1": model.trunk.stages[1][0],
             "conv3_2": model.trunk.stages[1][1], "stage4": model.trunk.stages[2], "stage5": model.trunk.stages[3],
             "high": model.high, "cff_16": model.cff_16, "cff_8": model.cff_8, "classifier": model.classifier}
    hooks = [m.register_forward_hook(record(n)) for n, m in parts.items()]
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 256, 512))
    for h in hooks:
        h.remove()
    # sizes and channels at width 0.125: stem 16, stages 32/64/128/256, high branch 16, CFF 32
    assert sizes == {"stem": ((32, 64), 16), "stage2": ((32, 64), 32), "conv3_1": ((16, 32), 64),
                     "conv3_2": ((8, 16), 64), "stage4": ((8, 16), 128), "stage5": ((8, 16), 256),
                     "high": ((32, 64), 16), "cff_16": ((16, 32), 32), "cff_8": ((32, 64), 32), "classifier": ((32, 64), 3)}
    assert logits.shape == (1, 3, 256, 512)


def test_pspnet_trunk_keeps_output_stride_8_with_dilations_2_and_4():
    with torch.device("meta"):
        model = build_model("pspnet")
    stages = model.trunk.stages
    assert [len(s) for s in stages] == [3, 4, 6, 3]
    assert [{three_by_three(b).dilation[0] for b in s} for s in stages] == [{1}, {1}, {2}, {4}]
    assert [s[0].reduce[0].stride[0] for s in stages] == [1, 2, 1, 1]
    assert model.trunk.reductions == [4, 8, 8, 8]
    assert model.trunk.channels == [256, 512, 1024, 2048]
    assert model.pyramid.out_channels == 4096 and model.head[0][0].out_channels == 512


def test_init_follows_the_stated_scheme():
    torch.manual_seed(0)
    model = build_model("icnet", num_classes=19, width=0.5, bn_momentum=0.05)
    conv = model.trunk.stages[2][0].conv[0]  # 3x3, 128 -> 128
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)  # Kaiming, fan-out
    cls = model.classifier
    assert cls.weight.std().item() == pytest.approx(0.01, rel=0.1) and torch.equal(cls.bias, torch.zeros(19))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.05 and torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bns)


def test_icnet_head_upsamples_the_classifier_x2_then_to_the_input():
    model = build_model("icnet", num_classes=3, width=0.125).eval()
    seen = {}
    model.classifier.register_forward_hook(lambda m, i, o: seen.update(logits=o))
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        out = model(x)
    low = seen["logits"]  # 1/8
    assert low.shape[-2:] == (12, 20)
    torch.testing.assert_close(out, up(up(low, (24, 40)), (96, 160)))
