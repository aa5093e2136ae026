"""Training from decoded frames: ``--cache memory`` logs the losses of ``--cache none``, bit for bit, with loader
processes too; ``--cache device`` those of augmentation on the device from the loader; both resume exactly."""

from __future__ import annotations

import logging
import shutil

from aticnet.cli import main
from aticnet.training.run_dir import read_metrics
from tests.helpers import TINY_TRAIN, fails


def losses(out) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}


def train(root, out, *extra) -> None:
    assert main(["train", *TINY_TRAIN, "--data-root", str(root), "--out", str(out), "--max-steps", "4",
                 "--save-every", "2", *extra]) == 0


def test_memory_cache_gives_the_losses_of_decoding(synthetic_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="aticnet")
    cache = ["--cache-dir", str(tmp_path / "frames")]
    train(synthetic_root, tmp_path / "none", "--color-jitter", "0.2", "0.2", "0.2", "0.05")
    train(synthetic_root, tmp_path / "memory", "--color-jitter", "0.2", "0.2", "0.2", "0.05", "--cache", "memory",
          *cache, "--workers", "2")
    assert "decoding 8 frames" in caplog.text and "256 KiB" in caplog.text  # 8 frames of 64x128, 4 bytes a pixel
    assert losses(tmp_path / "memory") == losses(tmp_path / "none") and len(losses(tmp_path / "none")) == 4
    caplog.clear()
    train(synthetic_root, tmp_path / "again", "--cache", "memory", *cache)
    assert "decoding" not in caplog.text and "8 decoded frames" in caplog.text  # the file is reused


def test_device_cache_gives_the_losses_of_augmenting_on_the_device_and_resumes(synthetic_root, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "frames")]
    train(synthetic_root, tmp_path / "loader", "--augment-on", "device", "--color-jitter", "0.2", "0.2", "0.2", "0.05")
    train(synthetic_root, tmp_path / "device", "--cache", "device", "--color-jitter", "0.2", "0.2", "0.2", "0.05", *cache)
    assert losses(tmp_path / "device") == losses(tmp_path / "loader")
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "device", resumed)
    shutil.rmtree(resumed / "checkpoints")
    (resumed / "checkpoints").mkdir()
    shutil.copy(tmp_path / "device/checkpoints/step_0000002.pt", resumed / "checkpoints")
    (resumed / "metrics.jsonl").unlink()
    assert main(["train", "--out", str(resumed), "--resume"]) == 0
    assert losses(resumed) == {s: v for s, v in losses(tmp_path / "device").items() if s > 2}


def test_cache_choices_are_checked(synthetic_root, tmp_path, capsys):
    common = ["train", *TINY_TRAIN, "--data-root", str(synthetic_root), "--out", str(tmp_path / "x")]
    fails(capsys, [*common, "--cache", "gpu"], "cache must be one of none, memory, device, not 'gpu'")
    fails(capsys, [*common, "--cache", "device", "--augment-on", "cpu"], "cache device augments on the device")
