"""ConfusionMatrix and its scores (IoU = TP / (TP + FP + FN) over valid pixels, empty classes left out), against hand-computed counts and a plain reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist

from aticnet.evaluation.metrics import ConfusionMatrix, format_scores


def scores_of(pred, target, num_classes, names=None):
    cm = ConfusionMatrix(num_classes)
    cm.update(torch.tensor(pred), torch.tensor(target))
    return cm, cm.compute(names)


def test_hand_computed_three_classes():
    target = [[0, 0, 0, 0, 1], [1, 2, 2, 2, 255]]
    pred = [[0, 0, 0, 1, 1], [2, 2, 0, 0, 2]]
    # Valid (target, pred) pairs: (0,0)x3 (0,1) (1,1) (1,2) (2,2) (2,0)x2; the 255 pixel is dropped.
    # class 0: TP 3, FN 1 (0->1), FP 2 (2->0 twice)          IoU 3/6, acc 3/4
    # class 1: TP 1, FN 1 (1->2), FP 1 (0->1)                IoU 1/3, acc 1/2
    # class 2: TP 1, FN 2 (2->0 twice), FP 1 (1->2; the pixel predicted 2 on 255 is no FP)
    #                                                        IoU 1/4, acc 1/3
    cm, s = scores_of(pred, target, 3, ["a", "b", "c"])
    assert cm.matrix.tolist() == [[3, 1, 0, 0], [0, 1, 1, 0], [2, 0, 1, 0]]
    assert s["per_class_iou"] == pytest.approx({"a": 1 / 2, "b": 1 / 3, "c": 1 / 4})
    assert s["per_class_accuracy"] == pytest.approx({"a": 3 / 4, "b": 1 / 2, "c": 1 / 3})
    assert s["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)  # 13/36
    assert s["mean_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 3) / 3)  # 19/36
    assert s["pixel_accuracy"] == pytest.approx(5 / 9)
    assert s["num_pixels"] == 9
    json.dumps(s)  # plain Python numbers only
    assert all(type(v) is float for v in s["per_class_iou"].values())


def test_predicted_void_is_a_miss_not_a_false_positive_nor_dropped():
    # Pixel 1 is class 0 predicted 255 (void), pixel 3 class 1 predicted 7, pixel 4 class 1 predicted -1.
    cm, s = scores_of([0, 255, 1, 7, -1], [0, 0, 1, 1, 1], 3)
    assert cm.matrix.tolist() == [[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 0, 0]]
    assert s["num_pixels"] == 5  # not dropped
    assert s["per_class_iou"]["0"] == pytest.approx(1 / 2)  # TP 1, FN 1, FP 0
    assert s["per_class_iou"]["1"] == pytest.approx(1 / 3)  # TP 1, FN 2, FP 0
    assert s["per_class_iou"]["2"] is None  # void gave class 2 no false positive
    assert s["pixel_accuracy"] == pytest.approx(2 / 5)


def test_absent_class_is_none_and_left_out_of_the_means():
    # Class 3 appears nowhere; class 2 only in the prediction (IoU 0, no accuracy).
    _, s = scores_of([0, 1, 2, 1], [0, 1, 1, 1], 4)
    assert s["per_class_iou"] == pytest.approx({"0": 1.0, "1": 2 / 3, "2": 0.0, "3": None})
    assert s["per_class_accuracy"] == pytest.approx({"0": 1.0, "1": 2 / 3, "2": None, "3": None})
    assert s["miou"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert s["mean_accuracy"] == pytest.approx((1 + 2 / 3) / 2)


def test_empty_matrix_gives_none_everywhere():
    s = ConfusionMatrix(2).compute()
    assert s["miou"] is None and s["pixel_accuracy"] is None and s["mean_accuracy"] is None
    assert s["num_pixels"] == 0


def test_ignored_pixels_do_not_count():
    target = torch.tensor([0, 1, 1, 2])
    pred = torch.tensor([0, 1, 2, 2])
    base = ConfusionMatrix(3)
    base.update(pred, target)
    padded = ConfusionMatrix(3, ignore_index=255)
    padded.update(torch.cat([pred, torch.tensor([0, 1, 2, 200])]), torch.cat([target, torch.full((4,), 255)]))
    assert torch.equal(base.matrix, padded.matrix)

    custom = ConfusionMatrix(3, ignore_index=-1)
    custom.update(torch.tensor([0, 1]), torch.tensor([-1, 1]))
    assert custom.compute()["num_pixels"] == 1


def test_target_outside_the_classes_is_an_error():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\[3, 11\]"):
        cm.update(torch.tensor([0, 0, 0]), torch.tensor([3, 11, 255]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError):
        cm.update(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        ConfusionMatrix(3, ignore_index=2)


def random_maps(gen, shape, num_classes):
    target = torch.randint(0, num_classes, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < 0.1] = 255
    pred = torch.randint(0, num_classes + 2, shape, generator=gen)  # the two extra values are void
    return pred, target


def test_batched_update_equals_the_sum_of_single_updates():
    gen = torch.Generator().manual_seed(0)
    pred, target = random_maps(gen, (4, 9, 11), 5)
    batched, single = ConfusionMatrix(5), ConfusionMatrix(5)
    batched.update(pred, target)
    for p, t in zip(pred, target, strict=True):
        single.update(p.to(torch.uint8), t.to(torch.uint8))  # 8-bit maps work too
    assert torch.equal(batched.matrix, single.matrix)
    batched.reset()
    assert batched.matrix.sum() == 0


def reference_iou(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = 255) -> list[float | None]:
    """IoU per class straight from the definition, one class at a time."""
    valid = target != ignore
    out = []
    for c in range(num_classes):
        tp = np.sum(valid & (target == c) & (pred == c))
        fp = np.sum(valid & (target != c) & (pred == c))
        fn = np.sum(valid & (target == c) & (pred != c))
        out.append(None if tp + fp + fn == 0 else tp / (tp + fp + fn))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_matches_a_plain_reference_on_random_data(seed):
    gen = torch.Generator().manual_seed(seed)
    k = 6
    pred, target = random_maps(gen, (2, 17, 23), k)
    target[target == 4] = 255  # class 4 only predicted, never true
    cm = ConfusionMatrix(k)
    cm.update(pred, target)
    s = cm.compute()
    expected = reference_iou(pred.numpy(), target.numpy(), k)
    assert list(s["per_class_iou"].values()) == pytest.approx(expected)
    valid = target.numpy() != 255
    assert s["num_pixels"] == valid.sum()
    assert s["pixel_accuracy"] == pytest.approx((pred.numpy() == target.numpy())[valid].mean())


def test_reduce_is_a_no_op_alone_and_sums_in_a_process_group(tmp_path):
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    before = cm.matrix.clone()
    cm.reduce()
    assert torch.equal(cm.matrix, before)
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("no fresh process group to be had")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cm.reduce()  # one process: the sum is itself
        assert torch.equal(cm.matrix, before)
    finally:
        dist.destroy_process_group()


def test_format_scores_lists_every_class():
    _, s = scores_of([0, 1, 1], [0, 1, 0], 3, ["road", "sidewalk", "building"])
    text = format_scores(s, title="val")
    lines = text.splitlines()
    assert lines[0] == "val"
    assert any(line.startswith("road") and "50.00" in line for line in lines)  # IoU 1/2
    assert any(line.startswith("building") and "n/a" in line for line in lines)
    assert "mIoU" in text and "pixel accuracy" in text


def test_missed_as_names_where_each_class_went_by_hand():
    # class 0: 2 true pixels, one predicted 1; class 1: 3 true, two predicted 2; class 2: 1 true, found;
    # class 3: 1 true pixel, predicted as 7 (outside the classes: the "other" column)
    _, s = scores_of([0, 1, 1, 2, 2, 2, 7], [0, 0, 1, 1, 1, 2, 3], 4, ["road", "sidewalk", "building", "sky"])
    assert s["missed_as"]["road"] == {"class": "sidewalk", "share": pytest.approx(1 / 2)}
    assert s["missed_as"]["sidewalk"] == {"class": "building", "share": pytest.approx(2 / 3)}
    assert s["missed_as"]["building"] is None
    assert s["missed_as"]["sky"] == {"class": "other", "share": pytest.approx(1.0)}
    text = format_scores(s).splitlines()
    assert any(line.startswith("sidewalk") and line.endswith("building 66.7%") for line in text)
    assert any(line.startswith("building") and line.rstrip().endswith("100.00") for line in text)
