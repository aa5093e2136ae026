"""The step that never waits for the device: no value read back per step, a non-finite loss skipped on the device,
torch.compile with its fallback, and the logged figures of several processes equal to one process's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aticnet import build_model
from aticnet.cli import main
from aticnet.data.loader import StreamSampler
from aticnet.training.config import TrainConfig
from aticnet.training.recipe import build_loss
from aticnet.training.run_dir import read_metrics
from aticnet.training.state import TrainState
from aticnet.training.step import Compiled, LogWindow, apply_update, finite_everywhere, forward_loss, train_step
from tests.helpers import save


class HostReads(TorchDispatchMode):
    """Counts the ops that bring a tensor's value to the host (``.item()``, ``bool()``, ``float()``, ``.tolist()``):
    on a GPU each is a wait for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


def tiny_state(**config) -> tuple[torch.nn.Module, TrainState, torch.nn.Module, TrainConfig]:
    torch.manual_seed(0)
    model = build_model("icnet", num_classes=3, width=0.125)
    cfg = TrainConfig(max_steps=10, **config)
    return model, TrainState(model, cfg), build_loss(model, cfg, None), cfg


@pytest.mark.parametrize("options", [{"optimizer": "sgd"}, {"optimizer": "adamw", "ema_decay": 0.9, "grad_clip": 1.0},
                                     {"loss": "ohem", "ohem_min_kept": 500}])
def test_a_step_and_its_tally_read_nothing_back(options, monkeypatch):
    model, state, criterion, config = tiny_state(**options)
    assert state.skips_on_device  # torch's fused optimisers, on the CPU too
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    window = LogWindow(torch.device("cpu"))
    train_step(model, criterion, state, images, labels, config)  # the first step allocates the optimiser's state
    tolist = []
    real_tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: tolist.append(1) or real_tolist(self))
    with HostReads() as mode:
        for step in (2, 3):
            result = train_step(model, criterion, state, images, labels, config)
            window.add(result["loss"], result["finite"], 2, step)
    assert mode.reads == [] and tolist == []
    monkeypatch.undo()
    assert window.row(3, 0.1, result["parts"], 0)["images"] == 4


def test_a_nonfinite_loss_leaves_weights_optimiser_and_average_alone():
    model, state, criterion, config = tiny_state(optimizer="sgd", ema_decay=0.5)
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    for _ in range(2):
        train_step(model, criterion, state, images, labels, config)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point() and "running" not in k}
    momentum = [state.optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    average = [t.clone() for t in state.ema.module.state_dict().values()]
    loss, _ = forward_loss(model, criterion, images, labels, config)
    loss = loss * float("nan")
    finite = finite_everywhere(loss)
    assert not bool(finite)
    apply_update(model, state, loss, finite, config)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert all(torch.equal(m, state.optimizer.state[p]["momentum_buffer"]) for m, p in zip(momentum, model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(average, state.ema.module.state_dict().values()))
    assert state.scheduler.last_epoch == 3  # the schedule moves on
    window = LogWindow(torch.device("cpu"))
    window.add(torch.tensor(1.0), torch.tensor(True), 2, 6)
    window.add(loss, finite, 2, 7)
    window.add(loss, finite, 2, 8)
    first = window.first_nonfinite()
    assert first[0] == 7 and np.isnan(first[1])
    row = window.row(8, 0.0, {}, 0)
    assert (row["loss"], row["nonfinite"], row["images"]) == (1.0, 2, 6)


def test_compile_that_fails_falls_back_to_the_module_and_says_why(monkeypatch, caplog):
    model = build_model("icnet", num_classes=3, width=0.125).eval()

    def broken(_net):
        def compiled(_images):
            raise RuntimeError("InductorError: no C++ compiler found\ndetails...")
        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    forward = Compiled(model)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = forward(images)
        assert torch.equal(out, model(images))
        assert forward.compiled is None and torch.equal(forward(images), out)
    assert "torch.compile could not compile the model (RuntimeError: InductorError: no C++ compiler found)" in caplog.text


def mirror_set(root: Path, n: int = 6) -> Path:
    """``n`` copies of one left-right symmetric 64x64 scene (a flip changes nothing) and one unreadable image: every
    batch holds the same image, so a process's BatchNorm statistics equal a whole batch's."""
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("road 128 64 128\ncar 0 0 142\nsky 70 130 180\n")
    half = np.random.default_rng(0).integers(0, 3, (64, 32)).astype(np.uint8)
    label = np.concatenate([half, half[:, ::-1]], axis=1)
    colours = np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], np.uint8)
    for i in range(n):
        save(root / "images/train" / f"s{i}.png", colours[label])
        save(root / "masks/train" / f"s{i}.png", label)
    (root / "images/train/s3.png").write_bytes(b"damaged")
    return root


@pytest.mark.slow
def test_two_processes_log_what_one_process_logs(tmp_path):
    root = mirror_set(tmp_path / "mirror")
    args = ["--dataset", "folder", "--data-root", str(root), "--val-split", "", "--crop-size", "64",
            "--scale-range", "1", "1", "--batch-size", "4", "--max-steps", "4", "--save-every", "0",
            "--model", "icnet", "--width", "0.125", "--workers", "0", "--optimizer", "sgd", "--log-every", "2",
            "--device", "cpu"]
    assert main(["train", *args, "--out", str(tmp_path / "one")]) == 0
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "aticnet", "train", *args, "--out", str(tmp_path / "two")],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one_rows, two_rows = ([r for r in read_metrics(tmp_path / name / "metrics.jsonl") if r["kind"] == "train"]
                          for name in ("one", "two"))
    assert [r["step"] for r in two_rows] == [r["step"] for r in one_rows] == [2, 4]
    for a, b in zip(one_rows, two_rows):
        # the mean over processes, not their sum; not to the bit: with a batch of one image, the pyramid's 1x1 bin has
        # no variance across the batch, and BatchNorm magnifies its rounding (a few 1e-4 between batch sizes)
        assert b["loss"] == pytest.approx(a["loss"], rel=3e-3)
        assert b["images"] == a["images"] and b["skipped"] == a["skipped"] and b["nonfinite"] == a["nonfinite"] == 0
    sampler = iter(StreamSampler(6, 4, seed=0))
    damaged = sum(next(sampler)[0] == 3 for _ in range(16))  # s3 among the 16 samples of 4 steps
    assert damaged >= 2 and sum(r["skipped"] for r in one_rows) == damaged
    assert sum(r["images"] for r in one_rows) == 16 - damaged
