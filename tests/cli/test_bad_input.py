"""Bad input meets the user as one line naming the file and the problem, and exit code 2.

Everything goes through ``aticnet.cli.main`` as a user would type it. Data sets are written
here with PIL into tmp_path (3 classes, 32x48 images).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from aticnet import build_model
from aticnet.cli import main
from aticnet.models.weights import save_weights
from tests.helpers import TINY_TRAIN, H, W, fails, make_folder_set, save

pytestmark = [
    pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),  # conftest
]

def evaluate_argv(weights: Path, root: Path, workers: str = "0") -> list[str]:
    return ["evaluate", "--weights", str(weights), "--dataset", "folder", "--data-root", str(root), "--split", "train",
            "--workers", workers]


def train_argv(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        *TINY_TRAIN,
        "--dataset",
        "folder",
        "--data-root",
        str(root),
        "--out",
        str(out),
        "--max-steps",
        "1",
        "--save-every",
        "0",
        "--val-split",
        "",
        *extra,
    ]




@pytest.fixture
def weights19(tmp_path) -> Path:
    path = tmp_path / "w19" / "model.safetensors"
    save_weights(build_model("icnet", num_classes=19, width=0.125), path, {"classes": [f"c{i}" for i in range(19)]})
    return path


def test_missing_root_split_and_empty_set(tmp_path, capsys):
    fails(capsys, train_argv(tmp_path / "nowhere", tmp_path / "r"), "nowhere", "data root not found")
    fails(
        capsys,
        [
            "train",
            *TINY_TRAIN,
            "--dataset",
            "camvid",
            "--data-root",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "r"),
        ],
        "nowhere",
        "data root not found",
    )
    root = make_folder_set(tmp_path / "set")
    fails(capsys, train_argv(root, tmp_path / "r", "--train-split", "trian"), "images/trian", "split 'trian' not found")
    (root / "images" / "empty").mkdir()
    (root / "masks" / "empty").mkdir()
    fails(capsys, train_argv(root, tmp_path / "r", "--train-split", "empty"), "split 'empty' has no images")


def test_image_without_label_and_label_without_image(tmp_path, capsys):
    root = make_folder_set(tmp_path / "set")
    (root / "masks/train/s1.png").unlink()
    fails(capsys, train_argv(root, tmp_path / "r"), "images/train/s1.png", "no label for this image")
    make_folder_set(root)
    (root / "images/train/s0.png").unlink()
    fails(capsys, train_argv(root, tmp_path / "r"), "masks/train/s0.png", "no image for this label")


@pytest.mark.parametrize(
    "fault,phrase",
    [
        ("truncated", "cannot decode image"),
        ("not_an_image", "cannot decode image"),
        ("label_size", "label is 16x48 but its image s1.png is 32x48"),
        ("label_values", "label values not used by FolderDataset: 3, 7 (neither a class nor ignore)"),
        ("label_rgb", "label is a 3-channel image"),
    ],
)
def test_bad_pair_fails_evaluate_and_strict_training(tmp_path, capsys, weights19, fault, phrase):
    root = make_folder_set(tmp_path / "set", n=3)
    image, label = root / "images/train/s1.png", root / "masks/train/s1.png"
    bad = image if fault in ("truncated", "not_an_image") else label
    if fault == "truncated":
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    elif fault == "not_an_image":
        image.write_text("a text file named .png")
    elif fault == "label_size":
        save(label, np.zeros((16, W), np.uint8))
    elif fault == "label_values":
        save(label, np.array([[0, 3], [7, 255]], np.uint8).repeat(H // 2, 0).repeat(W // 2, 1))
    else:
        save(label, np.zeros((H, W, 3), np.uint8))
    # evaluate is strict; with worker processes the error still comes back as one line
    (tmp_path / "w3").mkdir()
    save_weights(build_model("icnet", num_classes=3, width=0.125), tmp_path / "w3/model.safetensors", {})
    fails(
        capsys,
        evaluate_argv(tmp_path / "w3", root, workers="2"),
        str(bad),
        phrase,
    )
    fails(capsys, train_argv(root, tmp_path / "r", "--strict", "--max-steps", "3"), str(bad), phrase)


def test_a_training_set_with_no_readable_sample_stops(tmp_path, capsys):
    root = make_folder_set(tmp_path / "set")
    for image in (root / "images/train").iterdir():
        image.write_bytes(b"")
    fails(
        capsys,
        train_argv(root, tmp_path / "r", "--max-steps", "100"),
        str(root),
        "2 batches in a row had no readable sample",
    )


def test_an_output_directory_that_cannot_be_made(tmp_path, capsys):
    root = make_folder_set(tmp_path / "set")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    fails(capsys, train_argv(root, blocker / "run"), str(blocker / "run"), "Not a directory")


def test_unknown_model_and_dataset_names(tmp_path, capsys, weights19):
    root = make_folder_set(tmp_path / "set")
    fails(capsys, train_argv(root, tmp_path / "r", "--model", "resnet"), "unknown model 'resnet'", "icnet, aticnet")
    fails(capsys, train_argv(root, tmp_path / "r", "--dataset", "kitti"), "unknown data set 'kitti'", "camvid, folder")
    fails(
        capsys,
        ["evaluate", "--weights", str(weights19), "--dataset", "kitti", "--data-root", str(root)],
        "unknown data set 'kitti'",
    )
    # Names with argparse choices: argparse's own usage message, also exit code 2.
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--model", "resnet"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'resnet'" in capsys.readouterr().err


def test_config_with_unknown_or_mistyped_field(tmp_path, capsys):
    root = make_folder_set(tmp_path / "set")
    config = tmp_path / "recipe.yaml"
    cases = {
        "crop_sise: 64\n": "unknown field 'crop_sise'",
        "crop_size: big\n": "crop_size must be int or tuple, not 'big'",
        "lr: [1, 2]\n": "lr must be float",
        "strict: maybe\n": "strict must be bool",
        "class_weights: inverse\n": "class_weights must be one of none, inverse_log, not 'inverse'",
        "model_options: {colour: red}\n": "model_options: unknown field 'colour'",
        "model_options: {rates: 3}\n": "model_options.rates must be tuple, not 3",
        "model_options: {dropout: high}\n": "model_options.dropout must be float, not 'high'",
        "- a list\n": "a config is a mapping",
        "crop_size: [unclosed\n": "not valid YAML",
    }
    for text, phrase in cases.items():
        config.write_text(text)
        fails(capsys, [*train_argv(root, tmp_path / "r"), "--config", str(config)], phrase)
    fails(capsys, [*train_argv(root, tmp_path / "r"), "--config", str(tmp_path / "none.yaml")], "config file not found")


def test_weights_for_another_model_or_class_count(tmp_path, capsys, weights19):
    root = make_folder_set(tmp_path / "set")
    fails(
        capsys,
        evaluate_argv(weights19, root),
        "the model predicts 19 classes, folder has 3",
    )
    wider = tmp_path / "icnet_wider.safetensors"
    save_weights(build_model("icnet", num_classes=3, width=0.25), wider, {})
    fails(capsys, train_argv(root, tmp_path / "r", "--init", str(wider)), str(wider), "no tensor of these weights fits icnet")
    # a training checkpoint of another model: --resume refuses it the same way
    assert main(train_argv(root, tmp_path / "run3")) == 0
    checkpoint = next((tmp_path / "run3" / "checkpoints").glob("step_*.pt"))
    fails(
        capsys,
        train_argv(root, tmp_path / "other", "--model", "aticnet", "--resume", str(checkpoint)),
        str(checkpoint),
        "weights do not fit aticnet",
    )


def test_weights_that_are_not_weights(tmp_path, capsys):
    root = make_folder_set(tmp_path / "set")
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"\x00\x01 this is no safetensors file")
    fails(capsys, train_argv(root, tmp_path / "r", "--init", str(fake)), str(fake), "not a safetensors weights file")
    fails(
        capsys,
        ["evaluate", "--weights", str(fake), "--dataset", "folder", "--data-root", str(root)],
        str(fake),
        "not a safetensors weights file",
    )
    fails(
        capsys,
        ["predict", str(root / "images/train/s0.png"), "--weights", str(fake), "--out", str(tmp_path / "p")],
        str(fake),
        "not a safetensors weights file",
    )
    fails(
        capsys,
        ["evaluate", "--weights", str(tmp_path / "missing"), "--dataset", "folder", "--data-root", str(root)],
        "missing",
        "weights not found",
    )


def test_video_that_cannot_be_decoded(tmp_path, capsys, weights19):
    pytest.importorskip("av")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    fails(
        capsys,
        ["predict", str(video), "--weights", str(weights19), "--out", str(tmp_path / "o"), "--quiet"],
        str(video),
        "not a readable video",
    )


def test_grayscale_and_rgba_images_are_converted(tmp_path, capsys):
    root = make_folder_set(tmp_path / "set")
    rng = np.random.default_rng(1)
    save(root / "images/train/s0.png", rng.integers(0, 256, (H, W), dtype=np.uint8), "L")
    save(root / "images/train/s1.png", rng.integers(0, 256, (H, W, 4), dtype=np.uint8), "RGBA")
    check = ["check-data", "--dataset", "folder", "--data-root", str(root), "--split", "train", "--workers", "0"]
    assert main(check) == 0
    assert main(train_argv(root, tmp_path / "r", "--max-steps", "2")) == 0
    rows = [json.loads(l) for l in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows if r["kind"] == "train"] == [0, 0]


# --- property: any image and label either train a step or give the clear error ------------------
# (with --strict; without it they train a step in any case, the bad pair skipped and counted)

IMAGE_MODES = ["L", "LA", "RGB", "RGBA", "P", "I;16"]
LABEL_MODES = ["L", "P", "RGB", "I;16"]  # only 8-bit single-channel labels (L, or palette indices) are valid


def write_any(path: Path, mode: str, size: tuple[int, int], values: np.ndarray) -> None:
    h, w = size
    flat = np.resize(values, h * w).reshape(h, w)
    if mode == "I;16":
        image = Image.fromarray(flat.astype(np.uint16) * 257)
    elif mode == "P":  # palette indices = the values, under a grey palette
        image = Image.fromarray(flat.astype(np.uint8), "P")
        image.putpalette([v for i in range(256) for v in (i, i, i)])
    else:
        channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
        array = np.stack([flat.astype(np.uint8)] * channels, -1) if channels > 1 else flat.astype(np.uint8)
        image = Image.fromarray(array, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    image_size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    label_size=st.none() | st.tuples(st.integers(1, 40), st.integers(1, 40)),  # None: the image's size
    image_mode=st.sampled_from(IMAGE_MODES),
    label_mode=st.sampled_from(LABEL_MODES),
    pixels=st.lists(st.integers(0, 255), min_size=1, max_size=16),
    labels=st.lists(st.sampled_from([0, 1, 2, 255]), min_size=1, max_size=16)  # valid values
    | st.lists(st.integers(0, 255), min_size=1, max_size=16),  # mostly not
    truncate=st.sampled_from([False, False, True]),
)
@example((7, 5), None, "I;16", "L", [0, 255, 9], [0, 1, 2, 255], False)  # 16-bit grey: converted
@example((1, 1), None, "LA", "P", [3], [2], False)  # grey + alpha, palette-index label
@example((9, 30), None, "RGBA", "L", [1, 2, 3, 4], [255], False)  # an all-ignored label trains too
@example((9, 30), (30, 9), "RGB", "L", [1], [1], False)  # transposed label
@example((9, 30), None, "RGB", "L", [1], [1], True)  # truncated image
def test_any_image_and_label_train_a_step_or_fail_clearly(
    capsys, image_size, label_size, image_mode, label_mode, pixels, labels, truncate
):
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder_set(Path(tmp) / "set", n=1)
        image, label = root / "images/train/x.png", root / "masks/train/x.png"
        write_any(image, image_mode, image_size, np.array(pixels))
        size = label_size or image_size
        write_any(label, label_mode, size, np.array(labels))
        if truncate:
            image.write_bytes(image.read_bytes()[:-20])
        h, w = size
        written = np.resize(np.array(labels), h * w)
        valid = (
            not truncate and label_mode in ("L", "P") and size == image_size and set(written.tolist()) <= {0, 1, 2, 255}
        )
        event("valid pair" if valid else "invalid pair")
        capsys.readouterr()
        code = main(train_argv(root, Path(tmp) / "run", "--strict"))
        err = capsys.readouterr().err
        if valid:
            assert code == 0, err[-2000:]
        else:
            assert code == 2, err[-2000:]
            line = next(l for l in err.splitlines() if ": error: " in l)
            assert str(image if truncate else label) in line and "Traceback" not in err
        # Without --strict the pair is skipped (the step trains on the other one) and counted.
        assert main(train_argv(root, Path(tmp) / "lenient")) == 0
        row = json.loads((Path(tmp) / "lenient/metrics.jsonl").read_text().splitlines()[0])
        assert row["skipped"] == (0 if valid else 1)
