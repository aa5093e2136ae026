"""The CamVid comparison's summary (benchmarks/camvid.py): means, spreads and the verdict on the difference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "camvid.py"


@pytest.fixture(scope="module")
def camvid_script():
    spec = importlib.util.spec_from_file_location("camvid_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(model: str, seed: int, miou: float, minutes: float, resumed: bool = False) -> dict:
    return {
        "model": model, "seed": seed, "run_dir": f"runs/{model}_seed{seed}", "steps": 3000, "miou": miou,
        "pixel_accuracy": 0.9, "per_class_iou": {"Sky": miou, "Pole": None}, "params": 1_000_000,
        "latency_ms_360x480": 40.0 + seed, "train_minutes": minutes, "resumed": resumed,
    }


def test_summary_means_spreads_and_verdict(camvid_script):
    results = [run("icnet", 0, 0.60, 30), run("aticnet", 0, 0.62, 10, resumed=True),
               run("icnet", 1, 0.58, 32), run("aticnet", 1, 0.64, 34)]
    table = camvid_script.summarize(results, ["icnet", "aticnet"])
    # by hand: icnet 59 ± 1.414 (sample std of 60, 58), aticnet 63 ± 1.414
    assert table["icnet"]["miou_mean"] == pytest.approx(59.0)
    assert table["icnet"]["miou_std"] == pytest.approx(2**0.5)
    assert table["aticnet"]["miou_mean"] == pytest.approx(63.0)
    assert table["icnet"]["train_minutes"] == pytest.approx(31.0)
    assert table["aticnet"]["train_minutes"] == pytest.approx(34.0)  # the resumed run's partial clock is left out
    assert table["icnet"]["per_class_iou"] == {"Sky": pytest.approx(59.0), "Pole": None}
    text = camvid_script.format_markdown(table, results)
    assert "| icnet | 60.0, 58.0 | 59.0 ± 1.4 | 1.00 M | 40 ms | 31 min |" in text
    assert "aticnet − icnet: +4.0 mIoU; the seed spread (largest std) is 1.4: the difference is larger than the spread." in text
    assert "| Pole | - | - |" in text
    assert "Resumed from a checkpoint (their time counts only the last segment): aticnet seed 0." in text


def test_one_seed_has_no_spread_to_judge_by(camvid_script):
    results = [run("icnet", 0, 0.60, 30), run("aticnet", 0, 0.61, 31)]
    text = camvid_script.format_markdown(camvid_script.summarize(results, ["icnet", "aticnet"]), results)
    assert "aticnet − icnet: +1.0 mIoU, from one seed: no spread to judge it by." in text
