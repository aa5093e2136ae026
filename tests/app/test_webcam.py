"""The app's webcam tab: the frame function without a browser, then the tab in headless Chromium fed by
Chromium's fake camera (``--use-fake-device-for-media-stream``: a 640x480 test pattern). Skips, saying why,
without gradio, playwright or /usr/bin/chromium."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from aticnet.app import FrameRate, model_labels, segment_webcam_frame
from tests.app.conftest import CHROMIUM, CHROMIUM_ARGS, browser_requirements, palette_image

pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
    pytest.mark.usefixtures("one_thread"),  # conftest
]
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def test_frame_rate_over_the_last_frames():
    rate = FrameRate(window=5, gap_s=2.0)
    assert rate.tick(10.0) == 0.0  # one frame: no rate yet
    for t in (10.1, 10.2, 10.3, 10.4):
        fps = rate.tick(t)
    assert fps == pytest.approx(10.0)
    for t in (10.6, 10.8, 11.0, 11.2, 11.4):  # slower: the window holds these five only
        fps = rate.tick(t)
    assert list(rate.times) == [10.6, 10.8, 11.0, 11.2, 11.4] and fps == pytest.approx(5.0)
    assert rate.tick(20.0) == 0.0 and list(rate.times) == [20.0]  # a pause: a new recording starts over


def test_webcam_frame_gives_each_overlay_and_the_rate(segs):  # noqa: F811
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    rate = FrameRate()
    first = segment_webcam_frame(segs, frame, rate, alpha=1.0)
    assert first.overlay.shape == (48, 128, 3) and first.fps == 0.0  # the two models side by side
    for i, seg in enumerate(segs):
        assert np.array_equal(first.overlay[:, 64 * i: 64 * (i + 1)], palette_image(seg, seg.predict(frame)))
    second = segment_webcam_frame(segs, frame, rate, alpha=1.0)
    assert second.fps > 0 and f"**{second.fps:.1f} frames/s** over the last 2 frames" in second.status
    assert len(second.latency_ms) == 2 and all(ms > 0 for ms in second.latency_ms)
    for name in model_labels(segs):
        assert name in second.status
    assert "per frame at 48x64" in second.status
    # an RGBA frame, larger than the side limit: alpha dropped, downscaled
    rgba = np.dstack([np.repeat(frame, 2, 0).repeat(2, 1), np.full((96, 128), 255, np.uint8)])
    big = segment_webcam_frame(segs, rgba, rate, max_side=64)
    assert big.overlay.shape == (48, 128, 3) and "per frame at 48x64" in big.status
    waiting = segment_webcam_frame(segs, None, rate)
    assert waiting.overlay is None and "record" in waiting.status and len(rate.times) == 3


@pytest.mark.slow
def test_webcam_tab_in_headless_chromium(served, segs, tmp_path):  # noqa: F811
    """The fake camera streams into the tab; overlays come back at the camera's size and a rate is shown."""
    _, sync_api = browser_requirements()
    outside: list[str] = []
    pw = sync_api.sync_playwright().start()
    ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM),
                                                headless=True, args=CHROMIUM_ARGS + FAKE_CAMERA,
                                                viewport={"width": 1280, "height": 900},
                                                permissions=["camera"])

    def route(r):
        if r.request.url.startswith(served.rstrip("/")) or r.request.url.startswith(("data:", "blob:")):
            return r.continue_()
        outside.append(r.request.url)
        return r.abort()

    ctx.route("**/*", route)
    try:
        page = ctx.new_page()
        page.goto(served)
        page.get_by_role("tab", name="Webcam").click()
        access = page.get_by_text("Click to Access Webcam")
        access.wait_for(timeout=30_000)
        access.click()
        record = page.locator('#webcam [title="start recording"]')
        record.wait_for(timeout=30_000)
        record.click()
        fps = page.locator("#webcam-fps")
        sync_api.expect(fps).to_contain_text(re.compile(r"[1-9][0-9]*\.[0-9] frames/s|0\.[1-9] frames/s"),
                                             timeout=60_000)
        rate = float(re.search(r"([0-9.]+) frames/s", fps.inner_text()).group(1))
        assert rate > 0
        for name in model_labels(segs):
            sync_api.expect(fps).to_contain_text(name)
        src = page.locator("#webcam-overlay img").get_attribute("src")
        overlay = Image.open(io.BytesIO(page.request.get(src).body()))
        assert overlay.size == (2 * 640, 480)  # the fake camera's 640x480 frame, once per model
        shot = tmp_path / "webcam.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    finally:
        ctx.close()
        pw.stop()
    assert outside == []  # the page asked nothing of any other host


def test_webcam_frames_are_not_mirrored(segs):  # noqa: F811
    """A street camera's frames go to the models as the scene is (Gradio mirrors webcams by default)."""
    from aticnet.app import build_app

    blocks = build_app(segs)
    (camera,) = [c for c in blocks.blocks.values() if getattr(c, "elem_id", None) == "webcam"]
    assert camera.webcam_options.mirror is False
