"""Model configs read from files are bounded, and weights are checked against their config's model on the meta
device before that model's memory is allocated (a 1 kB file cannot ask for gigabytes)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import aticnet
from aticnet.models import ModelConfig, build_model
from aticnet.models import weights as weights_module
from aticnet.utils.errors import UserError


@pytest.mark.parametrize("field, value, says", [
    ("num_classes", 300000, "num_classes must be an integer in 1..1024"),
    ("num_classes", 0, "num_classes must be an integer in 1..1024"),
    ("num_classes", 2.5, "num_classes must be an integer"),
    ("width", 1000, "width must be in (0, 2]"),
    ("width", 0, "width must be in (0, 2]"),
    ("stage_blocks", (3, 4, 600), "stage_blocks must be 3 integers in 1..64"),
    ("stage_blocks", (3, 4), "stage_blocks must be 3 integers"),
    ("stage5_blocks", 65, "stage5_blocks must be an integer in 1..64"),
    ("bins", (1, 2, 3, 6, 7, 8, 9, 10, 11), "bins must be up to 8 integers"),
    ("rates", (2, 4, 8, 1000), "rates must be up to 8 integers in 1..64"),
    ("in_channels", 4096, "in_channels must be an integer in 1..16"),
    ("dropout", 1.5, "dropout must be in [0, 1)"),
])
def test_configs_out_of_bounds_are_refused(field, value, says):
    with pytest.raises(ValueError) as e:
        ModelConfig.from_dict({"name": "aticnet", field: value})
    assert says in str(e.value)


def test_the_largest_real_configs_pass():
    for overrides in ({"num_classes": 1024, "width": 2.0}, {"stage_blocks": (3, 8, 36), "stage5_blocks": 3},
                      {"bins": (1, 2, 3, 6), "rates": (1, 6, 12, 18)}):
        assert ModelConfig.from_dict({"name": "aticnet", **overrides}).to_dict()["name"] == "aticnet"


def config_file(path, **overrides) -> None:
    """A safetensors file of one tiny tensor whose metadata claims another, larger model."""
    config = {**build_model("aticnet", num_classes=19, width=0.125).config.to_dict(), **overrides}
    save_file({"x": torch.zeros(1)}, str(path), metadata={"model_config": json.dumps(config)})


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """The device of every model the weights module builds."""
    devices: list[str] = []
    real = weights_module.model_from_config

    def recording(config):
        model = real(config)
        devices.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(weights_module, "model_from_config", recording)
    return devices


def test_weights_that_do_not_fit_their_config_are_refused_before_allocating(tmp_path, builds):
    config_file(tmp_path / "big.safetensors", num_classes=1000, width=2.0)
    with pytest.raises(UserError, match="big.safetensors: weights do not fit aticnet"):
        aticnet.load(tmp_path / "big.safetensors", backend="torch")
    assert builds == ["meta"]  # the model of 1,000 classes at width 2 was never built in memory
    config_file(tmp_path / "huge.safetensors", num_classes=300000)
    with pytest.raises(UserError, match="bad model config .num_classes must be an integer in 1..1024"):
        aticnet.load(tmp_path / "huge.safetensors", backend="torch")
    assert builds == ["meta"]


def test_a_hub_folder_that_does_not_fit_is_refused_before_allocating(tmp_path, builds):
    hub = pytest.importorskip("aticnet.deploy.hub")
    folder = tmp_path / "hub"
    folder.mkdir()
    config_file(folder / "model.safetensors", num_classes=1000)
    with pytest.raises(UserError, match="weights do not fit"):
        hub.PretrainedSegmentation.from_pretrained(str(folder))
    assert builds == ["meta"]


def test_weights_that_fit_load_as_before(tmp_path, builds):
    from aticnet.models.weights import load_model, save_weights

    torch.manual_seed(0)
    model = build_model("aticnet", num_classes=5, width=0.125).eval()
    save_weights(model, tmp_path / "m.safetensors", {"classes": list("abcde")})
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert builds == ["meta", "cpu"] and meta["classes"] == list("abcde")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
