"""BENCHMARKS.md from benchmark reports: tables, and each target judged met or not, on reports made by hand."""

from __future__ import annotations

from aticnet.benchmark import report as report_module
from aticnet.benchmark.report import render_markdown


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
    assert "--cache none, icnet: pipeline 3.00 images/s vs step 1.50; **met**" in text
    assert "| icnet | fast | 400 | 1.50x | plain -> fast | 1.50x | pays |" in text


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
    assert "--cache none, icnet: step 100 images/s, pipeline 95 in steady state: fed 95%; **met**" in text
    assert "--cache none, aticnet: step 200 images/s, pipeline 95 in steady state: fed 48%; **not met**" in text


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


def test_serve_report_renders_the_load_the_large_images_liveness_and_memory():
    report = {"mode": "serve_load", "command": "python benchmarks/serve_load.py", "device": "cpu", "threads": 2,
              "torch": "2", "cpu": {"model": "Some CPU"}, "model": "m", "clients": 16, "size": "960x720",
              "seconds": 120.0, "requests_per_s": 7.5, "latency_ms": {"p50": 900, "p95": 2100, "p99": 3000},
              "mean_batch": 3.2, "max_batch": 8, "failed_valid": 0, "bad_sent": 40, "bad_answered_4xx": 39,
              "bad_not_4xx": ["truncated png: 500"], "big_size": "7300x5480",
              "big": [{"status": 200, "seconds": 6.5}, {"status": 503, "seconds": 0.1}, {"status": 200, "seconds": 7.25}],
              "live_probes": 240, "live_failed": 0, "live_max_ms": 812.0, "replica_peak_mb": 3100, "front_peak_mb": 420,
              "offline_images_per_s": 8.0, "serve_over_offline": 0.9375, "served_megapixels_per_s": 12.5,
              "work_over_offline": 2.26}
    text = render_markdown([report])
    assert "| 7.50 | 900 / 2100 / 3000 | 3.20 (8) | 0 | 39 of 40 | 8.00 | 0.94 |" in text
    assert "Bad requests not answered 4xx: truncated png: 500." in text
    assert ("Large images (7300x5480) sent beside the load: 3 (2 x 200, 1 x 503), 7.2 s the slowest. Counting their "
            "pixels, the server did 12.50 megapixels/s, 2.26x offline batched predict's.") in text
    assert "probed 240 times during the load: 0 failed, the slowest answer 812 ms." in text
    assert "Peak resident memory: replica 3100 MB, front 420 MB." in text
