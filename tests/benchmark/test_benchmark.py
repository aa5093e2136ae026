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
from aticnet.benchmark import report as report_module
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


def fake_row(model, variant, latency, gflops, width=0.5):
    return {
        "model": model,
        "variant": variant,
        "width": width,
        "latency_ms": latency,
        "latency_p25_ms": latency,
        "latency_p75_ms": latency,
        "latency_min_ms": latency,
        "latency_max_ms": latency,
        "runs": 5,
        "fps": 1000 / latency,
        "gflops": gflops,
        "effective_gflops_per_s": gflops / latency * 1000,
        "matmul_share": 0.5,
        "peak_mem_mb": None,
        "params": 1,
        "ratio_to_icnet": None,
        "first_call_s": 1.0,
    }


def fake_report(rows, variants=("plain",)):
    return {
        "command": "aticnet benchmark",
        "device": "cpu",
        "threads": 2,
        "torch": "x",
        "cpu": {"model": "cpu"},
        "size": [1024, 2048],
        "batch_size": 1,
        "precision": "32",
        "variants": list(variants),
        "runs": 5,
        "warmup": 2,
        "min_runs": 3,
        "budget_s": 60,
        "matmul_gflops": 170.0,
        "timed_region": "t",
        "flops_note": "f",
        "models": {f"{r['model']}[{r['variant']}]": r for r in rows},
    }


def test_markdown_targets_met_and_distances():
    rows = [
        fake_row("icnet", "plain", 600, 60),
        fake_row("aticnet", "plain", 900, 77),
        fake_row("lraspp_mobilenet_v3", "plain", 700, 31, width=None),
        fake_row("icnet", "fast", 400, 60),
        fake_row("aticnet", "fast", 480, 77),
    ]
    train = {
        "mode": "train",
        "command": "aticnet benchmark --train",
        "device": "cpu",
        "threads": 2,
        "torch": "x",
        "cpu": {"model": "cpu"},
        "crop_size": 720,
        "batch_size": 8,
        "precision": "32",
        "data": "synthetic",
        "pipeline": {"images_per_s": 3.0, "batch_ms": 2667, "workers": 2},
        "step": {"icnet": {"images_per_s": 1.5, "step_ms": 5333}},
        "end_to_end": {},
        "bound": "training step",
    }
    text = render_markdown([fake_report(rows, ("plain", "fast")), train])
    assert "1.50x; **not met**: 0.25 over" in text  # AtICNet plain 900 / 600
    assert "480 ms / ICNet 400 ms = 1.20x; **met**" in text
    assert "plain: 600 ms" in text and "**met**" in text  # 60 GFLOPs in 0.6 s = 100 GFLOP/s >= 87.5
    assert "aticnet 900 ms vs LRASPP 700 ms (LRASPP / ours = 0.78); **not met**: 1.29x slower" in text
    assert "pipeline 3.00 images/s vs step 1.50; **met**" in text
    assert "| icnet | fast | 400 | 1.50x | plain -> fast | 1.50x | pays |" in text


@pytest.mark.slow
def test_training_throughput_reports_step_and_pipeline():
    r = benchmark_training(
        ["icnet"],
        crop=64,
        batch=2,
        workers=0,
        steps=1,
        warmup=0,
        pipeline_batches=2,
        width=0.125,
        data_size=(64, 128),
        data_images=4,
    )
    assert r["pipeline"]["images_per_s"] > 0
    assert r["step"]["icnet"]["images_per_s"] > 0 and r["end_to_end"]["icnet"]["images_per_s"] > 0
    assert r["bound"] in ("data pipeline", "training step")
    pipe, step = r["pipeline"]["images_per_s"], r["step"]["icnet"]["images_per_s"]
    assert f"icnet: pipeline {pipe:.2f} images/s vs step {step:.2f}" in render_markdown([r])
    json.dumps(r)


def test_deploy_report_table_and_targets_by_hand(monkeypatch):
    def row(model, form, backend, ms, miou, scale=1.0, precision="32"):
        return {"run": f"runs/{model}", "model": model, "form": form, "backend": backend, "precision": precision,
                "infer_scale": scale, "latency_ms_1024x2048": ms, "miou": miou}

    rows = [row("icnet", "PyTorch fp32", "torch", 300, 0.600), row("icnet", "OpenVINO fp32", "openvino", 250, 0.600),
            row("icnet", "OpenVINO int8", "openvino", 100, 0.597),
            row("aticnet", "PyTorch fp32", "torch", 330, 0.610), row("aticnet", "OpenVINO fp32", "openvino", 350, 0.610),
            row("aticnet", "OpenVINO int8", "openvino", 140, 0.600),
            row("aticnet", "OpenVINO int8, infer-scale 0.5", "openvino", 50, 0.580, scale=0.5)]
    report = {"mode": "deploy", "command": "python benchmarks/deploy.py", "device": "cpu", "threads": 2, "torch": "2",
              "cpu": {"model": "Some CPU", "avx512_vnni": True}, "sizes": ["1024x2048"], "split": "val",
              "timed_region": "image -> labels", "rows": rows}
    text = render_markdown([report])
    assert "| icnet | OpenVINO int8 | 100 (3.0x) | 59.70 (-0.30) |" in text
    assert "| aticnet | OpenVINO int8, infer-scale 0.5 | 50 (6.6x) | 58.00 (-3.00) |" in text
    assert "CPU flags: avx512_vnni" in text
    report["cpu"] = {"model": "Some CPU", "avx512_vnni": False, "avx512_bf16": False}
    assert "Some CPU, CPU flags: none of avx512_vnni, avx512_bf16, AMX" in render_markdown([report])
    assert "icnet, OpenVINO int8: 3.0x faster than PyTorch fp32, +0.30 mIoU lost on val; **met**" in text
    assert "aticnet, OpenVINO int8: 2.4x faster than PyTorch fp32, +1.00 mIoU lost on val; **not met**" in text
    assert ("icnet: fastest PyTorch fp32 (PyTorch fp32) 300 ms vs OpenVINO fp32 250 ms; **met**: OpenVINO is faster, "
            "and a run loads on it by default") in text
    assert ("aticnet: fastest PyTorch fp32 (PyTorch fp32) 330 ms vs OpenVINO fp32 350 ms; **not met**: PyTorch is "
            "faster here") in text
    monkeypatch.setattr(report_module, "DEFAULT_CPU_ENGINE", "torch")
    with_torch_default = render_markdown([report])
    assert "250 ms; **not met**: OpenVINO is faster but not the default engine" in with_torch_default
    assert "aticnet: fastest PyTorch fp32 (PyTorch fp32) 330 ms vs OpenVINO fp32 350 ms; **met**\n" in with_torch_default
    assert ("AtICNet / ICNet in their fastest forms at full input size (OpenVINO int8; OpenVINO int8): 1.40x; "
            "**not met**") in text
    assert "live video, AtICNet OpenVINO int8, infer-scale 0.5 on 1024x2048 frames, labels at full size: 20.0 " \
           "frames/s, -3.00 mIoU on val; **met**" in text


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


def test_gpu_targets_judge_fp16_frames_and_the_steady_loader():
    from aticnet.benchmark.report import gpu_targets

    def row(model, variant, ms):
        return {"model": model, "variant": variant, "latency_ms": ms, "fps": 1000 / ms}

    inference = {"mode": "inference", "device": "cuda", "gpu": "G", "size": [1024, 2048], "variants": ["fast+16"],
                 "models": {"icnet[fast+16]": row("icnet", "fast+16", 3.0), "aticnet[fast+16]": row("aticnet", "fast+16", 5.0),
                            "icnet[fast]": row("icnet", "fast", 1.0)}}
    train = {"mode": "train", "device": "cuda", "gpu": "G", "crop_size": 720, "batch_size": 16,
             "pipeline": {"images_per_s": 95.0}, "step": {"icnet": {"images_per_s": 100.0}, "aticnet": {"images_per_s": 200.0}},
             "end_to_end": {"icnet": {"images_per_s": 120.0}, "aticnet": {"images_per_s": 150.0}}}
    text = "\n".join(gpu_targets([inference, train]))
    assert "icnet fast+16: 333 frames/s (3.00 ms); **met**" in text  # 1000 / 3 ms >= 300
    assert "aticnet fast+16: 200 frames/s (5.00 ms); **not met** (1.25x short)" in text  # 250 / 200
    assert "icnet fast:" not in text  # fp32 rows do not judge an fp16 target
    # fed = min(end to end, steady loader) / step: icnet 95 / 100 met; aticnet 95 / 200 not
    assert "icnet: step 100 images/s, loader 95 in steady state: fed 95%; **met**" in text
    assert "aticnet: step 200 images/s, loader 95 in steady state: fed 48%; **not met**" in text


def test_stream_report_renders_the_ratio_the_stages_and_each_target():
    def stats(fps, p95, dropped, frames_in=150):
        return {"fps": fps, "dropped": dropped, "frames_in": frames_in,
                "latency_ms": {"p50": 90, "p95": p95, "p99": 160},
                "stage_ms": {"decode": {"median": 4.0, "p95": 9}, "infer": {"median": 30.0, "p95": 40},
                             "render": {"median": 12.5, "p95": 20}}}

    report = {"mode": "stream", "command": "python benchmarks/stream.py", "device": "cpu", "threads": 2, "torch": "2",
              "cpu": {"model": "Some CPU", "avx512_vnni": True}, "size": [960, 720], "frames": 150, "rate": 30,
              "infer_scale": 0.5, "weights": "m.int8.xml",
              "network_alone": {"fps": 40.0, "median_ms": 25.0, "backend": "openvino"},
              "end_to_end": stats(36.0, 300, 0), "live": stats(28.0, 140, 12), "end_to_end_over_network": 0.9}
    text = render_markdown([report])
    assert ("| `aticnet stream --file` (every frame kept; decode, infer, encode overlapped) | 36.0 | "
            "90 / 300 / 160 | 0 |") in text
    assert "| 28.0 | 90 / 140 / 160 | 12 of 150 |" in text
    assert "decode 4.0 ms, infer 30.0 ms, render 12.5 ms" in text
    assert ("end to end 0.90x the network alone (**met**, target >= 0.85x); 36.0 frames/s (**met**, target >= 25 on a "
            "CPU with VNNI); live at 30 frames/s: p95 140 ms (**met**, target <= 150 ms; the network alone takes "
            "25 ms") in text
    report.update(end_to_end_over_network=0.8, live=stats(20.0, 151, 40),
                  cpu={"model": "Some CPU", "avx512_vnni": False})
    text = render_markdown([report])
    assert "0.80x the network alone (**not met**" in text and "p95 151 ms (**not met**" in text
    assert "the 25 frames/s target is for a CPU with VNNI; this one has none" in text
