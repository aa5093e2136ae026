"""The engine's values under the conditions that break engines: two processes, and a resume in the middle of a
run that validates, drops out and keeps a moving average."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from aticnet import build_model
from aticnet.cli import main
from aticnet.data import EvalTransform, build_dataset
from aticnet.data.loader import eval_loader
from aticnet.evaluation.evaluate import evaluate_model
from aticnet.models.weights import read_weights
from aticnet.training.checkpoint import load_checkpoint
from aticnet.training.run_dir import read_metrics
from tests.helpers import TINY_TRAIN


def scores_on(root: Path, rank: int = 0, world_size: int = 1) -> dict:
    torch.manual_seed(0)
    model = build_model("icnet", num_classes=19, width=0.125)
    for m in model.modules():  # running statistics that make the predictions differ between images
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(0.1)
    data = build_dataset("synthetic", root, "val", EvalTransform(mean=model.config.mean, std=model.config.std))
    loader = eval_loader(data, rank=rank, world_size=world_size, workers=0)
    return evaluate_model(model, loader, num_classes=19, class_names=data.classes, device=torch.device("cpu"), progress=False)


def _evaluate_as_rank(rank: int, root: str, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        scores = scores_on(Path(root), rank, 2)
        Path(out, f"rank{rank}.json").write_text(json.dumps(scores))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(synthetic_root, tmp_path):
    alone = scores_on(synthetic_root)
    mp.spawn(_evaluate_as_rank, args=(str(synthetic_root), str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):  # every rank ends with the totals of both
        together = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert together["num_images"] == alone["num_images"] == 4
        assert together["num_pixels"] == alone["num_pixels"] == 4 * 64 * 128
        assert together["per_class_iou"] == alone["per_class_iou"]
        assert together["miou"] == alone["miou"] and together["pixel_accuracy"] == alone["pixel_accuracy"]
    assert len({v for v in alone["per_class_iou"].values() if v is not None}) > 1  # not a degenerate score


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"}


def evals(run: Path) -> dict[int, float]:
    return {r["step"]: r["miou"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"}


def test_resume_mid_run_with_validation_dropout_and_moving_average(synthetic_root, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model_options": {"dropout": 0.3}, "ema_decay": 0.5}))
    common = ["train", "--config", str(recipe), *TINY_TRAIN, "--data-root", str(synthetic_root), "--max-steps", "6",
              "--eval-every", "2", "--save-every", "3", "--keep-checkpoints", "5"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main([*common, "--out", str(full)]) == 0
    (resumed / "checkpoints").mkdir(parents=True)  # a run killed after its step-3 checkpoint
    shutil.copy(full / "config.yaml", resumed / "config.yaml")
    shutil.copy(full / "checkpoints" / "step_0000003.pt", resumed / "checkpoints")
    assert main(["train", "--out", str(resumed), "--resume"]) == 0

    assert losses(resumed) == {s: v for s, v in losses(full).items() if s > 3}  # bit for bit: dropout masks too
    assert evals(resumed) == {s: v for s, v in evals(full).items() if s > 3}
    a, b = (load_checkpoint(run / "checkpoints" / "step_0000006.pt") for run in (full, resumed))
    assert a["best_miou"] == b["best_miou"] >= 0 and torch.equal(a["rng"][0]["cpu"], b["rng"][0]["cpu"])
    assert a["ema"]["updates"] == b["ema"]["updates"] == 6
    for key in a["ema"]["module"]:
        assert torch.equal(a["ema"]["module"][key], b["ema"]["module"][key]), key
    (x, _), (y, _) = read_weights(full / "model.safetensors"), read_weights(resumed / "model.safetensors")
    assert all(torch.equal(x[k], y[k]) for k in x)
    best_step = read_weights(full / "best.safetensors")[1]["step"]
    if best_step > 3:
        assert read_weights(resumed / "best.safetensors")[1]["step"] == best_step
    else:  # the best mIoU came before the stop: restored, and not beaten after it
        assert not (resumed / "best.safetensors").exists()
    best_miou = max(evals(full).values())
    assert read_weights(full / "best.safetensors")[1]["miou"] == best_miou == a["best_miou"]
    saved, _ = read_weights(full / "model.safetensors")  # the moving average is what was saved
    assert all(torch.equal(saved[k], v) for k, v in a["ema"]["module"].items())
    assert not all(torch.equal(saved[k], v) for k, v in a["model"].items())


def test_a_metrics_row_averages_the_losses_of_its_steps(synthetic_root, tmp_path):
    common = ["train", *TINY_TRAIN, "--data-root", str(synthetic_root), "--max-steps", "4", "--save-every", "0"]
    assert main([*common, "--out", str(tmp_path / "every")]) == 0
    assert main([*common, "--out", str(tmp_path / "pairs"), "--log-every", "2"]) == 0
    each = losses(tmp_path / "every")
    assert losses(tmp_path / "pairs") == pytest.approx({2: (each[1] + each[2]) / 2, 4: (each[3] + each[4]) / 2}, rel=1e-12)
    rows = [r for r in read_metrics(tmp_path / "pairs" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["images_per_s"] > 0 for r in rows] == [True, True] and rows[-1]["lr"] == 0.0
