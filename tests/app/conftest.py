"""What the app's tests share: two tiny trained-looking runs, their segmenters, a served page, Chromium."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from aticnet.app import launch_app, load_segmenters
from aticnet.data.cityscapes_labels import CLASS_COLORS, CLASS_NAMES
from aticnet.models import build_model
from aticnet.models.weights import save_weights

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two tiny 19-class models (ICNet and AtICNet, width 0.125), each in a run directory."""
    root = tmp_path_factory.mktemp("apprun")
    out = []
    for name in ("icnet", "aticnet"):
        torch.manual_seed(1)
        save_weights(build_model(name, num_classes=19, width=0.125), root / name / "model.safetensors",
                     {"classes": list(CLASS_NAMES), "colors": [list(c) for c in CLASS_COLORS], "dataset": "synthetic"})
        out.append(root / name)
    return out


@pytest.fixture(scope="module")
def segs(runs):
    return load_segmenters(runs)


def palette_image(seg, labels) -> np.ndarray:
    return seg.colorize(labels)


# ----------------------------------------------------------------------------- the page in a browser
def browser_requirements():
    """Import gradio and playwright, or skip saying which is missing."""
    gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install 'aticnet[app]')")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return gr, sync_api


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(segs, tmp_path, monkeypatch):
    """The app on 127.0.0.1 in this process (opacity starts at 1.0); yields its URL."""
    browser_requirements()

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    blocks, url = launch_app(segs, port=free_port(), alpha=1.0, block=False)
    assert url.startswith("http://127.0.0.1:")
    yield url
    blocks.close()
