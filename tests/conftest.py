"""Shared fixtures: a tiny synthetic data set and a tiny trained run, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aticnet.data import generate_synthetic


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a GPU, ``cuda2`` two: without them they are skipped, saying so."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for item in items:
        if "cuda" in item.keywords and count < 1:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        elif "cuda2" in item.keywords and count < 2:
            item.add_marker(pytest.mark.skip(reason=f"needs two CUDA GPUs ({count} here)"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread; on a busy machine waiting OpenMP threads cost a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """8 train + 4 val synthetic scenes of 64x128."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, num_train=8, num_val=4, size=(64, 128), seed=0)
    return root
