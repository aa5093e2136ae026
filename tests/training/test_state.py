"""What a checkpoint restores and what seeds what: loss scale, per-process random state, the loader's seeding."""

from __future__ import annotations

import logging

import pytest
import torch

from aticnet import build_model
from aticnet.data.loader import SeededSamples
from aticnet.training.config import TrainConfig
from aticnet.training.state import MovingAverage, TrainState
from aticnet.training.trainer import start_run
from aticnet.utils.distributed import DistInfo


def tiny_state(precision: str = "32", **fields) -> TrainState:
    model = build_model("icnet", num_classes=3, width=0.125)
    return TrainState(model, TrainConfig(optimizer="sgd", lr=0.1, max_steps=10, precision=precision, **fields))


def test_a_checkpoint_without_loss_scale_resumes_in_fp16_with_a_fresh_one(caplog):
    saved = tiny_state("bf16").state_dict()
    assert saved["scaler"] == {}  # bf16 and fp32 keep no loss scale
    resumed = tiny_state("16")  # torch's GradScaler also runs on the CPU, which is enough to load into it
    with caplog.at_level(logging.WARNING):
        resumed.load_state_dict(saved, "ckpt.pt")
    assert "starts a fresh loss scale" in caplog.text
    assert resumed.scaler.is_enabled() and resumed.scaler.get_scale() == torch.amp.GradScaler("cpu").get_scale()


def test_the_checkpoint_holds_each_process_random_state_and_restores_its_own():
    state = tiny_state()
    torch.manual_seed(7)
    saved = state.state_dict()
    assert isinstance(saved["rng"], list) and len(saved["rng"]) == 1  # one entry per process
    expected = torch.rand(3)
    torch.manual_seed(8)
    state.load_state_dict(saved, "ckpt.pt", rank=0)
    assert torch.equal(torch.rand(3), expected)


def test_a_checkpoint_from_fewer_processes_leaves_the_extra_one_on_its_seed(caplog):
    state = tiny_state()
    saved = state.state_dict()
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    with caplog.at_level(logging.WARNING):
        state.load_state_dict(saved, "ckpt.pt", rank=1)
    assert "no random-number state for process 1" in caplog.text and torch.equal(torch.rand(3), expected)


def test_reading_a_sample_seeds_no_gpu_generator_and_leaves_the_cpu_stream_alone(monkeypatch):
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: seeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: seeded.append(seed))

    class Draws(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(2)

    samples = SeededSamples(Draws())
    torch.manual_seed(3)
    seeded.clear()
    expected_after = torch.get_rng_state()
    first, again = samples[(1, 123)], samples[(2, 123)]
    assert torch.equal(first, again) and not seeded  # the sample's draws follow its seed; CUDA's untouched
    assert torch.equal(torch.get_rng_state(), expected_after)  # the process's own stream goes on undisturbed


def test_each_process_has_its_own_seed(synthetic_root, monkeypatch):
    monkeypatch.setattr("aticnet.training.trainer.init_distributed", lambda device_type: DistInfo(1, 2, 1))
    config = TrainConfig(model="icnet", width=0.125, dataset="synthetic", data_root=str(synthetic_root), crop_size=32,
                         batch_size=2, workers=0, seed=5, device="cpu", val_split="")
    start_run(config)
    assert torch.initial_seed() == 6  # rank 1 of seed 5: dropout differs across processes


def test_moving_average_matches_the_formula():
    model = torch.nn.Linear(2, 1)
    ema = MovingAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # the first update copies
    first = model.weight.clone()
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.9 * first + 0.1 * model.weight)
    assert ema.updates == 2 and not ema.module.weight.requires_grad
    restored = MovingAverage(torch.nn.Linear(2, 1), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.module.weight, ema.module.weight) and restored.updates == 2


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_a_step_needs_one_agreement_and_changes_the_weights(precision):
    from aticnet.training.losses import CascadeLoss
    from aticnet.training.step import train_step

    state = tiny_state(precision)
    criterion = CascadeLoss(state.model.aux_keys, state.model.config.aux_weights)
    before = [p.detach().clone() for p in state.model.parameters()]
    result = train_step(state.model, criterion, state, torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64)),
                        state.config)
    assert result["finite"] and torch.isfinite(result["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, state.model.parameters()))
