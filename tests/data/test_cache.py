"""Decoded frames (``--cache memory`` / ``device``): the same pairs as decoding, reused while the files are
unchanged, refused when they do not fit, and on the device the same batches as the loader's deferred draws."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from aticnet.data import FolderDataset, TrainTransform, build_dataset
from aticnet.data.cache import DeviceBatches, DeviceFrames, dataset_key, decoded_bytes, open_frames
from aticnet.data.loader import StreamSampler, batch_to_device, train_loader
from aticnet.utils.errors import DataError, UserError
from tests.helpers import H, W, make_folder_set, save

MEAN, STD = (0.2, 0.4, 0.6), (0.5, 0.25, 0.3)


@pytest.fixture
def folder_set(tmp_path):
    """5 pairs of 32x48 (s0..s4), s2's image unreadable, s4's frame 40x56: frames of two sizes."""
    root = make_folder_set(tmp_path / "set", n=5)
    (root / "images/train/s2.png").write_bytes(b"not a png")
    rng = np.random.default_rng(7)
    save(root / "images/train/s4.png", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    save(root / "masks/train/s4.png", rng.choice(np.array([0, 1, 2, 255], np.uint8), (40, 56)))
    return root


def test_cached_pairs_equal_the_decoded_ones_and_errors_repeat(folder_set, tmp_path):
    dataset = FolderDataset(folder_set, "train")
    frames = open_frames(dataset, "memory", folder=tmp_path / "cache", workers=0)
    assert len(frames) == 5 and frames.nbytes == 4 * (3 * H * W + 40 * 56)  # the unreadable pair takes no room
    assert decoded_bytes(dataset) == frames.nbytes  # the estimate from the headers said so before decoding
    for i in (0, 1, 3, 4):
        want_image, want_label = dataset.read(i)
        image, label = frames.read(i)
        assert torch.equal(image, want_image) and torch.equal(label, want_label)
    with pytest.raises(DataError) as decoded_error:
        dataset.read(2)
    with pytest.raises(DataError) as cached_error:
        frames.read(2)
    assert str(cached_error.value) == str(decoded_error.value)
    # a loader process gets the path and index, and maps the file itself
    copy = pickle.loads(pickle.dumps(frames))
    assert copy._pixels is None and torch.equal(copy.read(4)[1], dataset.read(4)[1])


def test_the_file_is_reused_until_a_sample_changes(folder_set, tmp_path, monkeypatch):
    dataset = FolderDataset(folder_set, "train")
    first = open_frames(dataset, "memory", folder=tmp_path / "cache", workers=0)
    monkeypatch.setattr(FolderDataset, "read", lambda self, i: pytest.fail("decoded again"))
    again = open_frames(FolderDataset(folder_set, "train"), "memory", folder=tmp_path / "cache", workers=0)
    assert again.path == first.path and torch.equal(again.read(0)[0], first.read(0)[0])
    monkeypatch.undo()

    label = folder_set / "masks/train/s1.png"
    before = dataset_key(dataset)
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    changed = FolderDataset(folder_set, "train")
    assert dataset_key(changed) != before
    rebuilt = open_frames(changed, "memory", folder=tmp_path / "cache", workers=0)
    assert rebuilt.path != first.path
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")) == [
        ".frames", ".frames", ".json", ".json"]


def test_frames_that_do_not_fit_are_refused_before_decoding(folder_set, tmp_path, monkeypatch):
    import aticnet.data.cache as cache

    dataset = FolderDataset(folder_set, "train")
    monkeypatch.setattr(cache, "host_memory_available", lambda: 1000)
    monkeypatch.setattr(FolderDataset, "read", lambda self, i: pytest.fail("decoded"))
    with pytest.raises(UserError, match=r"--cache memory needs 27 KiB of memory .* the host has 1 KiB available"):
        open_frames(dataset, "memory", folder=tmp_path / "cache", workers=0)
    with pytest.raises(UserError, match="--cache device needs"):
        open_frames(dataset, "device", device="cpu", folder=tmp_path / "cache", workers=0)
    assert not list((tmp_path / "cache").glob("*.frames"))


def test_dataset_reads_from_its_decoded_frames(folder_set, tmp_path, monkeypatch):
    dataset = FolderDataset(folder_set, "train")
    want = dataset.read(4)
    dataset.decoded = open_frames(dataset, "memory", folder=tmp_path / "cache", workers=2)  # decoded by 2 processes
    monkeypatch.setattr("aticnet.data.base.read_image", lambda path: pytest.fail("decoded"))
    assert all(torch.equal(a, b) for a, b in zip(dataset.read(4), want))


def test_device_batches_equal_the_loaders_deferred_draws(synthetic_root, tmp_path):
    """The same positions, seeds and draws as the loader's processes, so the same crops once augmented."""
    dataset = build_dataset("synthetic", synthetic_root, "train")
    dataset.transform = TrainTransform(48, scale_range=(0.5, 2.0), color_jitter=(0.3, 0.3, 0.3, 0.05), mean=MEAN,
                                       std=STD, defer=True)
    frames = DeviceFrames(open_frames(dataset, "device", folder=tmp_path / "cache", workers=0), "cpu")
    assert isinstance(frames.images, torch.Tensor) and frames.images.shape == (8, 3, 64, 128)  # one size: stacked
    normalize = (torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1))
    for rank in (0, 1):  # two processes' shares of a global batch of 6, from step 2 on
        sampler = StreamSampler(len(dataset), 6, seed=5, rank=rank, world_size=2, start_step=2)
        on_device = iter(DeviceBatches(frames, dataset.transform, sampler))
        loader = iter(train_loader(dataset, 6, seed=5, rank=rank, world_size=2, start_step=2, workers=0))
        for _ in range(3):
            *batch, errors = next(on_device)
            *loaded, loaded_errors = next(loader)
            assert errors == loaded_errors == [] and torch.equal(batch[2], loaded[2])
            got = batch_to_device(tuple(batch), torch.device("cpu"), normalize, (48, 48))
            want = batch_to_device(tuple(loaded), torch.device("cpu"), normalize, (48, 48))
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_device_frames_of_several_sizes_and_unreadable_ones(folder_set, tmp_path):
    dataset = FolderDataset(folder_set, "train")
    dataset.transform = TrainTransform(24, mean=MEAN, std=STD, defer=True)
    frames = DeviceFrames(open_frames(dataset, "device", folder=tmp_path / "cache", workers=0), "cpu")
    assert isinstance(frames.images, list) and sorted(frames.errors) == [2]
    assert torch.equal(frames.frame(4)[0], dataset.read(4)[0])
    sampler = StreamSampler(len(dataset), 5, seed=0)
    images, labels, draws, errors = next(iter(DeviceBatches(frames, dataset.transform, sampler)))
    assert len(images) == 4 == draws.shape[0] and [str(e) for e in errors] == [str(frames.errors[2])]
    assert {tuple(i.shape) for i in images} == {(3, H, W), (3, 40, 56)}
    crops, crop_labels = batch_to_device((images, labels, draws), torch.device("cpu"),
                                         (torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)), (24, 24))
    assert crops.shape == (4, 3, 24, 24) and crop_labels.shape == (4, 24, 24)
