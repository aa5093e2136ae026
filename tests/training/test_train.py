"""The engine through the command line: training, exact resume, warm start, DDP, evaluate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aticnet.cli import main
from aticnet.models.weights import load_model
from aticnet.training.checkpoint import list_checkpoints, load_checkpoint
from aticnet.training.config import load_config
from aticnet.training.run_dir import read_metrics
from aticnet.utils.errors import UserError
from tests.helpers import ROOT, TINY_TRAIN


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"}


def run_train(root: Path, out: Path, *extra: str) -> int:
    return main(["train", *TINY_TRAIN, "--data-root", str(root), "--out", str(out), *extra])


def test_a_few_steps_write_the_run_directory(synthetic_root, tmp_path):
    out = tmp_path / "run"
    assert run_train(synthetic_root, out, "--max-steps", "4", "--save-every", "2", "--json", str(tmp_path / "s.json")) == 0
    assert sorted(p.name for p in list_checkpoints(out)) == ["step_0000002.pt", "step_0000004.pt"]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert all({"loss", "lr", "images_per_s"} <= set(r) for r in rows if r["kind"] == "train")
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals and 0.0 <= evals[-1]["miou"] <= 1.0
    model, meta = load_model(out)
    assert model.config.name == "icnet" and model.config.width == 0.125
    assert len(meta["classes"]) == 19 and meta["dataset"] == "synthetic"
    assert json.loads((tmp_path / "s.json").read_text())["step"] == 4
    # The poly schedule reaches zero at max_steps.
    assert rows[[r["kind"] for r in rows].index("train") + 3]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert load_config(out / "config.yaml").max_steps == 4


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(synthetic_root, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert run_train(synthetic_root, full, "--max-steps", "6", "--save-every", "3", "--keep-checkpoints", "5") == 0
    # A run stopped after step 3: its directory holds the config and the step-3 checkpoint.
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "config.yaml", resumed / "config.yaml")
    shutil.copy(full / "checkpoints" / "step_0000003.pt", resumed / "checkpoints")
    assert main(["train", "--out", str(resumed), "--resume"]) == 0
    expected = {s: v for s, v in train_losses(full).items() if s > 3}
    assert train_losses(resumed) == expected  # bit-identical, not approximately equal
    a, b = load_checkpoint(full / "checkpoints" / "step_0000006.pt"), load_checkpoint(resumed / "checkpoints" / "step_0000006.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_same_seed_same_losses_other_seed_other_losses(synthetic_root, tmp_path):
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert run_train(synthetic_root, tmp_path / name, "--max-steps", "2", "--seed", seed, "--save-every", "0") == 0
    a, b, c = (train_losses(tmp_path / n) for n in "abc")
    assert a == b and a != c


def test_workers_do_not_change_the_data(synthetic_root, tmp_path):
    run_train(synthetic_root, tmp_path / "w0", "--max-steps", "2", "--save-every", "0")
    run_train(synthetic_root, tmp_path / "w2", "--max-steps", "2", "--save-every", "0", "--workers", "2")
    assert train_losses(tmp_path / "w0") == train_losses(tmp_path / "w2")


def test_warm_start_from_earlier_weights(synthetic_root, tmp_path):
    first = tmp_path / "r1"
    run_train(synthetic_root, first, "--max-steps", "2", "--save-every", "0")
    second = tmp_path / "r2"
    assert run_train(synthetic_root, second, "--max-steps", "1", "--save-every", "0", "--init", str(first), "--lr", "0") == 0
    # With lr 0 the weights cannot move: round 2 ends exactly where round 1 did (BN stats aside).
    a, _ = load_model(first)
    b, _ = load_model(second)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_config_file_and_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: icnet\ncrop_size: 320\nscale_range: [0.75, 1.5]\nlr: 1\n")
    config = load_config(path, crop_size=256)
    assert (config.model, config.crop_size, config.scale_range, config.lr) == ("icnet", 256, (0.75, 1.5), 1.0)
    path.write_text("crop_sise: 320\n")
    with pytest.raises(UserError, match="unknown field 'crop_sise'"):
        load_config(path)
    path.write_text("crop_size: big\n")
    with pytest.raises(UserError, match="crop_size must be int or tuple"):
        load_config(path)


@pytest.mark.parametrize("name", ["cityscapes", "cityscapes_60k"])
def test_paper_recipes(name):
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    assert (config.crop_size, config.lr, config.poly_power, config.momentum, config.weight_decay) == (720, 0.001, 0.9, 0.9, 1e-4)
    assert (config.batch_size, config.max_steps) == ((16, 60000) if name.endswith("60k") else (10, 5000))
    assert config.optimizer == "sgd" and (config.init is not None) == name.endswith("60k")


def test_evaluate_command_json(synthetic_root, tmp_path):
    run_train(synthetic_root, tmp_path / "run", "--max-steps", "1", "--save-every", "0")
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--weights", str(tmp_path / "run"), "--dataset", "synthetic", "--data-root",
                 str(synthetic_root), "--split", "val", "--json", str(out), "--workers", "0"]) == 0
    scores = json.loads(out.read_text())
    assert {"miou", "per_class_iou", "pixel_accuracy", "num_images", "seconds"} <= set(scores)
    assert scores["num_images"] == 4 and len(scores["per_class_iou"]) == 19


@pytest.mark.slow
def test_two_process_ddp_on_cpu(synthetic_root, tmp_path):
    root, out = tmp_path / "data", tmp_path / "ddp"
    shutil.copytree(synthetic_root, root)
    second = sorted((root / "images/val").iterdir())[1]  # val is sharded rank::2, so rank 1 meets this one
    second.write_bytes(second.read_bytes()[:50])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "aticnet",
           "train", *TINY_TRAIN, "--data-root", str(root), "--out", str(out), "--max-steps", "3",
           "--save-every", "3", "--eval-max-images", "4"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(evals) == 1  # written once, by rank 0
    assert evals[0]["skipped"] == 1  # counted on rank 1, reported by rank 0
    model, _ = load_model(out)
    assert model.config.name == "icnet"


def test_bf16_mixed_precision_on_cpu(synthetic_root, tmp_path):
    assert run_train(synthetic_root, tmp_path / "bf16", "--max-steps", "2", "--save-every", "0", "--precision", "bf16") == 0
    losses = train_losses(tmp_path / "bf16")
    assert len(losses) == 2 and all(0 < v < 20 for v in losses.values())


def test_flip_and_multiscale_evaluation(synthetic_root, tmp_path):
    run_train(synthetic_root, tmp_path / "run", "--max-steps", "1", "--save-every", "0")
    common = ["evaluate", "--weights", str(tmp_path / "run"), "--dataset", "synthetic", "--data-root", str(synthetic_root),
              "--workers", "0"]
    assert main([*common, "--json", str(tmp_path / "plain.json")]) == 0
    assert main([*common, "--flip", "--scales", "0.75", "1.0", "1.25", "--json", str(tmp_path / "tta.json")]) == 0
    plain, tta = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("plain", "tta"))
    assert tta["num_images"] == plain["num_images"] == 4
    assert 0.0 <= tta["miou"] <= 1.0


def test_validation_runs_the_network_at_eval_scale(synthetic_root, tmp_path):
    """A model trained on upsampled crops is validated on frames upsampled alike: the run's last eval row is
    what evaluate gives the saved weights at that scale, not at 1."""
    from aticnet.evaluation.evaluate import evaluate

    out = tmp_path / "run"
    assert run_train(synthetic_root, out, "--max-steps", "3", "--save-every", "0", "--eval-scale", "2") == 0
    assert load_config(out / "config.yaml").eval_scale == 2.0
    last = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"][-1]
    score = {s: evaluate(out, "synthetic", synthetic_root, "val", device="cpu", workers=0, max_images=2,
                                 scales=(s,), progress=False) for s in (1.0, 2.0)}
    assert score[1.0]["per_class_iou"] != score[2.0]["per_class_iou"]  # the scale shows in the scores
    assert last["per_class_iou"] == score[2.0]["per_class_iou"]
    with pytest.raises(UserError, match="eval_scale"):
        load_config(eval_scale=0)


def test_predict_logits_averages_flipped_and_scaled_views():
    from aticnet import build_model
    from aticnet.evaluation.evaluate import predict_logits

    torch.manual_seed(0)
    model = build_model("icnet", num_classes=3, width=0.125).eval()
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        flipped = predict_logits(model, x, flip=True)
        expected = model(x).softmax(1) + model(x.flip(-1)).flip(-1).softmax(1)
        torch.testing.assert_close(flipped, expected)
        scaled = predict_logits(model, x, scales=(0.5, 1.0))
        half = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        up = torch.nn.functional.interpolate(model(half), size=(48, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(scaled, up.softmax(1) + model(x).softmax(1))


def test_flags_of_every_kind_reach_the_config():
    from aticnet.cli import build_parser
    from aticnet.cli.train import config_from_args

    args = build_parser().parse_args([
        "train", "--model-options", "{dropout: 0.1, rates: [12, 8, 4, 2]}", "--crop-size", "360", "480",
        "--aux-weights", "tensorflow", "--color-jitter", "0.4", "0.4", "0.4", "0.05", "--weight-decay", "1e-2",
        "--holdout-drive", "0006R0", "--no-eval-flip", "--scale-range", "1", "2"])
    config = config_from_args(args)
    assert config.model_options == {"dropout": 0.1, "rates": (12, 8, 4, 2)}
    assert config.crop_hw == (360, 480) and config.resolved_aux_weights == (0.16, 0.4)
    assert config.color_jitter == (0.4, 0.4, 0.4, 0.05) and config.weight_decay == 0.01
    assert config.holdout_drive == "0006R0" and config.eval_flip is False and config.scale_range == (1.0, 2.0)
    assert config_from_args(build_parser().parse_args(["train", "--crop-size", "320"])).crop_hw == (320, 320)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model-options", "dropout"])


def test_augmentation_on_the_device_trains_and_resumes_exactly(synthetic_root, tmp_path):
    # the GPU's path, run here on the CPU: the loader only decodes and draws; the step's side rescales and crops
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    extra = ("--augment-on", "device", "--max-steps", "4", "--save-every", "2", "--keep-checkpoints", "3")
    assert run_train(synthetic_root, full, *extra) == 0
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "config.yaml", resumed / "config.yaml")
    shutil.copy(full / "checkpoints" / "step_0000002.pt", resumed / "checkpoints")
    assert main(["train", "--out", str(resumed), "--resume"]) == 0
    assert train_losses(resumed) == {s: v for s, v in train_losses(full).items() if s > 2}
    cpu = tmp_path / "cpu"
    assert run_train(synthetic_root, cpu, "--max-steps", "1", "--save-every", "0") == 0
    first_cpu, first_device = train_losses(cpu)[1], train_losses(full)[1]
    assert first_cpu != first_device and abs(first_cpu - first_device) < 0.01 * first_cpu  # same draws, other rounding
