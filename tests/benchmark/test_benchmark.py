"""``aticnet benchmark``: the JSON's shape, interleaving, variants, markdown, the CLI. No timed assertions."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from aticnet.benchmark import (
    Entry,
    Variant,
    benchmark_inference,
    benchmark_training,
    parse_variant,
    quantile,
    run_interleaved,
)
from aticnet.benchmark.report import render_markdown
from aticnet.cli.benchmark import add_parser
from aticnet.utils.errors import UserError

MODEL_KEYS = {
    "latency_ms",
    "latency_p25_ms",
    "latency_p75_ms",
    "latency_min_ms",
    "latency_max_ms",
    "runs",
    "fps",
    "gflops",
    "effective_gflops_per_s",
    "peak_mem_mb",
    "params",
    "ratio_to_icnet",
    "times_ms",
    "variant",
    "width",
}
TOP_KEYS = {
    "models",
    "device",
    "threads",
    "torch",
    "size",
    "precision",
    "fast",
    "command",
    "timed_order",
    "matmul_gflops",
    "batch_size",
    "load_avg_start",
    "load_avg_end",
}
TINY = {"size": (64, 96), "width": 0.125, "runs": 2, "warmup": 1, "matmul_size": 256}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run best on one thread


@pytest.fixture(scope="module")
def report():
    return benchmark_inference(["icnet", "aticnet", "lraspp_mobilenet_v3"], memory=False, **TINY)


def test_json_has_every_key_for_every_model(report):
    assert TOP_KEYS <= set(report)
    assert set(report["models"]) == {"icnet", "aticnet", "lraspp_mobilenet_v3"}
    for name, row in report["models"].items():
        assert MODEL_KEYS <= set(row), name
        assert row["runs"] == 2 and len(row["times_ms"]) == 2
        assert row["gflops"] > 0 and row["latency_ms"] > 0
        assert row["fps"] == pytest.approx(1000 / row["latency_ms"])
    json.dumps(report)  # serialisable as is


def test_ratio_to_icnet(report):
    models = report["models"]
    assert models["icnet"]["ratio_to_icnet"] == 1
    assert models["aticnet"]["ratio_to_icnet"] == pytest.approx(
        models["aticnet"]["latency_ms"] / models["icnet"]["latency_ms"]
    )


def test_timed_passes_alternate_between_models(report):
    assert report["timed_order"] == ["icnet", "aticnet", "lraspp_mobilenet_v3"] * 2


def test_flops_match_the_models_own_counter():
    from aticnet.models import build_model
    from aticnet.models.analysis import count_flops

    r = benchmark_inference(["icnet"], memory=False, **{**TINY, "runs": 1})
    assert r["models"]["icnet"]["gflops"] == pytest.approx(
        count_flops(build_model("icnet", width=0.125), (64, 96)) / 1e9
    )


def test_cpu_peak_memory_in_a_fresh_process():
    r = benchmark_inference(["icnet"], memory=True, **{**TINY, "runs": 1})
    row = r["models"]["icnet"]
    assert row["peak_mem_mb"] > row["weights_mb"] > 0
    assert "fresh process" in row["memory_method"]


def test_variants_are_keyed_and_compared_within_a_variant():
    r = benchmark_inference(["icnet", "aticnet"], variants=[Variant(), parse_variant("fast")], memory=False, **TINY)
    assert set(r["models"]) == {"icnet[plain]", "icnet[fast]", "aticnet[plain]", "aticnet[fast]"}
    assert r["models"]["icnet[fast]"]["ratio_to_icnet"] == 1
    assert r["timed_order"][:4] == ["icnet[plain]", "icnet[fast]", "aticnet[plain]", "aticnet[fast]"]
    assert r["fast"] is False and r["variants"] == ["plain", "fast"]


class Recorder:
    """A fake timer: records call order; entry 'slow' takes 10 s a pass."""

    def __init__(self):
        self.calls = []

    def __call__(self, entry, image, device):
        self.calls.append(entry.key)
        return 10.0 if entry.key == "slow" else 0.01


def entries(*keys):
    return [Entry(k, k, Variant(), nn.Identity(), lambda: torch.no_grad()) for k in keys]


def test_run_interleaved_round_robin_and_budget():
    timer = Recorder()
    es = entries("a", "slow", "b")
    order = run_interleaved(
        es, torch.zeros(1), torch.device("cpu"), runs=5, warmup=2, budget_s=25, min_runs=2, timer=timer
    )
    assert timer.calls[:6] == ["a", "slow", "b"] * 2  # warm-up, interleaved too
    # 'slow' leaves after 3 passes (30 s >= 25 s budget, >= 2 passes); the others keep alternating
    assert order == ["a", "slow", "b"] * 3 + ["a", "b"] * 2
    assert [len(e.times_s) for e in es] == [5, 3, 5]


def test_min_runs_beat_the_budget():
    es = entries("slow")
    run_interleaved(
        es, torch.zeros(1), torch.device("cpu"), runs=10, warmup=0, budget_s=1, min_runs=3, timer=Recorder()
    )
    assert len(es[0].times_s) == 3 and len(es[0].warmup_s) == 1  # at least one warm-up pass


def test_parse_variant():
    assert parse_variant("plain") == Variant()
    assert parse_variant("fast") == Variant(channels_last=True, fold_bn=True)
    assert parse_variant("fast+compile+bf16").name == "fast+compile+bf16"
    assert parse_variant("cl", "bf16") == Variant(channels_last=True, precision="bf16")
    assert parse_variant("fold").name == "fold"
    with pytest.raises(UserError):
        parse_variant("turbo")


def test_quantile():
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([5], 0.25) == 5
    assert quantile([1, 2, 3, 4, 5], 0.25) == 2


def test_precision_16_needs_cuda():
    with pytest.raises(UserError, match="CUDA"):
        benchmark_inference(["icnet"], variants=[Variant(precision="16")], memory=False, **TINY)


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="aticnet")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["benchmark", *argv])
    args.func(args)


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    out, md = tmp_path / "b.json", tmp_path / "B.md"
    run_cli(
        [
            "--models",
            "icnet,aticnet",
            "--size",
            "64x96",
            "--width",
            "0.125",
            "--runs",
            "2",
            "--warmup",
            "1",
            "--no-memory",
            "--matmul-size",
            "256",
            "--fast",
            "--json",
            str(out),
            "--markdown",
            str(md),
        ]
    )
    data = json.loads(out.read_text())
    assert set(data["models"]) == {"icnet", "aticnet"}
    assert data["fast"] is True and data["models"]["icnet"]["variant"] == "fast"
    assert data["command"].startswith("aticnet benchmark --models icnet,aticnet --size 64x96")
    assert "--fast" in data["command"] and "--width 0.125" in data["command"]
    text = md.read_text()
    assert data["command"] in text and "| icnet | fast |" in text
    assert "no gpu report" in text.lower()
    assert "icnet" in capsys.readouterr().out
    # and again from the JSON alone
    md2 = tmp_path / "again.md"
    run_cli(["--report-from", str(out), "--markdown", str(md2)])
    assert md2.read_text() == text


@pytest.mark.slow
def test_training_throughput_reports_step_pipelines_and_end_to_end(tmp_path):
    r = benchmark_training(
        ["icnet"], crop=64, batch=2, workers=1, caches=("none", "memory", "device"),
        step_variants=("baseline", "fused"), steps=2, warmup=1, pipeline_batches=2, end_to_end_steps=3,
        width=0.125, data_size=(64, 128), data_images=4,
    )
    assert set(r["pipelines"]) == {"none", "memory", "device"} and set(r["cache_build_s"]) == {"memory", "device"}
    assert all(p["images_per_s"] > 0 and p["batches"] == 2 for p in r["pipelines"].values())
    assert r["pipelines"]["device"]["workers"] == 0 and r["pipelines"]["memory"]["workers"] == 1
    assert set(r["step_variants"]["icnet"]) == {"baseline", "fused"} and r["step"]["icnet"]["variant"] == "fused"
    assert {mode: set(by_model) for mode, by_model in r["end_to_end"].items()} == {m: {"icnet"} for m in r["caches"]}
    assert all(e["steps"] == 3 for by_model in r["end_to_end"].values() for e in by_model.values())
    assert {b["icnet"] for b in r["bound"].values()} <= {"data pipeline", "training step"}
    text = render_markdown([json.loads(json.dumps(r))])
    pipe, step = r["pipelines"]["memory"]["images_per_s"], r["step"]["icnet"]["images_per_s"]
    assert f"--cache memory, icnet: pipeline {pipe:.2f} images/s vs step {step:.2f}" in text
    assert "| training step icnet (baseline), random data on the device |" in text
    assert "| icnet end to end, `--cache device` (" in text


def test_requests_this_machine_cannot_time_are_refused_before_any_work():
    with pytest.raises(UserError, match="precision 16 needs CUDA"):
        benchmark_inference(["icnet"], variants=[Variant(), Variant(precision="16")], device="cpu", memory=False)
    with pytest.raises(UserError, match="precision 16 needs CUDA"):
        benchmark_training(["icnet"], precision="16", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            benchmark_inference(["icnet"], device="cuda")
    with pytest.raises(UserError, match="at least 1"):
        benchmark_inference(["icnet"], runs=0, memory=False)
