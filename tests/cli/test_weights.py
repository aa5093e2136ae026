"""``aticnet weights`` shows each shipped model's measured figures by readable name, with their units."""

from __future__ import annotations

import json

import pytest
import torch

import aticnet
from aticnet.cli import main
from aticnet.models import pretrained

SPEED = {"OpenVINO int8 (NNCF)": {"ms_360x480": 11.6, "ms_1024x2048": 95.9, "miou_change": 0.0006},
         "PyTorch fp32, infer-scale 0.5": {"ms_360x480": 15.0, "ms_1024x2048": 72.7, "miou_change": -0.1478}}


@pytest.fixture()
def shipped(tmp_path, monkeypatch):
    """One tiny shipped model whose config.json holds figures as benchmarks/ship.py writes them."""
    torch.manual_seed(0)
    model = aticnet.build_model("icnet", num_classes=3, width=0.125).eval()
    metrics = {"camvid_heldout_0006R0_miou": 0.4225, "heldout_seeds": 1, "heldout_recipe_steps": 15000,
               "toy_val_miou": 0.5, "speed": SPEED}
    meta = {"classes": ["road", "car", "sky"], "colors": [[128, 64, 128], [0, 0, 142], [70, 130, 180]],
            "dataset": "toy", "shipped": {"input_size": [64, 96], "params": 1_234_567, "metrics": metrics,
                                          "trained_on": "toy train (12 frames)", "wall_minutes": 3.4,
                                          "cpu": "Some CPU (avx2)", "commands": {"train": "aticnet train ..."}}}
    aticnet.save_pretrained(model, tmp_path / "icnet-toy", meta=meta, dtype=torch.float16)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)


def test_the_listing_names_every_figure(shipped, capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert "icnet-toy: icnet, 3 classes (toy), trained on 64x96 frames, 1.23 M parameters" in out
    assert "trained on toy train (12 frames), 3 minutes" in out
    assert "mIoU on CamVid's held-out drive 0006R0: 42.25 (its recipe trained without that drive: 15000 steps, " \
           "1 seed)" in out
    assert "toy val mIoU: 50.00" in out
    assert "camvid_heldout" not in out and "heldout_seeds" not in out and "ms_360x480" not in out, "raw keys shown"
    assert "on Some CPU (avx2)" in out
    rows = {line[4:].split("  ")[0]: line.split()[-3:] for line in out.splitlines()
            if line.startswith("    ") and not line.strip().startswith("ms at")}
    assert rows["OpenVINO int8 (NNCF)"] == ["11.6", "95.9", "+0.06"]  # mIoU change in points, not a fraction
    assert rows["PyTorch fp32, infer-scale 0.5"] == ["15.0", "72.7", "-14.78"]


def test_the_json_listing_keeps_the_raw_figures(shipped, capsys):
    assert main(["weights", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["metrics"]["camvid_heldout_0006R0_miou"] == 0.4225 and entry["metrics"]["speed"] == SPEED


def test_the_shipped_models_are_listed_with_their_held_out_figures(capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    for w in aticnet.list_weights():
        miou = w.metrics["camvid_heldout_0006R0_miou"]
        assert f"{w.name}: {w.model}, {w.num_classes} classes" in out
        assert f"held-out drive 0006R0: {100 * miou:.2f}" in out
