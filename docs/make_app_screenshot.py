"""Write docs/images/app.png: the web app (``aticnet app``) after an upload, as a person sees it.

    python docs/make_app_screenshot.py --image street.png      # the shipped ICNet and AtICNet side by side
    python docs/make_app_screenshot.py --weights runs/a runs/b --image street.png --out docs/images/app.png

Starts the app on 127.0.0.1, opens it in headless Debian Chromium (/usr/bin/chromium, through
Playwright), uploads the image, waits for the overlays and saves a screenshot of the page. Needs
gradio and playwright (pip) and chromium (apt); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", default=["aticnet-camvid"])
    p.add_argument("--image", type=Path, required=True, help="a street picture to upload")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images" / "app.png")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    args = p.parse_args()
    if not args.image.is_file():
        print(f"{args.image}: not found", file=sys.stderr)
        return 2
    print(f"wrote {screenshot(args.weights, args.image, args.out, alpha=args.alpha)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
