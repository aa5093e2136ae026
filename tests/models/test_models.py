"""One shared tester reused by every model, then checks of each model against the papers' structure and sizes."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from aticnet import build_model
from aticnet.models.analysis import atrous_receptive_field, count_flops, count_parameters
from aticnet.models.layers import Bottleneck
from aticnet.models.pyramid import AtrousPyramidPooling, ConcatPyramidPooling, SumPyramidPooling

TINY = dict(width=0.125)  # 8-channel stem: fast enough for a CPU test suite


def total_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class ModelTester:
    """Forward, backward, odd sizes, save and load: the contract every model keeps."""

    name: str
    train_keys: tuple[str, ...]
    out_stride: int  # resolution of "out" in training, relative to the input

    def model(self, num_classes: int = 5) -> nn.Module:
        torch.manual_seed(0)
        return build_model(self.name, num_classes=num_classes, **TINY)

    @pytest.mark.parametrize("size", [(64, 64), (65, 97), (33, 40)])
    def test_eval_logits_at_input_size(self, size):
        model = self.model().eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, *size))
        assert out.shape == (1, 5, *size)
        assert torch.isfinite(out).all()

    def test_train_outputs(self):
        model = self.model().train()
        out = model(torch.randn(2, 3, 64, 128))
        assert set(out) == {"out", *self.train_keys}
        assert out["out"].shape == (2, 5, 64 // self.out_stride, 128 // self.out_stride)
        for key in self.train_keys:
            assert out[key].shape[:2] == (2, 5)

    def test_backward_reaches_every_parameter(self):
        model = self.model().train()
        out = model(torch.randn(2, 3, 64, 64))
        sum(v.square().mean() for v in out.values()).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert missing == []

    def test_save_and_load_roundtrip(self):
        model = self.model().eval()
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        other = build_model(self.name, num_classes=5, **TINY).eval()
        other.load_state_dict(torch.load(buffer, weights_only=True))
        x = torch.randn(1, 3, 48, 80)
        with torch.no_grad():
            torch.testing.assert_close(model(x), other(x))

    def test_config_is_kept(self):
        model = self.model()
        assert model.config.name == self.name
        assert model.config.num_classes == 5
        assert len(model.config.aux_weights) == len(self.train_keys)


class TestICNet(ModelTester):
    name, train_keys, out_stride = "icnet", ("aux_16", "aux_8"), 4


class TestAtICNet(ModelTester):
    name, train_keys, out_stride = "aticnet", ("aux_16", "aux_8"), 4


class TestICNetStage5x2(ModelTester):
    name, train_keys, out_stride = "icnet_s5x2", ("aux_16", "aux_8"), 4


class TestICNetAtrous(ModelTester):
    name, train_keys, out_stride = "icnet_atrous", ("aux_16", "aux_8"), 4


class TestPSPNet(ModelTester):
    name, train_keys, out_stride = "pspnet", ("aux",), 8


class TestLRASPPPeer(ModelTester):  # torchvision's, behind the same interface; upsamples to the input itself
    name, train_keys, out_stride = "lraspp_mobilenet_v3", (), 1


def test_cascade_aux_resolutions():
    model = build_model("icnet", num_classes=3, **TINY).train()
    out = model(torch.randn(1, 3, 128, 256))
    assert out["aux_16"].shape[-2:] == (8, 16)
    assert out["aux_8"].shape[-2:] == (16, 32)
    assert out["out"].shape[-2:] == (32, 64)


# Full-size references (the papers' and releases' sizes). Built on the meta device: shapes only, no memory.
@pytest.mark.parametrize(
    "name, width, reference, tolerance",
    [
        ("icnet", 0.5, 6.7e6, 0.05),
        ("icnet", 1.0, 26.8e6, 0.05),
        ("aticnet", 0.5, 10.8e6, 0.05),
        ("pspnet", 1.0, 47.5e6, 0.035),  # "46-49 M"
    ],
)
def test_parameter_counts_match_references(name, width, reference, tolerance):
    with torch.device("meta"):
        model = build_model(name, width=width)
    assert abs(total_params(model) - reference) / reference < tolerance


@pytest.mark.parametrize("name, reference", [("icnet", 60e9), ("aticnet", 77e9)])
def test_flops_at_cityscapes_size_match_references(name, reference):
    with torch.device("meta"):
        model = build_model(name)
    assert abs(count_flops(model, (1024, 2048)) - reference) / reference < 0.15


def test_aticnet_differs_from_icnet_in_stage5_and_the_pyramid_only():
    with torch.device("meta"):
        icnet, aticnet = build_model("icnet"), build_model("aticnet")
    a = {k: v.shape for k, v in icnet.state_dict().items()}
    b = {k: v.shape for k, v in aticnet.state_dict().items()}
    only_icnet = {k.split(".")[:4] == ["trunk", "stages", "3", "2"] for k in set(a) - set(b)}
    assert only_icnet == {True}, "ICNet's extra keys are exactly the third stage-5 block"
    assert {k.split(".")[0] for k in set(b) - set(a)} == {"pyramid"}
    assert all(a[k] == b[k] for k in set(a) & set(b)), "everything shared keeps its shape"
    assert len(icnet.trunk.stages[3]) == 3 and len(aticnet.trunk.stages[3]) == 2
    # The four branches: C -> C/8 atrous 3x3 and C/8 -> C 1x1 at C = 1024 (half width).
    extra = total_params(aticnet.pyramid)
    assert extra == 4 * (1024 * 128 * 9 + 2 * 128 + 128 * 1024 + 2 * 1024)


def dilations(model: nn.Module, kernel: int = 3) -> set[int]:
    return {m.dilation[0] for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] == kernel}


def test_atrous_pyramid_rates_and_padding():
    model = build_model("aticnet", **TINY)
    convs = [level.atrous[0] for level in model.pyramid.levels]
    assert [c.dilation for c in convs] == [(2, 2), (4, 4), (8, 8), (12, 12)]
    assert [c.padding for c in convs] == [(2, 2), (4, 4), (8, 8), (12, 12)]
    assert [level.bins for level in model.pyramid.levels] == [1, 2, 3, 6]
    assert {8, 12} <= dilations(model)
    assert not {8, 12} & dilations(build_model("icnet", **TINY))


def test_rates_and_bins_are_config_fields():
    model = build_model("aticnet", rates=(12, 8, 4, 2), **TINY)
    assert [level.atrous[0].dilation[0] for level in model.pyramid.levels] == [12, 8, 4, 2]
    with pytest.raises(ValueError, match="one rate per bin"):
        build_model("aticnet", bins=(1, 2), **TINY)
    with pytest.raises(ValueError, match="unknown model option"):
        build_model("aticnet", rate=(1,))
    with pytest.raises(ValueError, match="unknown model"):
        build_model("unet")


def test_sum_pyramid_by_hand():
    # A constant map pools to itself at every bin: output = (1 + 4 levels) x input.
    x = torch.full((1, 3, 12, 12), 2.0)
    assert torch.equal(SumPyramidPooling(3)(x), torch.full_like(x, 10.0))
    # One bin of 2 on a 2x2 map: each cell is its own average, so each pixel doubles.
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert torch.equal(SumPyramidPooling(1, bins=(2,))(x), 2 * x)
    # Bin 1 adds the global mean, 1.5, to every pixel.
    assert torch.equal(SumPyramidPooling(1, bins=(1,))(x), x + 1.5)


@pytest.mark.parametrize("module", [SumPyramidPooling(16), AtrousPyramidPooling(16)])
def test_sum_fusion_keeps_channels(module):
    x = torch.randn(2, 16, 9, 11)
    assert module.eval()(x).shape == x.shape
    assert module.out_channels == 16


def test_concat_pyramid_doubles_channels():
    module = ConcatPyramidPooling(16).eval()
    out = module(torch.randn(2, 16, 9, 11))
    assert out.shape == (2, 32, 9, 11)


def test_receptive_field_formula():
    # F = (r - 1)(k - 1) + k, worked by hand for the paper's rates with k = 3.
    assert [atrous_receptive_field(3, r) for r in (1, 2, 4, 8, 12)] == [3, 5, 9, 17, 25]
    assert atrous_receptive_field(1, 5) == 1


def test_zero_init_residual_makes_blocks_identity():
    torch.manual_seed(0)
    model = build_model("icnet", zero_init_residual=True, **TINY).eval()
    block = model.trunk.stages[0][1]  # no projection: output = relu(x) for x >= 0
    assert isinstance(block, Bottleneck)
    x = torch.rand(1, block.expand[0].out_channels, 8, 8)
    torch.testing.assert_close(block(x), x)


def test_parameter_parts_add_up():
    model = build_model("aticnet", **TINY)
    counts = count_parameters(model)
    assert counts["total"] == total_params(model)
    assert counts["pyramid"] > counts["cascade"] > 0


def test_receptive_fields_by_hand():
    """rf += d (k - 1) * jump, jump *= stride, along the deepest path; worked out by hand from the layers' list.

    ICNet: the medium input (a 2x2 stride-2 halving) rf 2 / jump 2; stem convs 3 s2, 3, 3 and max-pool 3 s2:
    2 + 2*2 + 2*4 + 2*4 + 2*4 = 30 / 8; stage 2, three 3x3: + 3 * 16 = 78; conv3_1 (stride 2 in its 1x1, then
    a 3x3 at jump 16): 110 / 16; the 1/32 halving: 126 / 32; three more stage-3 blocks: + 3 * 64 = 318; stage 4,
    six 3x3 with dilation 2 (k_eff 5): + 6 * 128 = 1086; stage 5, dilation 4 (k_eff 9): + 3 * 256 = 1854
    (AtICNet's two blocks: 1598). An atrous level with rate r adds (2r) * 32 on AtICNet's trunk.
    PSPNet: stem 15 / 4, stage 2 39, stage 3 103 / 8, stage 4 + 6 * 32 = 295, stage 5 + 3 * 64 = 487.
    """
    from aticnet.models.analysis import receptive_fields

    def trunk(name):
        return [(t["part"], t["rf"], t["stride"]) for t in receptive_fields(build_model(name, **TINY))["trunk"]]

    assert trunk("icnet") == [("medium input", 2, 2), ("stem", 30, 8), ("stage2", 78, 8), ("conv3_1", 110, 16),
                              ("1/32 resize", 126, 32), ("stage3", 318, 32), ("stage4", 1086, 32), ("stage5", 1854, 32)]
    assert trunk("aticnet")[-1] == ("stage5", 1598, 32)
    assert trunk("pspnet") == [("stem", 15, 4), ("stage2", 39, 4), ("stage3", 103, 8), ("stage4", 295, 8),
                               ("stage5", 487, 8)]
    levels = receptive_fields(build_model("aticnet", **TINY), (1024, 2048))["pyramid"]
    assert [(lv["bin"], lv["rate"], lv["F"], lv["F_input"]) for lv in levels] == [
        (1, 2, 5, 1598 + 4 * 32), (2, 4, 9, 1598 + 8 * 32), (3, 8, 17, 1598 + 16 * 32), (6, 12, 25, 1598 + 24 * 32)]
    assert [lv["pool_region"] for lv in levels] == [[1024, 2048], [512, 1024], [1024 / 3, 2048 / 3], [1024 / 6, 2048 / 6]]
