"""Weights carry the scale they were trained for, and every way of running them applies it unless told otherwise;
a local path always wins over a shipped name of the same spelling."""

from __future__ import annotations

import pytest
import torch

import aticnet
from aticnet.cli import main
from tests.helpers import TINY_TRAIN


@pytest.fixture(scope="module")
def upsampled_run(synthetic_root, tmp_path_factory):
    """A tiny run validated on frames upsampled 2x: its weights say infer_scale 2."""
    out = tmp_path_factory.mktemp("scale2") / "run"
    assert main(["train", *TINY_TRAIN, "--data-root", str(synthetic_root), "--out", str(out), "--max-steps", "1",
                 "--eval-scale", "2"]) == 0
    return out


def test_a_model_runs_at_the_scale_it_was_trained_for(upsampled_run, tmp_path):
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    default = aticnet.load(upsampled_run, "cpu", backend="torch")
    assert default.infer_scale == 2.0 and aticnet.load(upsampled_run, "cpu", infer_scale=1).infer_scale == 1.0
    at_two = default.logits([image], infer_scale=2.0)
    assert torch.equal(default.logits([image]), at_two)
    assert not torch.equal(default.logits([image], infer_scale=1.0), at_two)
    onnx = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(upsampled_run), "--format", "onnx", "--out", str(onnx)]) == 0
    assert aticnet.load(onnx, "cpu").infer_scale == 2.0  # the exported file carries it too
    saved = aticnet.save_pretrained(upsampled_run, tmp_path / "hub")
    assert aticnet.from_pretrained(saved, backend="torch").infer_scale == 2.0


def test_evaluation_applies_the_trained_scale_unless_told(upsampled_run, synthetic_root):
    common = {"dataset": "synthetic", "data_root": synthetic_root, "split": "val", "device": "cpu", "workers": 0,
              "max_images": 2, "progress": False}
    default = aticnet.evaluate(upsampled_run, **common)  # PyTorch as it is, at the scale it was validated at
    assert default["per_class_iou"] == aticnet.evaluate(upsampled_run, scales=(2.0,), **common)["per_class_iou"]
    last = [r for r in aticnet.read_metrics(upsampled_run / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert last["per_class_iou"] == default["per_class_iou"]  # the run's own validation (its first 2 val images)
    at_one = aticnet.evaluate(upsampled_run, scales=(1.0,), **common)
    assert at_one["per_class_iou"] != default["per_class_iou"]
    on_openvino = aticnet.evaluate(upsampled_run, infer_scale=2.0, **common)  # aticnet.load's engine, told
    assert abs(on_openvino["pixel_accuracy"] - default["pixel_accuracy"]) < 0.02


def test_a_local_folder_wins_over_the_shipped_name(upsampled_run, tmp_path, monkeypatch):
    shipped = aticnet.load("aticnet-camvid", "cpu", backend="torch")
    assert shipped.num_classes == 11 and shipped.name == "aticnet"
    monkeypatch.chdir(tmp_path)
    aticnet.save_pretrained(upsampled_run, tmp_path / "aticnet-camvid")  # a fine-tuned model saved under that name
    for local in (aticnet.load("aticnet-camvid", "cpu", backend="torch"),
                  aticnet.from_pretrained("aticnet-camvid", backend="torch")):
        assert local.num_classes == 19 and local.name == "icnet"  # the folder, not the shipped model
    monkeypatch.chdir(tmp_path / "aticnet-camvid")  # elsewhere the name means the shipped model again
    assert aticnet.load("aticnet-camvid", "cpu", backend="torch").num_classes == 11
