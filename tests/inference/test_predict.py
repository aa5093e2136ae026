"""The Python API (aticnet.load / Segmenter) and ``aticnet predict`` on tiny random-weight models."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import aticnet
from aticnet import build_model
from aticnet.cli import predict as predict_cli
from aticnet.data.cityscapes_labels import CLASS_COLORS, CLASS_NAMES, train_id_to_label_id_lut
from aticnet.models.weights import save_weights
from aticnet.utils.errors import DataError, UserError


def tiny(num_classes: int = 19, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("aticnet", num_classes=num_classes, width=0.125).eval()


def meta(k: int) -> dict:
    return {"classes": (CLASS_NAMES + [f"c{i}" for i in range(40)])[:k],
            "colors": [list(c) for c in (CLASS_COLORS * 3)[:k]], "dataset": "synthetic"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory holding a 19-class tiny AtICNet (Cityscapes classes)."""
    d = tmp_path_factory.mktemp("run")
    save_weights(tiny(19), d / "model.safetensors", meta(19))
    return d


@pytest.fixture(scope="module")
def seg(run_dir):
    return aticnet.load(run_dir)


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def run_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="aticnet")
    sub = parser.add_subparsers(dest="command", required=True)
    predict_cli.add_parser(sub)
    args = parser.parse_args(argv)
    args.func(args)


# ----------------------------------------------------------------------------- API
def test_predict_every_input_type_gives_the_same_map(seg, tmp_path):
    img = random_image(37, 53)
    path = write_image(tmp_path / "a.png", img)
    chw = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    outs = [seg.predict(path), seg.predict(str(path)), seg.predict(Image.open(path)), seg.predict(img),
            seg.predict(chw), seg.predict(chw.float() / 255), seg(img)]
    for out in outs:
        assert out.shape == (37, 53) and out.dtype == torch.uint8
        assert torch.equal(out, outs[0])
    # the same as running the module on the normalised image ourselves
    cfg = seg.model.config
    x = (chw.float()[None] / 255 - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = seg.model(x).argmax(1)[0]
    assert torch.equal(outs[0].long(), want)
    assert isinstance(seg.model, torch.nn.Module) and not seg.model.training
    assert seg.classes == CLASS_NAMES and seg.colors[0] == list(CLASS_COLORS[0])


def test_predict_batch_groups_sizes_and_matches_predict(seg):
    images = [random_image(32, 48, 1), random_image(40, 40, 2), random_image(32, 48, 3)]
    batch = seg.predict_batch(images, batch_size=2)
    assert [tuple(b.shape) for b in batch] == [(32, 48), (40, 40), (32, 48)]
    for image, labels in zip(images, batch):
        assert (seg.predict(image) == labels).float().mean() > 0.99  # batched convs may round differently


def test_load_safetensors_file_and_reexports(run_dir):
    m = aticnet.load(run_dir / "model.safetensors", device="cpu")
    labels = m.predict(random_image(24, 30))
    assert aticnet.colorize(labels, m.colors).shape == (24, 30, 3)
    assert aticnet.overlay(random_image(24, 30), labels, m.colors, 0.5).shape == (24, 30, 3)
    assert m.overlay(random_image(24, 30), labels).dtype == np.uint8


def test_api_bad_inputs_name_the_problem(seg, tmp_path):
    with pytest.raises(DataError, match="missing.png"):
        seg.predict(tmp_path / "missing.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        seg.predict(bad)
    with pytest.raises(UserError, match="H x W x 3"):
        seg.predict(np.zeros((4, 5, 7), np.uint8))
    with pytest.raises(UserError, match="3 x H x W"):
        seg.predict(torch.zeros(5, 4, 4))
    with pytest.raises(UserError, match="nothing-here"):
        aticnet.load(tmp_path / "nothing-here")


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """in/a.png (32x48), in/sub/b.jpg (40x56), in/sub/deeper/c.png (32x48), plus a stray text file."""
    root = tmp_path_factory.mktemp("in")
    write_image(root / "a.png", random_image(32, 48, 1))
    write_image(root / "sub" / "b.jpg", random_image(40, 56, 2))
    write_image(root / "sub" / "deeper" / "c.png", random_image(32, 48, 3))
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("fmt,mode", [("trainid", "L"), ("labelid", "L"), ("color", "RGB"), ("overlay", "RGB")])
def test_predict_cli_writes_each_format_at_input_size_and_relative_path(run_dir, seg, image_tree, tmp_path, fmt, mode, capsys):
    out = tmp_path / "out"
    run_cli(["predict", str(image_tree), "--weights", str(run_dir), "--out", str(out), "--format", fmt,
             "--batch-size", "2", "--quiet"])
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.png", "sub/b.png", "sub/deeper/c.png"]
    for rel, src in [("a.png", "a.png"), ("sub/b.png", "sub/b.jpg"), ("sub/deeper/c.png", "sub/deeper/c.png")]:
        got = Image.open(out / rel)
        source = Image.open(image_tree / src)
        assert got.size == source.size and got.mode == mode
        if fmt in ("trainid", "labelid") and src.endswith(".png"):
            labels = seg.predict(image_tree / src).numpy()
            want = labels if fmt == "trainid" else train_id_to_label_id_lut().numpy()[labels]
            assert np.array_equal(np.asarray(got), want)
    printed = capsys.readouterr().out
    assert "3 images in" in printed and "images/s" in printed


def test_predict_cityscapes_names_match_the_official_pattern(run_dir, tmp_path):
    from aticnet.evaluation.cityscapes import find_prediction

    src = tmp_path / "leftImg8bit" / "val"
    write_image(src / "aachen" / "aachen_000000_000019_leftImg8bit.png", random_image(32, 64, 4))
    write_image(src / "lindau" / "lindau_000001_000002_leftImg8bit.png", random_image(32, 64, 5))
    out = tmp_path / "pred"
    run_cli(["predict", str(src), "--weights", str(run_dir), "--out", str(out), "--format", "cityscapes", "--quiet"])
    assert (out / "aachen" / "aachen_000000_000019_pred.png").is_file()
    assert (out / "lindau" / "lindau_000001_000002_pred.png").is_file()
    walk = [(str(root), [p.name for p in root.iterdir() if p.is_file()]) for root in [out / "aachen", out / "lindau"]]
    found = find_prediction(walk, tmp_path / "aachen_000000_000019_gtFine_labelIds.png")
    assert found.name == "aachen_000000_000019_pred.png"
    ids = np.unique(np.asarray(Image.open(found)))
    assert set(ids.tolist()) <= set(train_id_to_label_id_lut().numpy()[:19].tolist())  # label ids, not train ids


def test_predict_cli_errors_name_the_file(run_dir, tmp_path):
    img = write_image(tmp_path / "photo.png", random_image(16, 16))
    with pytest.raises(DataError, match="photo.png"):
        run_cli(["predict", str(img), "--weights", str(run_dir), "--out", str(tmp_path / "o"), "--format", "cityscapes"])
    with pytest.raises(UserError, match="nope.png"):
        run_cli(["predict", str(tmp_path / "nope.png"), "--weights", str(run_dir), "--out", str(tmp_path / "o")])
    bad = tmp_path / "bad" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DataError, match="broken.jpg"):
        run_cli(["predict", str(bad.parent), "--weights", str(run_dir), "--out", str(tmp_path / "o"), "--quiet"])
    five = tmp_path / "five.safetensors"
    save_weights(tiny(5), five, meta(5))
    with pytest.raises(UserError, match="19 Cityscapes"):
        run_cli(["predict", str(img), "--weights", str(five), "--out", str(tmp_path / "o"), "--format", "labelid"])
    # two inputs that would land on one output
    other = write_image(tmp_path / "x" / "photo.png", random_image(16, 16))
    with pytest.raises(UserError, match="both be written"):
        run_cli(["predict", str(img), str(other), "--weights", str(run_dir), "--out", str(tmp_path / "o")])


def test_onnx_weights_run_through_onnxruntime(run_dir, seg, tmp_path):
    pytest.importorskip("onnxruntime")
    from aticnet.deploy.export import export_onnx
    from aticnet.models.weights import load_model

    model, m = load_model(run_dir)
    path = tmp_path / "tiny.onnx"
    export_onnx(model, m, path, size=(32, 64), dynamic=True, opset=17, exporter="legacy")  # the fast exporter
    onnx_seg = aticnet.load(path)
    assert onnx_seg.model is None and onnx_seg.backend == "onnxruntime"
    assert onnx_seg.classes == seg.classes and onnx_seg.colors == seg.colors and onnx_seg.num_classes == 19
    image = random_image(40, 56, 7)
    assert (onnx_seg.predict(image) == seg.predict(image)).float().mean() > 0.99
    # onnxruntime's workers stop spinning when a run ends (by default they spin on, about 35 ms of a core
    # here, taking the cores from the labels step and anything else that runs next)
    x = torch.rand(1, 3, 64, 96)
    busy_after = []
    for _ in range(3):
        onnx_seg.run(x)
        start = time.process_time()
        time.sleep(0.1)
        busy_after.append(time.process_time() - start)
    assert min(busy_after) < 0.01, busy_after
    img = write_image(tmp_path / "in" / "p.png", image)
    run_cli(["predict", str(img), "--weights", str(path), "--out", str(tmp_path / "out"), "--format", "trainid", "--quiet"])
    assert Image.open(tmp_path / "out" / "p.png").size == (56, 40)


# ----------------------------------------------------------------------------- video
def make_video(path, frames: int = 6, h: int = 48, w: int = 64):
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(random_image(h, w, i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_video_overlay_and_frames(run_dir, tmp_path):
    av = pytest.importorskip("av")
    video = make_video(tmp_path / "clip.mp4")
    run_cli(["predict", str(video), "--weights", str(run_dir), "--out", str(tmp_path / "o"), "--format", "overlay",
             "--batch-size", "4", "--quiet"])
    with av.open(str(tmp_path / "o" / "clip.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    run_cli(["predict", str(video), "--weights", str(run_dir), "--out", str(tmp_path / "t"), "--format", "trainid", "--quiet"])
    pngs = sorted((tmp_path / "t" / "clip").glob("*.png"))
    assert len(pngs) == 6 and Image.open(pngs[0]).size == (64, 48)


def test_video_without_pyav_is_a_clear_error(run_dir, tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(UserError, match=r"clip\.mp4.*PyAV"):
        run_cli(["predict", str(video), "--weights", str(run_dir), "--out", str(tmp_path / "o")])
