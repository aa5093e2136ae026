"""The CamVid protocol's summaries (benchmarks/camvid_report.py) against numbers worked out by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("camvid_report", BENCHMARKS / "camvid_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(model: str, seed: int, miou: float, minutes: float, resumed: bool = False, val: float | None = 0.7) -> dict:
    return {
        "model": model, "seed": seed, "run_dir": f"runs/{model}_seed{seed}", "steps": 3000, "miou": miou,
        "val_miou": val, "pixel_accuracy": 0.9, "per_class_iou": {"Sky": miou, "Pole": None}, "params": 1_000_000,
        "train_minutes": minutes, "resumed": resumed,
    }


def test_summary_means_spreads_and_times(report):
    results = [run("icnet", 0, 0.60, 30), run("aticnet", 0, 0.62, 10, resumed=True),
               run("icnet", 1, 0.58, 32, val=0.8), run("aticnet", 1, 0.64, 34)]
    table = report.summarize(results, ["icnet", "aticnet"], {"icnet": 12.5, "aticnet": 9.0})
    # by hand: icnet 59 ± 1.414 (sample std of 60, 58), aticnet 63 ± 1.414
    assert table["icnet"]["miou_mean"] == pytest.approx(59.0) and table["icnet"]["miou_std"] == pytest.approx(2**0.5)
    assert table["aticnet"]["miou_mean"] == pytest.approx(63.0)
    assert table["icnet"]["val_miou_mean"] == pytest.approx(75.0)
    assert table["icnet"]["train_minutes"] == pytest.approx(31.0)
    assert table["aticnet"]["train_minutes"] == pytest.approx(22.0)
    assert table["icnet"]["per_class_iou"] == {"Sky": pytest.approx(59.0), "Pole": None}
    assert table["icnet"]["latency_ms_360x480"] == 12.5 and table["aticnet"]["latency_ms_360x480"] == 9.0


def test_paired_difference_and_its_interval_by_hand(report):
    results = [run("icnet", s, m, 30) for s, m in enumerate([0.50, 0.52, 0.54])]
    results += [run("aticnet", s, m, 30) for s, m in enumerate([0.51, 0.55, 0.55])]
    d = report.paired_difference(results, "icnet", "aticnet")
    # differences 1, 3, 1: mean 5/3, sample std sqrt(4/3), half-width 4.303 * sqrt(4/3) / sqrt(3)
    assert d["diffs"] == pytest.approx([1.0, 3.0, 1.0])
    assert d["mean"] == pytest.approx(5 / 3) and d["std"] == pytest.approx((4 / 3) ** 0.5)
    half = 4.303 * (4 / 3) ** 0.5 / 3**0.5
    assert d["ci95"] == pytest.approx((5 / 3 - half, 5 / 3 + half))
    assert report.verdict(d).startswith("not separable")  # -0.20 < 0 < 3.5
    clear = report.paired_difference(results + [run("x", s, 0.40, 1) for s in range(3)], "icnet", "x")
    assert report.verdict(clear).startswith("worse, beyond")
    assert report.paired_difference(results, "icnet", "pspnet") is None
    single = report.paired_difference(results[:1] + results[3:4], "icnet", "aticnet")
    assert single["ci95"] is None and report.verdict(single) == "one seed: no interval to judge it by"


def test_claim_and_experiment_tables(report):
    results = [run("icnet", 0, 0.60, 30), run("aticnet", 0, 0.62, 31), run("icnet", 1, 0.58, 32),
               run("aticnet", 1, 0.64, 34)]
    table = report.summarize(results, ["icnet", "aticnet"], {"icnet": 40.0, "aticnet": 41.0})
    text = report.format_claim(table, results, [("icnet", "aticnet")], "0006R0")
    assert "| icnet | 60.0, 58.0 | 59.0 ± 1.4 | 70.0 | 1.00 M | 40 ms | 31 min |" in text
    assert "- aticnet − icnet, paired by seed (+2.0, +6.0): mean +4.0, std 2.8, 95% interval [-21.4, +29.4]" in text
    assert "| Pole | - | - |" in text
    rows = [{**run("icnet", 0, 0.512, 20.4, val=None), "name": "jitter", "change": "ColorJitter", "command": "aticnet x"}]
    assert "| jitter (seed 0) | ColorJitter | 51.2 | - | 3000 | 20 | `aticnet x` |" in report.format_experiments(rows, "D")


def test_minutes_alone_take_the_median_step_and_the_evaluations(report):
    rows = [{"kind": "train", "step": 20, "images_per_s": 16.0}, {"kind": "train", "step": 40, "images_per_s": 1.0},
            {"kind": "eval", "step": 40, "seconds": 30.0}, {"kind": "train", "step": 60, "images_per_s": 20.0}]
    # batch 8: 0.5, 8 and 0.4 s per step; the median 0.5 s x 60 steps + 30 s of evaluation = 1 min
    assert report.minutes_alone(rows, 8) == pytest.approx(1.0)


def test_a_run_with_the_same_config_and_seed_is_found_and_nothing_else(tmp_path, monkeypatch):
    """The claim reuses a finished recipe experiment only when every field that changes the weights agrees."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("camvid_protocol", BENCHMARKS / "camvid.py")
    camvid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(camvid)
    from aticnet.config import load_config, save_config

    def finished(name: str, **fields) -> Path:
        run_dir = tmp_path / "experiments" / name
        run_dir.mkdir(parents=True)
        save_config(load_config(camvid.RECIPE, out=str(run_dir), keep_checkpoints=5, **fields), run_dir / "config.yaml")
        (run_dir / "summary.json").write_text("{}")
        (run_dir / "model.safetensors").write_bytes(b"")
        return run_dir

    same = finished("decay_weights_seed0", seed=0)
    finished("decay_weights_seed1", seed=1)
    finished("lr_seed0", seed=0, lr=0.001)
    unfinished = finished("aticnet_seed0", model="aticnet", seed=0)
    (unfinished / "model.safetensors").unlink()
    want = load_config(camvid.RECIPE, out=str(tmp_path / "claim" / "icnet_seed0"), seed=0, resume="auto")
    assert camvid.same_run(want, tmp_path) == same
    assert camvid.same_run(load_config(camvid.RECIPE, out="x", seed=2), tmp_path) is None
    assert camvid.same_run(load_config(camvid.RECIPE, out="x", model="aticnet", seed=0), tmp_path) is None
    assert camvid.same_run(load_config(camvid.RECIPE, out=str(same), seed=0), tmp_path) is None  # not itself

    # --table-only trains nothing: a finished twin is reused, anything else is left out (None)
    import argparse

    monkeypatch.setattr(camvid, "RESULTS", tmp_path / "kept")
    monkeypatch.setattr(camvid, "train", lambda cfg: pytest.fail("--table-only must not train"))
    data_root = load_config(camvid.RECIPE).data_root  # the finished runs' (the recipe's own)
    args = argparse.Namespace(table_only=True, retrain=False, quick=False, data_root=data_root, out=str(tmp_path))
    assert camvid.run_one(camvid.RECIPE, {"seed": 0}, tmp_path / "claim" / "icnet_seed0", args)["same_as"] == str(same)
    assert camvid.run_one(camvid.RECIPE, {"seed": 7}, tmp_path / "claim" / "icnet_seed7", args) is None
