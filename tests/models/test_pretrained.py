"""Shipped weights by name: the listing, every way of loading a name, fp16 storage, and the errors."""

from __future__ import annotations

import json

import pytest
import torch

import aticnet
from aticnet.cli import main
from aticnet.models import pretrained
from aticnet.utils.errors import UserError
from tests.helpers import fails


@pytest.fixture()
def shipped(tmp_path, monkeypatch):
    """A folder of shipped weights holding one tiny model, ``icnet-toy``, as benchmarks/ship.py writes them."""
    torch.manual_seed(0)
    model = aticnet.build_model("icnet", num_classes=3, width=0.125).eval()
    meta = {"classes": ["road", "car", "sky"], "colors": [[128, 64, 128], [0, 0, 142], [70, 130, 180]],
            "dataset": "toy", "shipped": {"input_size": [64, 96], "params": 123, "metrics": {"toy_miou": 0.5},
                                          "commands": {"train": "aticnet train ..."}}}
    aticnet.save_pretrained(model, tmp_path / "icnet-toy", meta=meta, dtype=torch.float16)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    return model


def test_the_listing_reads_each_folder(shipped):
    (w,) = aticnet.list_weights()
    assert (w.name, w.model, w.dataset, w.num_classes, w.classes) == ("icnet-toy", "icnet", "toy", 3,
                                                                      ("road", "car", "sky"))
    assert w.input_size == (64, 96) and w.metrics == {"toy_miou": 0.5} and w.file.is_file()


def test_every_way_of_loading_a_name_gives_the_same_model(shipped, capsys):
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    half = {k: v.half().float() for k, v in shipped.state_dict().items()}  # the file holds fp16 numbers
    built = aticnet.build_model("icnet", weights="toy")
    assert all(torch.equal(built.state_dict()[k], v) for k, v in half.items())
    assert next(built.parameters()).dtype == torch.float32 and built.training
    assert torch.equal(aticnet.build_model("icnet", weights="icnet-toy").state_dict()["classifier.weight"],
                       half["classifier.weight"])
    want = aticnet.load("icnet-toy", backend="torch").predict(image)
    assert torch.equal(aticnet.from_pretrained("icnet-toy", backend="torch").predict(image), want)
    assert main(["weights"]) == 0 and "icnet-toy" in capsys.readouterr().out
    assert main(["weights", "--json"]) == 0 and json.loads(capsys.readouterr().out)[0]["name"] == "icnet-toy"


def test_init_from_a_name_loads_what_fits(shipped, synthetic_root, tmp_path):
    from aticnet.training.config import TrainConfig
    from aticnet.training.recipe import build_network

    mcfg = aticnet.build_model("icnet", num_classes=19, width=0.125).config
    model = build_network(mcfg, TrainConfig(init="icnet-toy"))
    trunk = "trunk.stages.0.0.reduce.0.weight"
    assert torch.equal(model.state_dict()[trunk], shipped.state_dict()[trunk].half().float())  # 19 classes: heads fresh


def test_names_that_do_not_exist_list_those_that_do(shipped, capsys):
    with pytest.raises(UserError, match=r"aticnet-nope: .*shipped: icnet-toy"):
        aticnet.load("aticnet-nope")
    with pytest.raises(UserError, match=r"icnet-nope: no shipped weights of that name \(shipped: icnet-toy\)"):
        aticnet.build_model("icnet", weights="nope")
    with pytest.raises(UserError, match="these are icnet weights, not aticnet"):
        aticnet.build_model("aticnet", weights="icnet-toy")
    with pytest.raises(UserError, match="predicts 3 classes, not 19"):
        aticnet.build_model("icnet", num_classes=19, weights="toy")
    fails(capsys, ["predict", "--weights", "aticnet-nope", "x.png", "--out", "o"], "aticnet-nope", "shipped: icnet-toy")


def test_a_damaged_shipped_file_is_one_line(shipped, capsys):
    file = aticnet.get_weights("icnet-toy").file
    file.write_bytes(file.read_bytes()[:200])
    fails(capsys, ["predict", "--weights", "icnet-toy", "x.png", "--out", "o"], "model.safetensors",
          "not a safetensors weights file")
