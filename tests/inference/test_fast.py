"""The fast inference path computes what the plain model computes.

Tolerance: Conv-BN folding changes only the order of float32 roundings (w * gamma / sigma is
rounded once, instead of rounding the conv output and then the affine), each a relative
1e-7; through ~60 layers with sums of up to a few thousand terms that stays far below
1e-4 of the logits' scale (measured on ICNet-0.5 at 1024x2048: 2e-6). Argmax labels can
flip only where two logits are within that distance, so nearly every pixel must agree.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aticnet.benchmark import build_benchmark_model
from aticnet.inference.fast import LabelPredictor, compile_module, fold_conv_bn, optimize_for_inference
from aticnet.models import build_model

SIZE = (64, 96)
TOL = 1e-4  # of max |logit|, see the module doc


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run best on one thread


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine, so folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    for m in model.modules():  # classifiers start at std 0.01: give the logits a real spread
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.normal_(m.weight, std=0.5, generator=g)
    return model.eval()


def tiny(name: str) -> nn.Module:
    if name in ("lraspp_mobilenet_v3", "deeplabv3_mobilenet_v3"):
        return randomise_bn(build_benchmark_model(name))
    return randomise_bn(build_model(name, width=0.125))


def image(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model(x)
    return (out["out"] if isinstance(out, dict) else out).float()


def assert_same(plain: torch.Tensor, fast: torch.Tensor, tol: float = TOL, agree: float = 0.999) -> None:
    assert fast.shape == plain.shape
    scale = plain.abs().max()
    assert (fast - plain).abs().max() <= tol * scale, f"max diff {(fast - plain).abs().max():.3g}, scale {scale:.3g}"
    assert (fast.argmax(1) == plain.argmax(1)).float().mean() >= agree


@pytest.mark.parametrize("name", ["icnet", "aticnet", "pspnet"])
def test_fast_path_equals_plain_path(name):
    model = tiny(name)
    x = image()
    plain = logits(model, x)
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())  # every BN of ours folds
    assert_same(plain, logits(fast, x))
    # the original is untouched and still usable (a copy was optimised)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.equal(logits(model, x), plain)


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3", "deeplabv3_mobilenet_v3"])
def test_fast_path_folds_torchvision_peers(name):
    model = tiny(name)
    x = image()
    plain = logits(model, x)
    fast = optimize_for_inference(model)
    folded = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) - sum(
        isinstance(m, nn.BatchNorm2d) for m in fast.modules()
    )
    assert folded > 10
    assert_same(plain, logits(fast, x))


@pytest.mark.parametrize("options", [{"channels_last": False}, {"fold_bn": False}])
def test_each_option_alone_keeps_the_function(options):
    model = tiny("aticnet")
    x = image()
    assert_same(logits(model, x), logits(optimize_for_inference(model, **options), x))


def test_fast_model_keeps_config_and_takes_nchw_float_input():
    model = tiny("icnet")
    fast = optimize_for_inference(model)
    assert fast.config == model.config
    out = logits(fast, image())
    assert out.shape == (1, model.config.num_classes, *SIZE)
    assert fast.high[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_is_close_but_opt_in():
    model = tiny("icnet")
    x = image()
    plain = logits(model, x)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    with torch.inference_mode():
        out = fast(x)
    assert out.dtype == torch.bfloat16
    # bf16 keeps 8 significant bits: a few percent of the logits' scale, most labels the same
    assert_same(plain, out.float(), tol=0.1, agree=0.9)


def test_fold_needs_eval_mode_and_leaves_lone_bn_alone():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(ValueError):
        fold_conv_bn(seq.train())
    assert fold_conv_bn(seq.eval()) == 1
    assert isinstance(seq[1], nn.Identity) and isinstance(seq[3], nn.BatchNorm2d)


def test_label_predictor_handles_dict_outputs():
    class Dict(nn.Module):
        def forward(self, x):
            return {"out": x}

    x = torch.randn(1, 5, 4, 6)
    assert torch.equal(LabelPredictor(Dict())(x), x.argmax(1))


@pytest.mark.slow
def test_compiled_labels_equal_eager_labels():
    model = optimize_for_inference(tiny("icnet"))
    x = image()
    with torch.inference_mode():
        eager = LabelPredictor(model)(x)
        compiled = compile_module(LabelPredictor(model))
        labels = compiled(x)
    assert compile_module(model).config == model.config  # attributes reach the wrapped module
    assert (labels == eager).float().mean() >= 0.999
