"""``aticnet check-data``: every pair validated up front, class frequencies, every bad file listed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from aticnet.cli import main
from tests.helpers import H, W, fails, make_folder_set, save


def check_data_argv(root: Path, *extra: str) -> list[str]:
    return ["check-data", "--dataset", "folder", "--data-root", str(root), *extra]


def test_check_data_reports_frequencies_of_a_good_set(tmp_path, capsys):
    root = make_folder_set(tmp_path / "set", n=2)
    make_folder_set(root, n=1, split="val")
    save(root / "masks/val/s0.png", np.array([[0, 1], [1, 255]], np.uint8).repeat(H // 2, 0).repeat(W // 2, 1))
    report = tmp_path / "report.json"
    assert main(check_data_argv(root, "--json", str(report), "--workers", "0", "--quiet")) == 0
    out = capsys.readouterr().out
    assert "folder train: 2 pairs, 0 bad files; sizes 32x48 (2)" in out and "every pair is readable" in out
    assert "sky (val)" in out  # a class with no pixels is named
    data = json.loads(report.read_text())
    val = data["splits"]["val"]
    assert data["ok"] and val["class_pixels"] == {"road": H * W // 4, "car": H * W // 2, "sky": 0}
    assert val["ignored_pixels"] == H * W // 4
    line = next(l for l in out.splitlines() if l.startswith("car"))
    assert line.split()[-1] == "66.67%"  # of the labelled pixels


def test_check_data_lists_every_bad_file(tmp_path, capsys):
    root = make_folder_set(tmp_path / "set", n=6)
    (root / "images/train/s0.png").write_bytes((root / "images/train/s0.png").read_bytes()[:100])
    save(root / "masks/train/s1.png", np.zeros((H + 1, W), np.uint8))
    save(root / "masks/train/s2.png", np.full((H, W), 9, np.uint8))
    (root / "masks/train/s3.png").unlink()
    save(root / "masks/train/stray.png", np.zeros((H, W), np.uint8))
    report = tmp_path / "report.json"
    assert main(check_data_argv(root, "--split", "train", "--json", str(report), "--workers", "2", "--quiet")) == 2
    captured = capsys.readouterr()
    assert f"aticnet check-data: error: {root}: 5 bad files (listed above)" in captured.err
    expected = {
        "images/train/s0.png": "cannot decode image",
        "masks/train/s1.png": "label is 33x48",
        "masks/train/s2.png": "label values not used by FolderDataset: 9",
        "images/train/s3.png": "no label for this image",
        "masks/train/stray.png": "no image for this label",
    }
    for name, problem in expected.items():
        assert any(str(root / name) in l and problem in l for l in captured.err.splitlines()), (name, captured.err)
    assert "folder train: 5 pairs, 5 bad files; sizes 32x48 (2)" in captured.out  # s4 and s5 are good
    data = json.loads(report.read_text())
    assert not data["ok"] and len(data["splits"]["train"]["bad"]) == 5


def test_check_data_missing_split_and_unknown_dataset(tmp_path, capsys):
    root = make_folder_set(tmp_path / "set")
    err = fails(
        capsys, ["check-data", "--dataset", "folder", "--data-root", str(root), "--workers", "0"], "1 bad file ("
    )
    assert f"{root}/images/val: image folder of split 'val' not found" in err
    fails(capsys, ["check-data", "--dataset", "voc", "--data-root", str(root)], "unknown data set 'voc'")
