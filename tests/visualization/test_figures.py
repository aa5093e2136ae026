"""``aticnet compare`` and ``aticnet plot``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from aticnet import build_model
from aticnet.cli import compare as compare_cli
from aticnet.cli import plot as plot_cli
from aticnet.data.cityscapes_labels import CLASS_COLORS, CLASS_NAMES
from aticnet.models.weights import save_weights
from aticnet.utils.errors import DataError, UserError
from aticnet.visualization import figures


def run_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="aticnet")
    sub = parser.add_subparsers(dest="command", required=True)
    compare_cli.add_parser(sub)
    plot_cli.add_parser(sub)
    args = parser.parse_args(argv)
    args.func(args)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    meta = {"classes": CLASS_NAMES, "colors": [list(c) for c in CLASS_COLORS], "dataset": "cityscapes"}
    dirs = []
    for seed, name in enumerate(["icnet", "aticnet"]):
        torch.manual_seed(seed)
        save_weights(build_model(name, num_classes=19, width=0.125), root / name / "model.safetensors", meta)
        dirs.append(root / name)
    return dirs


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        p = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    train_ids = np.zeros((40, 64), np.uint8)
    train_ids[:20] = 10
    train_ids[30:] = 255
    Image.fromarray(train_ids).save(root / "img0_trainIds.png")
    label_ids = np.full((40, 64), 7, np.uint8)  # road
    label_ids[:10] = 26  # car
    Image.fromarray(label_ids).save(root / "img1_gtFine_labelIds.png")
    return paths, [root / "img0_trainIds.png", root / "img1_gtFine_labelIds.png"]


def test_read_label_maps_cityscapes_label_ids(images):
    _, labels = images
    assert set(np.unique(figures.read_label(labels[0])).tolist()) == {0, 10, 255}
    assert set(np.unique(figures.read_label(labels[1])).tolist()) == {0, 13}  # road, car as train ids


def test_compare_writes_a_figure(two_runs, images, tmp_path, capsys):
    paths, labels = images
    out = tmp_path / "fig" / "compare.png"
    run_cli(["compare", "--weights", *map(str, two_runs), "--images", *map(str, paths), "--labels", *map(str, labels),
             "--names", "ICNet", "AtICNet", "--out", str(out), "--device", "cpu", "--title", "tiny"])
    assert out.is_file() and Image.open(out).size[0] > 300
    assert str(out) in capsys.readouterr().out
    no_labels = tmp_path / "nolabels.png"
    run_cli(["compare", "--weights", str(two_runs[0]), "--images", str(paths[0]), "--out", str(no_labels)])
    assert no_labels.is_file()


def test_compare_errors_name_the_file(two_runs, images, tmp_path):
    paths, labels = images
    with pytest.raises(UserError, match="one per image"):
        figures.compare_models(two_runs, paths, tmp_path / "x.png", labels=labels[:1])
    with pytest.raises(DataError, match="ghost.png"):
        figures.compare_models(two_runs, [tmp_path / "ghost.png"], tmp_path / "x.png")
    small = tmp_path / "small_trainIds.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small)
    with pytest.raises(DataError, match="small_trainIds.png"):
        figures.compare_models(two_runs, paths[:1], tmp_path / "x.png", labels=[small])
    five = tmp_path / "five.safetensors"
    save_weights(build_model("icnet", num_classes=5, width=0.125), five, {"classes": list("abcde")})
    with pytest.raises(UserError, match="5 classes"):
        figures.compare_models([two_runs[0], five], paths[:1], tmp_path / "x.png")


def write_run(d, steps, losses, mious, init=None):
    d.mkdir(parents=True)
    rows = [{"kind": "train", "step": s, "loss": lo} for s, lo in zip(steps, losses)]
    rows += [{"kind": "eval", "step": steps[-1], "miou": mious}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "config.yaml").write_text(yaml.safe_dump({"model": "aticnet", "init": str(init) if init else None}))
    return d


def test_plot_continues_warm_started_rounds(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    r1 = write_run(tmp_path / "round1", [10, 20, 30], [2.0, 1.5, 1.2], 0.30)
    r2 = write_run(tmp_path / "round2", [10, 20], [1.1, 1.0], 0.40, init=r1 / "model.safetensors")
    r3 = write_run(tmp_path / "round3", [5, 10], [0.9, 0.8], 0.45, init=r2)
    other = write_run(tmp_path / "fresh", [10, 20], [2.2, 1.9], 0.20)
    calls = []
    real_plot = Axes.plot

    def spy(self, *args, **kwargs):
        calls.append((kwargs.get("label"), list(args[0])))
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    out = tmp_path / "curves.png"
    run_cli(["plot", str(r1), str(r2), str(r3), str(other), "--labels", "r1", "r2", "r3", "fresh", "--out", str(out)])
    assert out.is_file()
    xs = {}
    for label, x in calls:
        xs.setdefault(label, []).append(x)
    assert xs["r1"][0] == [10, 20, 30]
    assert xs["r2"][0] == [40, 50]  # round 2 starts where round 1 ended (step 30)
    assert xs["r3"][0] == [55, 60]  # round 3 after round 2 (30 + 20)
    assert xs["fresh"][0] == [10, 20]
    assert xs["r2"][1] == [50]  # the eval point moves too


def test_plot_names_what_the_runs_were_scored_on(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    titles = []
    real_set = Axes.set

    def spy(self, **kwargs):
        if "title" in kwargs:
            titles.append(kwargs["title"])
        return real_set(self, **kwargs)

    monkeypatch.setattr(Axes, "set", spy)
    held = write_run(tmp_path / "held", [10, 20], [2.0, 1.5], 0.3)
    config = yaml.safe_load((held / "config.yaml").read_text())
    (held / "config.yaml").write_text(yaml.safe_dump({**config, "holdout_drive": "0006R0"}))
    figures.plot_runs([held], tmp_path / "a.png")
    assert titles[-1] == "mIoU on the held-out drive 0006R0"
    figures.plot_runs([write_run(tmp_path / "plain", [10], [2.0], 0.3)], tmp_path / "b.png")
    assert titles[-1] == "mIoU on the val split"


def test_plot_errors(tmp_path):
    with pytest.raises(UserError, match="nowhere"):
        run_cli(["plot", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="metrics.jsonl"):
        run_cli(["plot", str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")])
    with pytest.raises(UserError, match="2 labels for 1 runs"):
        figures.plot_runs([tmp_path / "empty"], tmp_path / "x.png", labels=["a", "b"])
