"""Helpers the tests share: the tiny training recipe, small data sets written with PIL, the bad-input check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from aticnet.cli import main

ROOT = Path(__file__).resolve().parents[1]  # the repository

# The smallest recipe that exercises the whole engine in a couple of seconds.
TINY_TRAIN = [
    "--model", "icnet", "--width", "0.125", "--dataset", "synthetic", "--crop-size", "64",
    "--batch-size", "2", "--workers", "0", "--optimizer", "adamw", "--lr", "0.002",
    "--log-every", "1", "--eval-every", "0", "--eval-max-images", "2",
    "--device", "cpu",  # the CPU's bit-exact values, also on a machine with a GPU
]


H, W = 32, 48


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def make_folder_set(root: Path, n: int = 2, split: str = "train") -> Path:
    """``root`` in FolderDataset's layout: 3 classes, ``n`` good 32x48 pairs named s0, s1, ..."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("road 128 64 128\ncar 0 0 142\nsky 70 130 180\n")
    rng = np.random.default_rng(n)
    for i in range(n):
        save(root / "images" / split / f"s{i}.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        save(root / "masks" / split / f"s{i}.png", rng.choice(np.array([0, 1, 2, 255], np.uint8), (H, W)))
    return root


def fails(capsys, argv: list[str], *phrases: str) -> str:
    """Run the command: exit code 2, an 'aticnet CMD: error: ...' line holding every phrase, no traceback.

    Returns all of stderr."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = next(l for l in err.splitlines() if ": error: " in l)
    for phrase in phrases:
        assert phrase in line, (phrase, err[-2000:])
    assert "Traceback" not in err
    return err
