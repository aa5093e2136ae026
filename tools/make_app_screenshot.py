"""Write docs/images/app.png: the web app (``aticnet app``) after an upload, as a person sees it; or
docs/images/live.png: its Webcam tab segmenting a camera stream.

    python tools/make_app_screenshot.py --image street.png      # the shipped ICNet and AtICNet side by side
    python tools/make_app_screenshot.py --weights runs/a runs/b --image street.png --out docs/images/app.png
    python tools/make_app_screenshot.py --webcam CAMVID/val                # docs/images/live.png

Starts the app on 127.0.0.1, opens it in headless Debian Chromium (/usr/bin/chromium, through
Playwright), uploads the image, waits for the overlays and saves a screenshot of the page. With ``--webcam
FRAMES``, Chromium's camera is a clip made of those frames (640x480, ``--use-file-for-fake-video-capture``): the
tab records it and the screenshot is taken once the page shows the frames/s it reaches. Needs gradio and
playwright (pip), chromium (apt) and, for ``--webcam``, PyAV; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def screenshot(weights: list[str], image: Path, out: Path, width: int = 1280, alpha: float = 0.5) -> Path:
    """Serve the app for ``weights``, upload ``image`` in Chromium and write the page to ``out`` (PNG)."""
    from playwright.sync_api import sync_playwright

    from aticnet.app import launch_app, load_segmenters

    blocks, url = launch_app(load_segmenters(weights), alpha=alpha, block=False)
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            ctx = pw.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium", headless=True,
                                                        args=CHROMIUM_ARGS, viewport={"width": width, "height": 800})
            page = ctx.new_page()
            page.goto(url)
            page.locator("#upload input[type=file]").set_input_files(str(image))
            page.locator(f"#overlay-{len(weights) - 1} img").wait_for(timeout=120_000)
            page.wait_for_timeout(500)  # let the images finish painting
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            ctx.close()
    finally:
        blocks.close()
    return out


def write_camera_clip(frames: Path, out: Path, count: int = 60, fps: int = 10) -> Path:
    """A Y4M clip (what Chromium's fake camera reads) of the first ``count`` images of ``frames``, at 640x480."""
    import av

    files = sorted(p for p in frames.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:count]
    if not files:
        raise SystemExit(f"{frames}: no .png or .jpg frames")
    with av.open(str(out), "w", format="yuv4mpegpipe") as clip:
        stream = clip.add_stream("rawvideo", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for file in files:
            rgb = Image.open(file).convert("RGB").resize((640, 480), Image.BILINEAR)
            clip.mux(stream.encode(av.VideoFrame.from_image(rgb).reformat(format="yuv420p")))
        clip.mux(stream.encode())
    return out


def webcam_screenshot(weights: list[str], frames: Path, out: Path, width: int = 1280, alpha: float = 0.5) -> Path:
    """Serve the app for ``weights``, feed the Webcam tab a clip of ``frames`` and write the page to ``out``."""
    from playwright.sync_api import expect, sync_playwright

    from aticnet.app import launch_app, load_segmenters

    blocks, url = launch_app(load_segmenters(weights), alpha=alpha, block=False)
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
            clip = write_camera_clip(frames, Path(tmp) / "camera.y4m")
            camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                      f"--use-file-for-fake-video-capture={clip}"]
            ctx = pw.chromium.launch_persistent_context(Path(tmp) / "profile", executable_path="/usr/bin/chromium",
                                                        headless=True, args=CHROMIUM_ARGS + camera,
                                                        viewport={"width": width, "height": 900},
                                                        permissions=["camera"])
            page = ctx.new_page()
            page.goto(url)
            page.get_by_role("tab", name="Webcam").click()
            page.get_by_text("Click to Access Webcam").click(timeout=30_000)
            page.locator('#webcam [title="start recording"]').click(timeout=30_000)
            expect(page.locator("#webcam-fps")).to_contain_text(re.compile(r"[1-9][0-9]*\.[0-9] frames/s"),
                                                                timeout=120_000)
            page.wait_for_timeout(3000)  # a few more frames, so the rate settles
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            ctx.close()
    finally:
        blocks.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", default=["icnet-camvid", "aticnet-camvid"])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", type=Path, help="a street picture to upload")
    what.add_argument("--webcam", type=Path, metavar="FRAMES", help="a folder of frames to play as the camera")
    p.add_argument("--out", type=Path, help="default: docs/images/app.png, or live.png with --webcam")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    args = p.parse_args()
    images = Path(__file__).resolve().parents[1] / "docs" / "images"
    args.out = args.out or images / ("live.png" if args.webcam is not None else "app.png")
    if args.webcam is not None:
        if not args.webcam.is_dir():
            print(f"{args.webcam}: not a folder of frames", file=sys.stderr)
            return 2
        print(f"wrote {webcam_screenshot(args.weights, args.webcam, args.out, alpha=args.alpha)}")
        return 0
    if not args.image.is_file():
        print(f"{args.image}: not found", file=sys.stderr)
        return 2
    print(f"wrote {screenshot(args.weights, args.image, args.out, alpha=args.alpha)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
