"""``aticnet benchmark --device cuda`` (skipped without a GPU): every PyTorch variant runs, CPU engines are refused."""

from __future__ import annotations

import json

import pytest

from aticnet.cli import main
from tests.helpers import fails

pytestmark = pytest.mark.cuda


def test_every_torch_variant_runs_on_the_gpu(tmp_path):
    out = tmp_path / "b.json"
    variants = "plain,cl,fold,fast,fast+16,fast+bf16,fast+compile,fast+refine,fast+s0.5"
    assert main(["benchmark", "--device", "cuda", "--models", "icnet", "--width", "0.25", "--size", "128x256",
                 "--variants", variants, "--runs", "3", "--warmup", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["tf32"]["cudnn_conv"] in (True, False) and report["gpu"]
    rows = report["models"]
    assert len(rows) == len(variants.split(","))
    assert all(r["latency_ms"] > 0 and r["peak_mem_mb"] for r in rows.values())


def test_training_throughput_on_the_gpu(tmp_path):
    out = tmp_path / "t.json"
    assert main(["benchmark", "--train", "--device", "cuda", "--models", "icnet", "--width", "0.25", "--crop-size",
                 "128", "--batch-size", "4", "--steps", "3", "--pipeline-batches", "3", "--data-size", "256x512",
                 "--data-images", "8", "--workers", "2", "--precision", "bf16", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["step"]["icnet"]["images_per_s"] > 0 and report["end_to_end"]["icnet"]["images_per_s"] > 0


def test_cpu_engines_are_refused_on_the_gpu(capsys):
    fails(capsys, ["benchmark", "--device", "cuda", "--models", "icnet", "--width", "0.25", "--size", "64x128",
                   "--variants", "ov"], "timed on the CPU")
