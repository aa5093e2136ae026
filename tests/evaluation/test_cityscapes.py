"""Scoring saved Cityscapes predictions: agreement with cityscapesScripts, and clear errors."""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aticnet.data.cityscapes_labels import CLASS_NAMES
from aticnet.evaluation.cityscapes import evaluate_cityscapes_predictions
from aticnet.utils.errors import DataError

H, W = 32, 64
IMAGES = {"aachen": ["000000_000019", "000001_000019"], "bochum": ["000000_000313"]}
# Every label id but 31 (train): one scored class absent from ground truth and prediction alike.
IDS = np.array([i for i in range(34) if i != 31], dtype=np.uint8)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> tuple[Path, Path]:
    """data_root with gtFine/val, and a prediction folder laid out unlike it (nested, flat)."""
    root = tmp_path_factory.mktemp("cs")
    data_root, pred_dir = root / "data", root / "results"
    rng = np.random.default_rng(0)
    for n, (city, frames) in enumerate(IMAGES.items()):
        for frame in frames:
            core = f"{city}_{frame}"
            gt = rng.choice(IDS, size=(H, W))
            # Right on about half the pixels; elsewhere any id, scored or not (0..6, 9, 14, 29, ...).
            pred = np.where(rng.random((H, W)) < 0.5, gt, rng.choice(IDS, size=(H, W))).astype(np.uint8)
            write_png(data_root / "gtFine" / "val" / city / f"{core}_gtFine_labelIds.png", gt)
            sub = pred_dir / "deep" / city if n == 0 else pred_dir
            write_png(sub / f"{core}_leftImg8bit.png", pred)
    (pred_dir / "notes.txt").write_text("not a prediction")
    return data_root, pred_dir


def official_scores(data_root: Path, pred_dir: Path) -> dict:
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    args = copy.copy(ev.args)  # the module's defaults, minus instance scores, printing and the JSON file
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.quiet = True
    args.JSONOutput = False
    args.predictionPath = str(pred_dir)
    args.predictionWalk = None
    gts = sorted(str(p) for p in (data_root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    preds = [ev.getPrediction(args, gt) for gt in gts]
    return ev.evaluateImgLists(preds, gts, args)


def test_class_ious_equal_cityscapes_scripts(cityscapes):
    pytest.importorskip("cityscapesscripts")
    data_root, pred_dir = cityscapes
    ours = evaluate_cityscapes_predictions(pred_dir, data_root, "val")
    theirs = official_scores(data_root, pred_dir)["classScores"]
    assert ours["num_images"] == 3
    assert ours["per_class_iou"]["train"] is None
    assert list(ours["per_class_iou"]) == CLASS_NAMES
    for name in CLASS_NAMES:
        mine, official = ours["per_class_iou"][name], theirs[name]
        if math.isnan(official):
            assert mine is None, name
        else:
            assert mine == pytest.approx(official, abs=1e-4), name
    official_mean = np.nanmean([theirs[n] for n in CLASS_NAMES])
    assert ours["miou"] == pytest.approx(official_mean, abs=1e-4)


def test_unscored_predictions_are_misses(tmp_path):
    # One image: road everywhere in truth; predicted half road, half parking (id 9, not scored).
    gt = np.full((4, 4), 7, np.uint8)
    pred = gt.copy()
    pred[:, :2] = 9
    write_png(tmp_path / "gtFine" / "val" / "ulm" / "ulm_000000_000001_gtFine_labelIds.png", gt)
    write_png(tmp_path / "pred" / "ulm_000000_000001.png", pred)
    s = evaluate_cityscapes_predictions(tmp_path / "pred", tmp_path, "val")
    assert s["per_class_iou"]["road"] == pytest.approx(0.5)
    assert s["num_pixels"] == 16
    assert s["miou"] == pytest.approx(0.5)  # no other class is in truth or prediction


@pytest.fixture
def broken(cityscapes, tmp_path) -> tuple[Path, Path]:
    """A private copy of the fixture's predictions to break."""
    data_root, pred_dir = cityscapes
    copy_dir = tmp_path / "results"
    shutil.copytree(pred_dir, copy_dir)
    return data_root, copy_dir


def test_missing_prediction_names_the_ground_truth(broken):
    data_root, pred_dir = broken
    (pred_dir / "bochum_000000_000313_leftImg8bit.png").unlink()
    with pytest.raises(DataError, match="bochum_000000_000313_gtFine_labelIds.png.*no prediction"):
        evaluate_cityscapes_predictions(pred_dir, data_root)


def test_two_matching_predictions_are_an_error(broken):
    data_root, pred_dir = broken
    shutil.copy(pred_dir / "bochum_000000_000313_leftImg8bit.png", pred_dir / "bochum_000000_000313_copy.png")
    with pytest.raises(DataError, match="2 predictions match bochum_000000_000313"):
        evaluate_cityscapes_predictions(pred_dir, data_root)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((H, W + 1), np.uint8), r"size \(32, 65\) differs"),
        (np.zeros((H, W, 3), np.uint8), "3-channel"),
        (np.zeros((H, W), np.uint16), "8-bit"),
        (np.full((H, W), 255, np.uint8), "value 255, which is not a Cityscapes label id"),
    ],
    ids=["size", "rgb", "16-bit", "train-ids"],
)
def test_unusable_prediction_names_the_file(broken, array, message):
    data_root, pred_dir = broken
    bad = pred_dir / "bochum_000000_000313_leftImg8bit.png"
    write_png(bad, array)
    with pytest.raises(DataError, match=message) as info:
        evaluate_cityscapes_predictions(pred_dir, data_root)
    assert info.value.path == bad


def test_missing_ground_truth_folder(cityscapes):
    data_root, pred_dir = cityscapes
    with pytest.raises(DataError, match="gtFine/test") as info:
        evaluate_cityscapes_predictions(pred_dir, data_root, "test")
    assert info.value.path == data_root / "gtFine" / "test"
