"""What a config builds, against hand-computed values: the learning-rate schedule, weight-decay groups, class
weights, the moving average of the weights, warm starts across class counts, frozen trunks, held-out drives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from aticnet import build_model
from aticnet.data import build_dataset
from aticnet.models import model_config
from aticnet.models.weights import save_weights
from aticnet.training.config import TrainConfig
from aticnet.training.losses import CascadeLoss
from aticnet.training.recipe import (
    build_datasets,
    build_network,
    build_scheduler,
    class_weights_for,
    parameter_groups,
)
from aticnet.training.state import TrainState
from aticnet.training.step import train_step
from tests.helpers import make_folder_set, save


def lrs(config: TrainConfig, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = build_scheduler(optimizer, config)
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


def test_poly_schedule_by_hand():
    got = lrs(TrainConfig(lr=0.01, max_steps=10, poly_power=0.9), 11)
    expected = [0.01 * (1 - k / 10) ** 0.9 for k in range(11)]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_warmup_then_poly_by_hand():
    got = lrs(TrainConfig(lr=0.1, max_steps=10, warmup_steps=4, poly_power=2.0), 11)
    warmup = [0.1 * (1e-3 + (1 - 1e-3) * k / 4) for k in range(4)]  # linear from lr/1000
    decay = [0.1 * (1 - k / 6) ** 2.0 for k in range(7)]  # poly over the 6 remaining steps
    assert got == pytest.approx(warmup + decay, rel=1e-9, abs=1e-15)


def test_weight_decay_hits_conv_weights_only():
    model = build_model("icnet", num_classes=3, width=0.125)
    decay, rest = parameter_groups(model, TrainConfig(weight_decay=1e-4))
    assert decay["weight_decay"] == 1e-4 and rest["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    convs = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert decayed == convs
    undecayed = {names[id(p)] for p in rest["params"]}
    bns = {f"{n}.{k}" for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) for k in ("weight", "bias")}
    biases = {f"{n}.bias" for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.bias is not None}
    assert undecayed == bns | biases and "classifier.bias" in undecayed
    (everything,) = parameter_groups(model, TrainConfig(weight_decay=1e-4, weight_decay_scope="all"))
    assert len(everything["params"]) == len(list(model.parameters())) and everything["weight_decay"] == 1e-4


def test_class_weights_by_hand(tmp_path):
    root = tmp_path / "set"
    (root).mkdir()
    (root / "classes.txt").write_text("a 1 1 1\nb 2 2 2\nc 3 3 3\n")
    labels = np.zeros((10, 10), np.uint8)  # 60 a, 30 b, 10 c, and 5 ignored pixels left out
    labels[6:9] = 1
    labels[9] = 2
    labels[0, :5] = 255
    save(root / "masks/train/x.png", labels)
    save(root / "images/train/x.png", np.zeros((10, 10, 3), np.uint8))
    weights = class_weights_for(build_dataset("folder", root, "train"), 3)
    freq = [55 / 95, 30 / 95, 10 / 95]
    assert weights.tolist() == pytest.approx([1 / math.log(1.02 + p) for p in freq], rel=1e-6)


def test_moving_average_of_the_weights_by_hand():
    torch.manual_seed(0)
    model = build_model("icnet", num_classes=3, width=0.125)
    config = TrainConfig(optimizer="sgd", lr=0.1, max_steps=10, ema_decay=0.9)
    state = TrainState(model, config)
    criterion = CascadeLoss(model.aux_keys, model.config.aux_weights)
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    snapshots = []
    for _ in range(3):
        train_step(model, criterion, state, images, labels, config)
        snapshots.append({k: v.detach().clone() for k, v in model.named_parameters()})
    name = "classifier.weight"
    expected = snapshots[0][name]  # the first update copies
    for snap in snapshots[1:]:
        expected = 0.9 * expected + 0.1 * snap[name]
    torch.testing.assert_close(dict(state.ema.module.named_parameters())[name], expected)
    assert not torch.equal(expected, snapshots[-1][name])
    assert state.eval_model is state.ema.module


def test_init_from_another_class_count_keeps_the_trunk_and_starts_fresh_heads(tmp_path, caplog):
    torch.manual_seed(1)
    source = build_model("icnet", num_classes=19, width=0.125)
    save_weights(source, tmp_path / "r19.safetensors", {})
    mcfg = model_config("icnet", num_classes=11, width=0.125)
    torch.manual_seed(2)
    fresh = build_network(mcfg, TrainConfig())
    torch.manual_seed(2)
    with caplog.at_level("INFO", logger="aticnet"):
        model = build_network(mcfg, TrainConfig(init=str(tmp_path / "r19.safetensors")))
    heads = {"classifier.weight", "classifier.bias", "cff_16.aux_classifier.weight", "cff_16.aux_classifier.bias",
             "cff_8.aux_classifier.weight", "cff_8.aux_classifier.bias"}
    loaded, own = source.state_dict(), model.state_dict()
    for key, value in own.items():
        if key in heads:
            assert torch.equal(value, fresh.state_dict()[key]), key  # a fresh start, as without --init
        else:
            assert torch.equal(value, loaded[key]), key  # bit-equal to the 19-class weights
    assert "init from" in caplog.text and f"{len(own) - 6} tensors loaded, 6 started fresh" in caplog.text


def test_freeze_trunk_trains_only_what_follows_it(tmp_path):
    torch.manual_seed(0)
    save_weights(build_model("icnet", num_classes=3, width=0.125), tmp_path / "w.safetensors", {})
    config = TrainConfig(init=str(tmp_path / "w.safetensors"), freeze_trunk=True, optimizer="sgd", lr=0.1, max_steps=5)
    model = build_network(model_config("icnet", num_classes=3, width=0.125), config)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    state = TrainState(model, config)
    criterion = CascadeLoss(model.aux_keys, model.config.aux_weights)
    train_step(model, criterion, state, torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64)), config)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == name.startswith("trunk."), name


def test_held_out_drive_leaves_training_and_becomes_the_val_set(tmp_path):
    root = make_folder_set(tmp_path / "set", n=0)
    rng = np.random.default_rng(0)
    for name in ["a_1", "a_2", "b_1", "b_2", "b_3", "c_1"]:
        save(root / "images/train" / f"{name}.png", rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
        save(root / "masks/train" / f"{name}.png", np.zeros((32, 48), np.uint8))
    config = TrainConfig(dataset="folder", data_root=str(root), holdout_drive="b", crop_size=32)
    train_set, val_set, _ = build_datasets(config)
    assert train_set.drives() == {"a": 2, "c": 1} and val_set.drives() == {"b": 3}
    assert val_set.transform is not None and train_set.transform is not None
    both = build_dataset("folder", root, "train+train", exclude_drives=["a"])
    assert both.drives() == {"b": 6, "c": 2}  # a union keeps each split's frames


def test_each_model_gets_its_loss_resolution_and_ohem_when_asked(tmp_path):
    from aticnet.training.recipe import build_loss

    root = make_folder_set(tmp_path / "set")
    data = build_dataset("folder", root, "train")
    psp = build_loss(build_model("pspnet", num_classes=3, width=0.125), TrainConfig(), data)
    icnet = build_loss(build_model("icnet", num_classes=3, width=0.125), TrainConfig(loss="ohem", ohem_min_kept=7), data)
    assert psp.upsample_logits and psp.weights == {"out": 1.0, "aux": 0.4} and psp.ohem is None
    assert not icnet.upsample_logits and icnet.weights == {"out": 1.0, "aux_16": 0.4, "aux_8": 0.4}
    assert (icnet.ohem.threshold, icnet.ohem.min_kept) == (0.7, 7)
