"""The web app: its pure functions (no browser, no Gradio), then the page itself in headless Chromium.

The browser test starts the app in this process on 127.0.0.1 (a free port), drives Debian's
Chromium through Playwright, uploads a picture and compares the overlay the page serves with
the one computed here, byte for byte (alpha 1.0: the overlay is the class colours alone). It
skips, saying why, without gradio, playwright or /usr/bin/chromium.
"""

from __future__ import annotations

import copy
import html
import io
import os
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from aticnet.app import (
    Limits,
    class_shares,
    legend_html,
    load_segmenters,
    model_labels,
    process_upload,
    segment_image,
    shared_infer_scale,
)
from aticnet.app.media import fit_size
from tests.app.conftest import CHROMIUM, CHROMIUM_ARGS, browser_requirements, free_port, palette_image

pytestmark = [
    pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning"),
    # gradio 6.31's queue calls pandas options that pandas 3 deprecates
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
    pytest.mark.usefixtures("one_thread"),  # conftest
]


@pytest.fixture(scope="module")
def scene(synthetic_root) -> Path:
    return min((synthetic_root / "images" / "val").rglob("*.png"))  # a 64x128 street scene


# ----------------------------------------------------------------------------- pure functions
def test_class_shares_by_hand():
    labels = np.array([[0, 0, 2, 2], [2, 2, 2, 1], [2, 2, 0, 0]], np.uint8)  # 0: 4, 1: 1, 2: 7 of 12
    assert class_shares(labels, ["a", "b", "c", "d"]) == {"c": 7 / 12, "a": 4 / 12, "b": 1 / 12}
    assert list(class_shares(torch.from_numpy(labels), ["a", "b", "c", "d"])) == ["c", "a", "b"]
    assert class_shares(np.zeros((0, 3), np.uint8), ["a"]) == {}


def test_legend_html():
    classes, colors = ["road", "<car>", "sky"], [[128, 64, 128], [0, 0, 142], [70, 130, 180]]
    text = legend_html(classes, colors, [{"road": 0.75, "<car>": 0.25}, {"road": 0.5, "<car>": 0.5}], ["A", "B & C"])
    assert "rgb(128,64,128)" in text and "rgb(0,0,142)" in text and "rgb(70,130,180)" not in text  # present only
    assert "&lt;car&gt;" in text and "<car>" not in text and "B &amp; C" in text  # escaped
    assert text.index("road") < text.index("&lt;car&gt;")  # by share
    assert "75.0 %" in text and "25.0 %" in text and "50.0 %" in text
    assert "1 other classes not found" in text


def test_fit_size():
    assert fit_size(100, 200, 2048) == (100, 200)
    assert fit_size(1000, 4000, 2000) == (500, 2000)
    assert fit_size(3000, 1000, 300) == (300, 100)


def test_segment_image_two_models(segs, scene):
    image = np.array(Image.open(scene).convert("RGB"))
    overlays, legend, shares, latency, labels = segment_image(segs, image, alpha=1.0)
    assert len(overlays) == len(shares) == len(latency) == 2 and min(latency) > 0
    for seg, overlay, share, lab in zip(segs, overlays, shares, labels):
        assert overlay.shape == image.shape and overlay.dtype == np.uint8
        assert np.array_equal(overlay, palette_image(seg, seg.predict(image)))  # alpha 1: the class colours
        assert share == class_shares(lab, seg.classes) and abs(sum(share.values()) - 1) < 1e-9
    for name in model_labels(segs):
        assert html.escape(name) in legend
    half = segment_image(segs, image, alpha=0.5).overlays[0]
    blend = (0.5 * image.astype(np.float32) + 0.5 * palette_image(segs[0], labels[0]).astype(np.float32)).round()
    assert np.abs(half.astype(int) - blend).max() <= 1  # the overlay's 1/256 alpha steps: within one level


def spying(seg, seen: list):
    """A copy of ``seg`` that notes the ``infer_scale`` each ``predict`` call gets."""

    class Spy(type(seg)):
        def predict(self, image, *, infer_scale=None):
            seen.append(infer_scale)
            return super().predict(image, infer_scale=infer_scale)

    spy = Spy.__new__(Spy)
    spy.__dict__.update(seg.__dict__)
    return spy


def test_infer_scale_reaches_every_model(segs):
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    seen = []
    spies = [spying(s, seen) for s in segs]
    result = segment_image(spies, image, infer_scale=0.75)
    assert seen == [0.75, 0.75]
    for seg, labels in zip(segs, result.labels):
        assert torch.equal(labels, seg.predict(image, infer_scale=0.75))
    seen.clear()
    segment_image(spies, image)  # None: each model keeps the scale it was loaded with
    assert seen == [None, None]


def test_infer_scale_control_starts_at_the_models_scale(segs, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'aticnet[app]')")
    from aticnet.app import build_app

    def control(blocks):
        return next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "infer-scale")

    assert control(build_app(segs, workdir=tmp_path)).value == "1"
    scaled = copy.copy(segs[0])
    scaled.infer_scale = 0.6
    assert shared_infer_scale([scaled]) == 0.6 and shared_infer_scale([scaled, segs[1]]) == 1.0
    dropdown = control(build_app([scaled], workdir=tmp_path))
    assert dropdown.value == "0.6" and ("0.6", "0.6") in dropdown.choices


def test_model_labels(runs, segs):
    assert model_labels(segs) == ["icnet", "aticnet"]  # the folder is the model's own name
    twice = load_segmenters([runs[0], runs[0] / "model.safetensors"])
    assert model_labels(twice) == ["icnet", "icnet #2"]


def write_png(path: Path, h: int, w: int) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_uploads_good_and_bad(segs, tmp_path):
    update = process_upload(segs, write_png(tmp_path / "ok.png", 40, 60))
    assert update.kind == "image" and update.image.shape == (40, 60, 3) and "per image at 40x60" in update.status
    assert [o.shape for o in update.overlays] == [(40, 60, 3)] * 2
    # too large a side: downscaled, and the page says so
    update = process_upload(segs, write_png(tmp_path / "wide.png", 50, 200), limits=Limits(max_side=100))
    assert update.kind == "image" and update.image.shape == (25, 100, 3)
    assert "downscaled from 200x50 to 100x25" in update.status
    # too many pixels: refused before decoding
    update = process_upload(segs, write_png(tmp_path / "huge.png", 1000, 1200), limits=Limits(max_megapixels=1))
    assert update.kind == "error" and "1200x1000" in update.status and "up to 1 megapixels" in update.status
    (tmp_path / "fake.png").write_text("this is not a picture")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "notes.txt").write_text("hello\n" * 50)
    expected = {"fake.png": "is not an image or a video", "empty.jpg": "is empty", "junk.mp4": "is not a video",
                "notes.txt": "is not an image or a video"}
    for name, phrase in expected.items():
        update = process_upload(segs, tmp_path / name)
        assert update.kind == "error" and phrase in update.status, (name, update.status)
        assert update.overlays is None and "Cannot use this upload" in update.status
    assert "Upload an image" in process_upload(segs, None).status


def test_video(segs, tmp_path):
    av = pytest.importorskip("av", reason="PyAV is not installed")
    from aticnet.inference.video import VideoWriter

    writer = VideoWriter(tmp_path / "clip.mp4", Fraction(10))
    for i in range(6):
        writer.write(np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.close()
    update = process_upload(segs, tmp_path / "clip.mp4", limits=Limits(max_frames=4), workdir=tmp_path / "work")
    assert update.kind == "video" and "4 frames" in update.status and "first 4 of 6 frames" in update.status
    with av.open(update.video) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (48, 64 * 3, 3)  # input | icnet | aticnet
    assert [abs(sum(s.values()) - 1) < 1e-9 for s in update.shares] == [True, True]
    # containers with no frames: an AVI keeps its (empty) video stream, an MP4 drops it
    for name, phrase in (("none.avi", "none.avi has no video frames"), ("none.mp4", "none.mp4 is not a video")):
        container = av.open(str(tmp_path / name), mode="w")
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
        container.close()
        update = process_upload(segs, tmp_path / name)
        assert update.kind == "error" and phrase in update.status, update.status
    assert "was not found" in process_upload(segs, tmp_path / "gone.mp4").status


def open_page(sync_api, profile: Path, url: str, outside: list[str]):
    """Chromium with a fresh profile; every request leaving the app's address is blocked and recorded."""
    pw = sync_api.sync_playwright().start()
    ctx = pw.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), headless=True,
                                                args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})

    def route(r):
        if r.request.url.startswith(url.rstrip("/")) or r.request.url.startswith(("data:", "blob:")):
            return r.continue_()
        outside.append(r.request.url)
        return r.abort()

    ctx.route("**/*", route)
    return pw, ctx


def test_page_in_headless_chromium(served, segs, scene, tmp_path):
    _, sync_api = browser_requirements()
    expect = sync_api.expect
    outside: list[str] = []
    pw, ctx = open_page(sync_api, tmp_path / "profile", served, outside)
    try:
        page = ctx.new_page()
        page.goto(served)
        upload = page.locator("#upload input[type=file]")
        upload.wait_for(state="attached", timeout=30_000)
        upload.set_input_files(str(scene))
        result = page.locator("#overlay-1 img")
        result.wait_for(timeout=60_000)
        image = np.array(Image.open(scene).convert("RGB"))
        for i, seg in enumerate(segs):
            src = page.locator(f"#overlay-{i} img").get_attribute("src")
            served_png = np.array(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))
            assert served_png.shape == image.shape  # the upload's size
            colors = {tuple(c) for c in served_png.reshape(-1, 3).tolist()}
            assert colors <= {tuple(c) for c in seg.colors}  # opacity 1: nothing but the palette
            assert np.array_equal(served_png, palette_image(seg, seg.predict(image)))  # exactly this model's labels
        expect(page.locator("#status")).to_contain_text(f"per image at {image.shape[0]}x{image.shape[1]}")
        legend = page.locator("#legend")
        for name in class_shares(segs[0].predict(image), segs[0].classes):
            expect(legend).to_contain_text(name)
        expect(legend.locator("tr[data-class] span").first).to_have_css("display", "inline-block")
        shot = tmp_path / "app.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000 and Image.open(shot).size[0] == 1280

        # a file that is not a picture, under a picture's name: the page says so
        page.reload()
        bad = tmp_path / "holiday.png"
        bad.write_text("not a picture")
        page.locator("#upload input[type=file]").set_input_files(str(bad))
        expect(page.locator("#status")).to_contain_text("Cannot use this upload: holiday.png is not an image",
                                                        timeout=30_000)
        # a file type the page does not take: Gradio's own message
        page.reload()
        text = tmp_path / "notes.txt"
        text.write_text("hello")
        page.locator("#upload input[type=file]").set_input_files(str(text))
        expect(page.get_by_text("Invalid file type")).to_be_visible(timeout=30_000)
    finally:
        ctx.close()
        pw.stop()
    assert outside == []  # the page asked nothing of any other host


def test_command_prints_its_address(runs, tmp_path):
    """``aticnet app`` in a subprocess: it prints the local address, which serves the page; Ctrl+C stops it."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'aticnet[app]')")
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "aticnet", "app", "--weights", str(runs[0]), str(runs[1]),
                             "--port", str(port), "--device", "cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline, line = time.monotonic() + 120, ""
        while time.monotonic() < deadline and "open http" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert line.strip() == f"aticnet app: open http://127.0.0.1:{port}/ in a browser (Ctrl+C stops it)", line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200 and b"aticnet" in response.read()
    finally:
        proc.send_signal(2)  # SIGINT, as Ctrl+C
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
