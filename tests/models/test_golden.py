"""Stored reference outputs of every model (segmentation_models_pytorch's ``test_preserve_forward_output``).

Each model is built at a tiny width from a fixed seed, its BatchNorm statistics are set to
one batch's, and its training outputs (main and auxiliary logits) and eval logits on a fixed
input are compared with the values stored in ``tests/models/golden/outputs.safetensors``. A change
that moves any number (a block, an init, a resize, the order of layers) turns this red; a
refactor that keeps the function keeps it green.

The stored file was written from this module; after a deliberate change to a model, rewrite
that model's entries and say why in the commit:

    python -m tests.models.test_golden icnet aticnet        # or: all
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from aticnet import MODEL_NAMES, build_model

GOLDEN = Path(__file__).parent / "golden" / "outputs.safetensors"
INPUT_SHAPE = (2, 3, 64, 96)  # the 1/32 map is 2 x 3: every pyramid bin still has work
EVAL_STRIDE = 3  # eval logits are kept on every 3rd row and column (the file stays small)


def golden_outputs(name: str) -> dict[str, torch.Tensor]:
    """``name``'s outputs on the fixed input: ``train/<key>`` for each training output, ``eval`` (subsampled)."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, width=0.125)
    x = torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    for m in model.modules():  # running statistics = this batch's: eval logits stay O(1), not in the hundreds
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    torch.manual_seed(2)  # dropout
    with torch.no_grad():
        train = model(x)
        model.eval()
        logits = model(x)
    outputs = {f"train/{key}": value for key, value in train.items()}
    outputs["eval"] = logits[..., ::EVAL_STRIDE, ::EVAL_STRIDE]
    return {key: value.float().contiguous() for key, value in outputs.items()}


@pytest.fixture(scope="module")
def stored() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_outputs_equal_the_stored_ones(name, stored):
    got = golden_outputs(name)
    expected = {k.split("/", 1)[1]: v for k, v in stored.items() if k.startswith(name + "/")}
    assert set(got) == set(expected), f"{name}: stored outputs {sorted(expected)}, model gives {sorted(got)}"
    for key, value in got.items():
        scale = expected[key].abs().max().item()
        # float32 over a few dozen layers, on whatever CPU kernels run here
        torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-5 * max(1.0, scale), msg=f"{name} {key}")


def regenerate(names: list[str]) -> None:
    entries = load_file(GOLDEN) if GOLDEN.exists() else {}
    for name in names:
        entries = {k: v for k, v in entries.items() if not k.startswith(name + "/")}
        entries.update({f"{name}/{k}": v for k, v in golden_outputs(name).items()})
    GOLDEN.parent.mkdir(exist_ok=True)
    save_file(entries, GOLDEN, metadata={"torch": torch.__version__})
    print(f"wrote {len(entries)} tensors for {', '.join(names)} to {GOLDEN}")


if __name__ == "__main__":
    requested = sys.argv[1:] or ["all"]
    regenerate(list(MODEL_NAMES) if requested == ["all"] else requested)
