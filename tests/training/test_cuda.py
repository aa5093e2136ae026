"""Training and evaluation on a CUDA GPU (skipped without one): mixed precision across a resume, channels-last
weights, no wait for the device in a step, NCCL collectives on CPU tensors, evaluation equal to the CPU's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from aticnet import build_model
from aticnet.cli import main
from aticnet.evaluation.evaluate import evaluate
from aticnet.models import place_on_device
from aticnet.training.checkpoint import load_checkpoint
from aticnet.training.run_dir import read_metrics
from tests.helpers import TINY_TRAIN

pytestmark = pytest.mark.cuda
CUDA_TRAIN = [*TINY_TRAIN[:-2], "--device", "cuda"]  # TINY_TRAIN pins the CPU last


@pytest.fixture(autouse=True)
def global_flags_restored():
    """Training in this process sets process-wide flags (--deterministic, cuDNN's autotuner): put them back."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]


def losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}


@pytest.mark.parametrize("precision", ["16", "bf16"])
def test_mixed_precision_resumes_with_its_loss_scale(synthetic_root, tmp_path, precision):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = [*CUDA_TRAIN, "--data-root", str(synthetic_root), "--precision", precision, "--max-steps", "6",
            "--save-every", "3", "--keep-checkpoints", "5", "--deterministic"]
    assert main(["train", *args, "--out", str(full)]) == 0
    saved = load_checkpoint(full / "checkpoints" / "step_0000003.pt")
    assert ("scale" in saved["scaler"]) == (precision == "16")
    assert saved["rng"][0]["cuda"] is not None  # the GPU's generator is saved too
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "config.yaml", resumed / "config.yaml")
    shutil.copy(full / "checkpoints" / "step_0000003.pt", resumed / "checkpoints")
    assert main(["train", "--out", str(resumed), "--resume"]) == 0
    want, got = {s: v for s, v in losses(full).items() if s > 3}, losses(resumed)
    assert want.keys() == got.keys()
    # bilinear upsampling's backward adds with atomics on a GPU: close, not bit-equal
    assert all(abs(want[s] - got[s]) <= 1e-2 * abs(want[s]) for s in want), (want, got)
    if precision == "16":
        final = load_checkpoint(resumed / "checkpoints" / "step_0000006.pt")["scaler"]
        assert final["scale"] > 0


def test_weights_compute_channels_last_on_the_gpu():
    model = place_on_device(build_model("icnet", num_classes=5, width=0.125), torch.device("cuda"))
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


@pytest.mark.parametrize("precision", ["16", "bf16"])
def test_a_training_step_never_waits_for_the_device(precision):
    from aticnet.training.config import TrainConfig
    from aticnet.training.losses import CascadeLoss
    from aticnet.training.state import TrainState
    from aticnet.training.step import LogWindow, agree_on_host, train_step

    device = torch.device("cuda")
    model = place_on_device(build_model("icnet", num_classes=5, width=0.125), device)
    config = TrainConfig(optimizer="adamw", lr=1e-3, max_steps=10, precision=precision, ema_decay=0.9, grad_clip=5.0)
    state, criterion = TrainState(model, config), CascadeLoss(model.aux_keys, model.config.aux_weights).to(device)
    assert state.skips_on_device  # the fused optimiser
    images, labels = torch.randn(2, 3, 128, 128, device=device), torch.randint(0, 5, (2, 128, 128), device=device)
    window = LogWindow(device)
    for _ in range(2):  # the first steps allocate and pick algorithms
        train_step(model, criterion, state, images, labels, config)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in (3, 4):
                result = train_step(model, criterion, state, images, labels, config)
                agree_on_host(stop=False, next_empty=False)
                window.add(result["loss"], result["finite"], 2, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert syncs == []  # the loss and its verdict are read only when a metrics row or a checkpoint is due
    assert window.row(4, 0.0, result["parts"], 0)["images"] == 4


def test_collectives_take_cpu_tensors_under_nccl_and_ddp_buckets_match(tmp_path):
    import torch.distributed as dist

    from aticnet.utils.distributed import all_gather_objects, all_reduce_sum

    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        total = all_reduce_sum(torch.tensor([1.5, 2.0], dtype=torch.float64))  # a CPU float64: NCCL wants the GPU
        assert total.device.type == "cpu" and total.tolist() == [1.5, 2.0]
        assert all_gather_objects({"a": 1}) == [{"a": 1}]
        model = place_on_device(build_model("icnet", num_classes=5, width=0.125), torch.device("cuda"))
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0], broadcast_buffers=False,
                                                        gradient_as_bucket_view=True)
        x = torch.randn(2, 3, 96, 96, device="cuda")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sum(v.float().mean() for v in net(x).values()).backward()
        assert not [w for w in caught if "strides do not match" in str(w.message)]
    finally:
        dist.destroy_process_group()


def test_evaluation_on_the_gpu_equals_the_cpu(synthetic_root, tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY_TRAIN, "--data-root", str(synthetic_root), "--out", str(run), "--max-steps", "3"]) == 0
    cpu = evaluate(run, "synthetic", synthetic_root, "val", device="cpu", workers=0, progress=False)
    gpu = evaluate(run, "synthetic", synthetic_root, "val", device="cuda", workers=0, progress=False)
    assert gpu["num_pixels"] == cpu["num_pixels"]
    assert abs(gpu["pixel_accuracy"] - cpu["pixel_accuracy"]) < 2e-3 and abs(gpu["miou"] - cpu["miou"]) < 5e-3


@pytest.mark.cuda2
def test_two_processes_on_two_gpus(synthetic_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "aticnet",
           "train", *CUDA_TRAIN, "--data-root", str(synthetic_root), "--out", str(out), "--max-steps", "4",
           "--save-every", "2", "--log-every", "1"]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "strides do not match" not in result.stderr
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [1, 2, 3, 4]
