"""The CamVid protocol's summaries (benchmarks/camvid_report.py) against numbers worked out by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.helpers import ROOT

BENCHMARKS = ROOT / "benchmarks"


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
        "train_minutes": minutes, "resumed": resumed, "cpu": "AMD EPYC (avx512_bf16)",
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
    assert "| jitter (seed 0) | ColorJitter | 51.2 | - | 3000 | 20 | AMD EPYC (avx512_bf16) | `aticnet x` |" in report.format_experiments(rows, "D")


def test_minutes_alone_take_the_median_step_and_the_evaluations(report):
    rows = [{"kind": "train", "step": 20, "images_per_s": 16.0}, {"kind": "train", "step": 40, "images_per_s": 1.0},
            {"kind": "eval", "step": 40, "seconds": 30.0}, {"kind": "train", "step": 60, "images_per_s": 20.0}]
    # batch 8: 0.5, 8 and 0.4 s per step; the median 0.5 s x 60 steps + 30 s of evaluation = 1 min
    assert report.minutes_alone(rows, 8) == pytest.approx(1.0)


@pytest.fixture
def camvid(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("camvid_protocol", BENCHMARKS / "camvid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_run_with_the_same_config_and_seed_is_found_and_nothing_else(camvid, tmp_path, monkeypatch):
    """The claim reuses a finished recipe experiment only when every field that changes the weights agrees."""
    from aticnet.training.config import load_config, save_config

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
    # another number of loader processes reads the same batches: the same run
    want = load_config(camvid.RECIPE, out=str(tmp_path / "claim" / "icnet_seed0"), seed=0, resume="auto", workers=3)
    assert camvid.same_run(want, tmp_path) == same
    assert camvid.same_run(load_config(camvid.RECIPE, out="x", seed=2), tmp_path) is None
    assert camvid.same_run(load_config(camvid.RECIPE, out="x", model="aticnet", seed=0), tmp_path) is None
    assert camvid.same_run(load_config(camvid.RECIPE, out=str(same), seed=0), tmp_path) is None  # not itself

    # --table-only trains nothing: a finished twin is reused, anything else is left out (None)
    import argparse

    monkeypatch.setattr(camvid, "RESULTS", tmp_path / "kept")
    monkeypatch.setattr(camvid.aticnet, "train", lambda cfg: pytest.fail("--table-only must not train"))
    data_root = load_config(camvid.RECIPE).data_root  # the finished runs' (the recipe's own)
    args = argparse.Namespace(table_only=True, retrain=False, quick=False, data_root=data_root, out=str(tmp_path))
    assert camvid.run_one(camvid.RECIPE, {"seed": 0}, tmp_path / "claim" / "icnet_seed0", args)["same_as"] == str(same)
    assert camvid.run_one(camvid.RECIPE, {"seed": 7}, tmp_path / "claim" / "icnet_seed7", args) is None


def test_a_finished_run_of_another_config_is_never_reused_as_this_one(camvid, tmp_path, monkeypatch):
    """A run directory is reused only when its config is the one asked for (the recipe edited since, or a 300-step
    smoke run in its place, stops with the fields that differ); the same config is reused without training."""
    import argparse
    import json

    from aticnet.training.config import load_config, save_config

    monkeypatch.setattr(camvid.aticnet, "train", lambda cfg: pytest.fail("nothing may train here"))
    data_root = load_config(camvid.RECIPE).data_root
    run_dir = tmp_path / "claim" / "icnet_seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"model": "icnet", "seed": 0, "miou": 0.25}))
    (run_dir / "model.safetensors").write_bytes(b"")
    (run_dir / "metrics.jsonl").write_text('{"kind": "train", "step": 300, "images_per_s": 8.0}\n'
                                           '{"kind": "eval", "step": 300, "seconds": 60.0}\n')
    args = argparse.Namespace(table_only=False, retrain=False, quick=False, data_root=data_root, out=str(tmp_path))
    save_config(load_config(camvid.RECIPE, out=str(run_dir), seed=0, max_steps=300), run_dir / "config.yaml")
    with pytest.raises(SystemExit, match=r"icnet_seed0 holds a run of another config \(max_steps differ"):
        camvid.run_one(camvid.RECIPE, {"model": "icnet", "seed": 0}, run_dir, args)
    save_config(load_config(camvid.RECIPE, out=str(run_dir), seed=0, workers=2), run_dir / "config.yaml")
    reused = camvid.run_one(camvid.RECIPE, {"model": "icnet", "seed": 0}, run_dir, args)
    batch = load_config(camvid.RECIPE).batch_size
    assert reused["miou"] == 0.25 and reused["train_minutes"] == pytest.approx((batch / 8.0 * 300 + 60) / 60)


def test_a_stopped_run_is_left_to_resume_not_summarised(camvid, tmp_path, monkeypatch):
    """A stop signal ends training with a checkpoint and no weights: the script stops, saying how to go on, and
    keeps no summary (before, it went on to load weights that were not there)."""
    import argparse

    from aticnet.training.config import load_config

    monkeypatch.setattr(camvid, "RESULTS", tmp_path / "kept")
    run_dir = tmp_path / "claim" / "icnet_seed7"
    monkeypatch.setattr(camvid.aticnet, "train", lambda cfg: {"stopped": "SIGTERM", "step": 42, "run_dir": str(run_dir)})
    args = argparse.Namespace(table_only=False, retrain=False, quick=False, out=str(tmp_path),
                              data_root=load_config(camvid.RECIPE).data_root)
    with pytest.raises(SystemExit, match=r"icnet_seed7: stopped by SIGTERM at step 42; the same command resumes it"):
        camvid.run_one(camvid.RECIPE, {"model": "icnet", "seed": 7}, run_dir, args, weights_needed=False)
    assert not camvid.kept_result(run_dir).exists()


def test_the_claim_reads_a_kept_summary_and_times_the_recipe_network(camvid, tmp_path, monkeypatch):
    """A run finished on another machine (its directory gone, its summary kept) is not trained again, and the latency
    column times the network configs/camvid.yaml builds, whatever its weights."""
    import argparse
    import json

    monkeypatch.setattr(camvid, "RESULTS", tmp_path / "kept")
    monkeypatch.setattr(camvid.aticnet, "train", lambda cfg: pytest.fail("a kept run must not train again"))
    run_dir = tmp_path / "claim" / "aticnet_seed4"
    kept = {"model": "aticnet", "seed": 4, "miou": 0.5, "run_dir": str(run_dir)}
    camvid.kept_result(run_dir).parent.mkdir(parents=True)
    camvid.kept_result(run_dir).write_text(json.dumps(kept))
    assert camvid.kept_result(run_dir) == tmp_path / "kept" / "claim" / "aticnet_seed4.json"
    args = argparse.Namespace(table_only=False, retrain=False, quick=False, data_root="unused", out=str(tmp_path))
    assert camvid.run_one(camvid.RECIPE, {"model": "aticnet", "seed": 4}, run_dir, args, weights_needed=False) == kept

    net = camvid.recipe_network("aticnet")
    c = net.config
    assert (c.name, c.stage5_blocks, c.pyramid, c.num_classes, c.width) == ("aticnet", 2, "atrous", 11, 0.5)
    assert not net.training


def test_the_claim_plans_the_seeds_asked_for(camvid):
    """The protocol's seeds per model by default; --seeds N gives every model asked for N (more than the protocol's
    too: seed 3 of ICNet and AtICNet); --quick one each; seed by seed, so the first seeds of every model come first."""
    import argparse

    def plan(**kw):
        return camvid.claim_runs(argparse.Namespace(**{"quick": False, "seeds": None, "models": None, **kw}))

    default = plan()
    assert {m: sum(1 for x, _ in default if x == m) for m in camvid.CLAIM} == camvid.CLAIM
    assert default[:2] == [("icnet", 0), ("aticnet", 0)] and default[-1][1] == max(camvid.CLAIM.values()) - 1
    assert plan(models=["icnet", "aticnet"], seeds=4) == [(m, s) for s in range(4) for m in ("icnet", "aticnet")]
    assert plan(quick=True) == [(m, 0) for m in camvid.CLAIM]
    assert plan(models=["nonesuch"]) == []


def test_figures_leave_out_what_lacks_a_run_here(report, tmp_path, capsys):
    """The claim's figures come from the run directories on this machine: none, no figures; no AtICNet run, the
    curves but no side-by-side."""
    from aticnet.training.config import load_config, save_config

    report.figures([], ["icnet", "aticnet"], tmp_path, "unused", "0006R0")
    assert "no figures" in capsys.readouterr().out and not list(tmp_path.iterdir())
    run_dir = tmp_path / "icnet_seed0"
    run_dir.mkdir()
    save_config(load_config(BENCHMARKS.parent / "configs" / "camvid.yaml", out=str(run_dir)), run_dir / "config.yaml")
    (run_dir / "metrics.jsonl").write_text('{"kind": "train", "step": 20, "loss": 2.0}\n'
                                           '{"kind": "eval", "step": 20, "miou": 0.3}\n')
    report.figures([run("icnet", 0, 0.3, 1) | {"run_dir": str(run_dir)}], ["icnet", "aticnet"], tmp_path, "unused", "0006R0")
    assert "no run of aticnet" in capsys.readouterr().out
    assert (tmp_path / "curves.png").is_file() and not (tmp_path / "comparison.png").exists()


def test_each_recipe_keeps_its_runs_apart(camvid, tmp_path):
    """configs/camvid.yaml's claim is out/claim; another recipe's claim and final runs get their own folders, so
    their kept summaries never mix with the default recipe's."""
    import argparse

    def where(recipe, protocol):
        return camvid.protocol_dir(argparse.Namespace(out=str(tmp_path), recipe=str(recipe), quick=False), protocol)

    assert where(camvid.RECIPE, "claim") == tmp_path / "claim"
    quick = argparse.Namespace(out=str(tmp_path), recipe=str(camvid.RECIPE), quick=True)
    assert camvid.protocol_dir(quick, "claim") == tmp_path / "claim_quick"  # a smoke run never sits in a real one's place
    assert where(camvid.ROOT / "configs" / "camvid_bf16.yaml", "claim") == tmp_path / "claim_bf16"
    assert where(camvid.ROOT / "configs" / "camvid_bf16.yaml", "final") == tmp_path / "final_bf16"
    assert camvid.kept_result(where(camvid.ROOT / "configs" / "camvid_bf16.yaml", "claim") / "icnet_seed0") == \
        camvid.RESULTS / "claim_bf16" / "icnet_seed0.json"
