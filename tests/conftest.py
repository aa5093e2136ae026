"""Shared fixtures: a tiny synthetic data set and a tiny trained run, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from aticnet.data import generate_synthetic

# The smallest recipe that exercises the whole engine in a couple of seconds.
TINY_TRAIN = [
    "--model", "icnet", "--width", "0.125", "--dataset", "synthetic", "--crop-size", "64",
    "--batch-size", "2", "--workers", "0", "--optimizer", "adamw", "--lr", "0.002",
    "--log-every", "1", "--eval-every", "0", "--eval-max-images", "2",
]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """8 train + 4 val synthetic scenes of 64x128."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, num_train=8, num_val=4, size=(64, 128), seed=0)
    return root
