"""The data package: label mapping, strict listing and decoding, transforms, synthetic scenes.

Every fixture is written here with PIL (not the code under test) into tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from aticnet.data import (
    DATASETS,
    CamVid,
    Cityscapes,
    EvalTransform,
    FolderDataset,
    SyntheticDataset,
    TrainTransform,
    build_dataset,
    cityscapes_labels,
    generate_synthetic,
)
from aticnet.data.scenes import draw_scene
from aticnet.data.transforms import RandomScale
from aticnet.utils.errors import DataError, UserError

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; the spec uses them on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode).save(path)
    return path


def rgb(h: int, w: int, value: int = 100) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


# --- Cityscapes -------------------------------------------------------------------------------


def test_label_table_equals_cityscapesscripts():
    official = pytest.importorskip("cityscapesscripts.helpers.labels").labels
    ours = [(lb.name, lb.id, lb.train_id, lb.color, lb.ignore_in_eval) for lb in cityscapes_labels.LABELS]
    theirs = [(lb.name, lb.id, lb.trainId, tuple(lb.color), lb.ignoreInEval) for lb in official]
    assert ours == theirs


def make_cityscapes(root: Path, label_ids: np.ndarray, city="aachen", stem="aachen_000000_000019") -> Path:
    h, w = label_ids.shape
    save(root / "leftImg8bit/val" / city / f"{stem}_leftImg8bit.png", rgb(h, w))
    label = save(root / "gtFine/val" / city / f"{stem}_gtFine_labelIds.png", label_ids)
    save(root / "gtFine/val" / city / f"{stem}_gtFine_color.png", rgb(h, w))  # other gtFine files are ignored
    (root / "gtFine/val" / city / f"{stem}_gtFine_polygons.json").write_text("{}")
    return label


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    # unlabeled, road, sidewalk, building, parking, sky / person, car, caravan, train, bicycle, license-plate-free
    ids = np.array([[0, 7, 8, 11, 9, 23], [24, 26, 29, 31, 33, 17]])
    expected = torch.tensor([[255, 0, 1, 2, 255, 10], [11, 13, 255, 16, 18, 5]], dtype=torch.uint8)
    make_cityscapes(tmp_path, ids)
    ds = Cityscapes(tmp_path, "val")
    image, label = ds.read(0)
    assert image.shape == (3, 2, 6) and image.dtype == torch.uint8
    assert torch.equal(label, expected)
    assert ds.num_classes == 19 and ds.classes[0] == "road" and ds.colors[18] == (119, 11, 32)
    assert ds.relative_name(0) == "aachen/aachen_000000_000019_leftImg8bit"


def test_cityscapes_prefers_label_train_ids(tmp_path):
    make_cityscapes(tmp_path, np.full((2, 3), 7))
    train_ids = np.array([[3, 4, 5], [18, 255, 0]])
    save(tmp_path / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelTrainIds.png", train_ids)
    _, label = Cityscapes(tmp_path, "val").read(0)
    assert label.tolist() == train_ids.tolist()


def test_cityscapes_rejects_unknown_label_ids_and_missing_labels(tmp_path):
    label = make_cityscapes(tmp_path, np.array([[7, 40]]))
    with pytest.raises(DataError, match="40") as err:
        Cityscapes(tmp_path, "val").read(0)
    assert err.value.path == label
    save(tmp_path / "leftImg8bit/val/bonn/bonn_000001_000002_leftImg8bit.png", rgb(1, 2))
    with pytest.raises(DataError, match="no label") as err:
        Cityscapes(tmp_path, "val")
    assert err.value.path.name == "bonn_000001_000002_leftImg8bit.png"
    with pytest.raises(DataError, match="not found"):
        Cityscapes(tmp_path, "train")


# --- CamVid -----------------------------------------------------------------------------------


def test_camvid_void_is_ignored_and_unknown_values_fail(tmp_path):
    save(tmp_path / "train/0001TP_006690.png", rgb(2, 6))
    save(tmp_path / "trainannot/0001TP_006690.png", np.array([[0, 3, 10, 11, 11, 5], [1, 2, 4, 6, 8, 9]]))
    ds = CamVid(tmp_path, "train")
    assert ds.classes[:4] == ["Sky", "Building", "Pole", "Road"] and ds.num_classes == 11
    assert ds.colors[4] == (60, 40, 222)
    assert ds.read(0)[1].tolist() == [[0, 3, 10, 255, 255, 5], [1, 2, 4, 6, 8, 9]]
    bad = save(tmp_path / "trainannot/0001TP_006690.png", np.array([[0, 40, 1, 1, 1, 1], [1] * 6]))
    with pytest.raises(DataError, match="40") as err:
        ds.read(0)
    assert err.value.path == bad and str(bad) in str(err.value)


def test_camvid_label_without_image(tmp_path):
    save(tmp_path / "val/a.png", rgb(2, 2))
    save(tmp_path / "valannot/a.png", np.zeros((2, 2)))
    save(tmp_path / "valannot/b.png", np.zeros((2, 2)))
    with pytest.raises(DataError, match="no image") as err:
        CamVid(tmp_path, "val")
    assert err.value.path.name == "b.png"


# --- Folder -----------------------------------------------------------------------------------


def make_folder(root: Path, classes: str = "txt") -> None:
    if classes == "txt":
        (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / "classes.txt").write_text("# name r g b\nbackground 0 0 0\n\ntraffic  sign 220 220 0\nlane 1 2 3\n")
    else:
        root.mkdir(parents=True, exist_ok=True)
        entries = [{"name": "background", "color": [0, 0, 0]}, {"name": "traffic  sign", "color": [220, 220, 0]},
                   {"name": "lane", "color": [1, 2, 3]}]  # fmt: skip
        (root / "classes.json").write_text(json.dumps(entries))
    save(root / "images/train/seq1/a.png", rgb(2, 3))
    save(root / "masks/train/seq1/a.png", np.array([[0, 1, 2], [255, 2, 0]]))
    save(root / "images/train/b.jpg", rgb(2, 3))
    save(root / "masks/train/b.png", np.zeros((2, 3)))


@pytest.mark.parametrize("classes", ["txt", "json"])
def test_folder_classes_files_and_nested_names(tmp_path, classes):
    make_folder(tmp_path, classes)
    ds = FolderDataset(tmp_path, "train")
    assert ds.classes == ["background", "traffic  sign", "lane"]
    assert ds.colors == [(0, 0, 0), (220, 220, 0), (1, 2, 3)]
    assert len(ds) == 2 and [ds.relative_name(i) for i in range(2)] == ["b", "seq1/a"]
    assert ds[1][1].tolist() == [[0, 1, 2], [255, 2, 0]]


def test_folder_dataset_errors(tmp_path):
    make_folder(tmp_path)
    save(tmp_path / "images/train/c.png", rgb(2, 3))
    with pytest.raises(DataError, match="no label") as err:
        FolderDataset(tmp_path, "train")
    assert err.value.path.name == "c.png"
    save(tmp_path / "masks/train/c.png", np.zeros((3, 3)))
    ds = FolderDataset(tmp_path, "train")
    with pytest.raises(DataError, match="3x3 but its image c.png is 2x3"):
        ds.read(1)
    save(tmp_path / "masks/train/c.png", rgb(2, 3))
    with pytest.raises(DataError, match="3-channel"):
        ds.read(1)
    save(tmp_path / "masks/train/c.png", np.full((2, 3), 3))  # only 3 classes: 0..2
    with pytest.raises(DataError, match="values .*: 3"):
        ds.read(1)
    (tmp_path / "masks/train/c.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode"):
        ds.read(1)
    with pytest.raises(DataError, match="not found"):
        FolderDataset(tmp_path, "val")
    (tmp_path / "images/empty").mkdir()
    (tmp_path / "masks/empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        FolderDataset(tmp_path, "empty")
    with pytest.raises(DataError, match="not found"):
        FolderDataset(tmp_path / "missing", "train")
    (tmp_path / "classes.txt").write_text("road 1 2\n")
    with pytest.raises(DataError, match="line 1"):
        FolderDataset(tmp_path, "train")


def test_folder_converts_grayscale_and_rgba_images(tmp_path):
    (tmp_path / "classes.txt").write_text("a 1 1 1\n")
    save(tmp_path / "images/train/gray.png", np.array([[10, 20]]), "L")
    save(tmp_path / "images/train/rgba.png", np.array([[[1, 2, 3, 0], [4, 5, 6, 255]]]), "RGBA")
    for name in ("gray", "rgba"):
        save(tmp_path / f"masks/train/{name}.png", np.zeros((1, 2)))
    ds = FolderDataset(tmp_path, "train")
    gray, rgba = ds.read(0)[0], ds.read(1)[0]
    assert gray.shape == rgba.shape == (3, 1, 2)
    assert gray[:, 0, 1].tolist() == [20, 20, 20] and rgba[:, 0, 1].tolist() == [4, 5, 6]


def test_build_dataset(tmp_path):
    make_folder(tmp_path)
    ds = build_dataset("folder", tmp_path, "train", transform=EvalTransform(mean=(0, 0, 0), std=(1, 1, 1)))
    assert isinstance(ds, FolderDataset) and ds[0][1].dtype == torch.int64
    with pytest.raises(UserError, match="cityscapes, camvid, folder, synthetic"):
        build_dataset("kitti", tmp_path, "train")
    assert set(DATASETS) == {"cityscapes", "camvid", "folder", "synthetic"}


# --- transforms -------------------------------------------------------------------------------

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def test_random_scale_is_nearest_for_labels():
    g = torch.Generator().manual_seed(0)
    label = torch.tensor([0, 3, 7, 200], dtype=torch.uint8)[torch.randint(0, 4, (37, 53), generator=g)]
    image = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8, generator=g)
    for seed in range(5):
        torch.manual_seed(seed)
        out_image, out_label = RandomScale((0.3, 2.5))(tv_tensors.Image(image), tv_tensors.Mask(label))
        assert out_image.shape[-2:] == out_label.shape and out_label.dtype == torch.uint8
        assert set(out_label.unique().tolist()) <= {0, 3, 7, 200}


def test_train_transform_pads_with_zero_and_ignore():
    image, label = torch.full((3, 4, 5), 255, dtype=torch.uint8), torch.full((4, 5), 2, dtype=torch.uint8)
    torch.manual_seed(0)
    out_image, out_label = TrainTransform((9, 11), scale_range=(1.0, 1.0), mean=MEAN, std=STD)(image, label)
    assert out_image.shape == (3, 9, 11) and out_image.dtype == torch.float32
    assert out_label.shape == (9, 11) and out_label.dtype == torch.int64
    inside = out_label == 2
    assert inside.sum() == 20 and (out_label[~inside] == 255).all()
    assert (out_image[:, inside] == 1.0).all() and (out_image[:, ~inside] == 0.0).all()


def test_train_transform_is_seeded_by_torch():
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    label = torch.randint(0, 19, (40, 60), dtype=torch.uint8)
    transform = TrainTransform(32, mean=MEAN, std=STD)
    outputs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        outputs.append(transform(image, label))
    assert all(o[0].shape == (3, 32, 32) and o[1].shape == (32, 32) for o in outputs)
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert not torch.equal(outputs[0][0], outputs[2][0])


def test_flip_moves_image_and_label_together():
    label = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.uint8)
    image = (label * 40).expand(3, 2, 3).contiguous()
    transform = TrainTransform((2, 3), scale_range=(1.0, 1.0), mean=(0, 0, 0), std=(1, 1, 1))
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out_label = transform(image, label)
        flipped = out_label[0].tolist() == [3, 2, 1]
        assert out_label.tolist() == ([[3, 2, 1], [6, 5, 4]] if flipped else label.tolist())
        assert torch.allclose(out_image[1] * 255, out_label.float() * 40)
        seen.add(flipped)
    assert seen == {True, False}


def test_eval_transform_normalises_only():
    image, label = torch.tensor([[[0, 255]]] * 3, dtype=torch.uint8), torch.tensor([[1, 255]], dtype=torch.uint8)
    out_image, out_label = EvalTransform(mean=(0.5, 0.5, 0.0), std=(0.5, 0.5, 1.0))(image, label)
    assert out_image[:, 0].tolist() == [[-1.0, 1.0], [-1.0, 1.0], [0.0, 1.0]]
    assert out_label.tolist() == [[1, 255]] and out_label.dtype == torch.int64


# --- synthetic --------------------------------------------------------------------------------


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_is_deterministic_and_complete(tmp_path):
    params = dict(num_train=3, num_val=2, size=(64, 96))
    a = tree_bytes(generate_synthetic(tmp_path / "a", seed=5, **params))
    b = tree_bytes(generate_synthetic(tmp_path / "b", seed=5, **params))
    c = tree_bytes(generate_synthetic(tmp_path / "c", seed=6, **params))
    assert a == b
    splits = [("train", i) for i in range(3)] + [("val", i) for i in range(2)]
    names = [f"{kind}/{split}/scene_{i:05d}.png" for kind in ("images", "masks") for split, i in splits]
    assert set(a) == set(names) | {"classes.txt", "synthetic.json"}
    assert all(a[n] != c[n] for n in names)
    ds = FolderDataset(tmp_path / "a", "val")
    assert ds.classes == cityscapes_labels.CLASS_NAMES and ds.colors == cityscapes_labels.CLASS_COLORS
    image, label = ds.read(1)
    assert image.shape == (3, 64, 96) and int(label.max()) < 19


def test_synthetic_covers_all_classes():
    present = np.zeros(19, int)
    for i in range(30):
        _, label = draw_scene(np.random.default_rng([0, 0, i]), 128, 256)
        present += np.bincount(label.ravel(), minlength=256)[:19] > 0
    assert present.min() >= 3, present  # every class, several times
    assert np.median(present) >= 20  # most classes in most of the 30 images


def test_synthetic_dataset_generates_once_and_on_new_parameters(tmp_path):
    root = tmp_path / "syn"
    ds = SyntheticDataset(root, "train", num_train=2, num_val=1, size=(48, 64))
    assert len(ds) == 2 and ds.num_classes == 19
    stamp = (root / "images/train/scene_00000.png").stat().st_mtime_ns
    val = SyntheticDataset(root, "val")  # no parameters: the stored set, whatever it was made with
    assert len(val) == 1 and (root / "images/train/scene_00000.png").stat().st_mtime_ns == stamp
    assert len(SyntheticDataset(root, "val", num_val=3)) == 3
    assert len(SyntheticDataset(root, "train")) == 2  # the other parameters were kept
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    save(tmp_path / "other/x.png", rgb(1, 1))
    with pytest.raises(DataError, match="not a synthetic data set"):
        SyntheticDataset(tmp_path / "other", "train")


@pytest.mark.parametrize("size, jitter", [((40, 56), None), ((90, 120), None), ((30, 200), (0.4, 0.4, 0.4, 0.1))])
def test_train_transform_equals_the_plain_v2_pipeline(size, jitter):
    from aticnet.data.transforms import ComposedTrainTransform, TrainTransform
    from aticnet.models.config import IMAGENET_MEAN, IMAGENET_STD

    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g)
    lab = torch.randint(0, 19, size, dtype=torch.uint8, generator=g)
    old = ComposedTrainTransform(64, scale_range=(0.5, 2.0), color_jitter=jitter, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    new = TrainTransform(64, scale_range=(0.5, 2.0), color_jitter=jitter, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    enlarged = 0
    for seed in range(12):  # scales below and above 1 and the crop, both flips, padded on some sides
        torch.manual_seed(seed)
        a = old(img, lab)
        torch.manual_seed(seed)
        b = new(img, lab)
        assert torch.equal(a[1], b[1]), seed  # the labels: the same, always
        assert a[0].dtype == b[0].dtype and a[1].dtype == b[1].dtype
        torch.manual_seed(seed)
        if new.draw(*size).size[0] < size[0]:  # shrunk: torchvision resizes the whole frame, the same bits
            assert torch.equal(a[0], b[0]), seed
        else:  # enlarged: the window alone, within one grey level of torchvision's uint8 rounding
            enlarged += 1
            assert ((a[0] - b[0]) * std * 255).abs().max() < 1.01, seed
    assert enlarged >= 4
    torch.manual_seed(99)
    old(img, lab)
    after_old = torch.rand(())
    torch.manual_seed(99)
    new(img, lab)
    assert torch.rand(()) == after_old
