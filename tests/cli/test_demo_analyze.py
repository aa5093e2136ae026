"""The main job (``aticnet demo``) and ``aticnet analyze``, through the command line, on tiny settings."""

from __future__ import annotations

import dataclasses
import json

from aticnet.cli import main
from aticnet.data import generate_synthetic
from aticnet.demo import DEMO_RECIPE
from aticnet.training.config import load_config
from tests.helpers import ROOT


def test_demo_writes_report_figures_and_json(tmp_path):
    out = tmp_path / "demo"
    generate_synthetic(out / "data", num_train=8, num_val=4, size=(64, 128))  # the demo reuses a stored set
    argv = ["demo", "--out", str(out), "--steps", "2", "--latency-runs", "0", "--width", "0.125", "--json", str(tmp_path / "d.json")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "d.json").read_text())
    assert set(results) == {"icnet", "aticnet"}
    for name, r in results.items():
        assert 0.0 <= r["miou"] <= 1.0 and r["params"] > 0 and r["latency_ms"] is None
        assert len(r["per_class_iou"]) == 19
        assert (out / name / "model.safetensors").is_file()
    assert results["aticnet"]["params"] != results["icnet"]["params"]
    for figure in ("curves.png", "comparison.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "| icnet |" in report and "| aticnet |" in report and "| pole |" in report


def test_demo_recipe_matches_configs_synthetic_yaml():
    config = load_config(ROOT / "configs" / "synthetic.yaml")
    ignore = {"model", "data_root", "out"}  # set per model and per run by the demo
    ours = {k: v for k, v in dataclasses.asdict(DEMO_RECIPE).items() if k not in ignore}
    theirs = {k: v for k, v in dataclasses.asdict(config).items() if k not in ignore}
    assert ours == theirs


def test_analyze_json_has_the_issue_keys(tmp_path, capsys):
    path = tmp_path / "a.json"
    assert main(["analyze", "--model", "aticnet", "--width", "0.125", "--size", "64x128", "--runs", "1", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert {"params", "gflops", "latency_ms", "receptive_field"} <= set(report)
    assert report["params"]["total"] == sum(report["params"][k] for k in ("trunk", "pyramid", "cascade", "heads"))
    levels = report["receptive_field"]["pyramid"]
    assert [(lv["bin"], lv["rate"], lv["F"]) for lv in levels] == [(1, 2, 5), (2, 4, 9), (3, 8, 17), (6, 12, 25)]
    trunk = report["receptive_field"]["trunk"]
    assert trunk[-1]["stride"] == 32 and trunk[-1]["rf"] > trunk[0]["rf"]
    # Each pyramid level sees (F - 1) map pixels more than the trunk, at the trunk's stride.
    assert all(lv["F_input"] == trunk[-1]["rf"] + (lv["F"] - 1) * 32 for lv in levels)
    assert "pool region" in capsys.readouterr().out
