"""Training augmentation by its effect: the scale range is used, flips happen, labels stay on their pixels.

The input is a pattern drawn into image and label alike: vertical stripes, each stripe one class in
left-to-right order, each class its own colour. After the transform, wherever the image shows a
class colour the label must say that class; stripe widths measure the scale; the order of the
classes along a row tells whether the crop was mirrored.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors

from aticnet.data import TrainTransform
from aticnet.data.transforms import RandomScale

MEAN, STD = (0.2, 0.4, 0.6), (0.5, 0.25, 0.3)
STRIPE = 32
PALETTE = torch.tensor([[20, 200, 90], [230, 30, 60], [90, 90, 250], [250, 220, 10], [10, 120, 40], [160, 60, 200],
                        [120, 250, 250], [60, 20, 20]], dtype=torch.uint8)


def stripes(height: int = 200, width: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    classes = (torch.arange(width) // STRIPE).clamp(max=len(PALETTE) - 1)
    label = classes.expand(height, width).to(torch.uint8).contiguous()
    image = PALETTE[label.long()].permute(2, 0, 1).contiguous()
    return image, label


def denormalise(image: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return ((image * std + mean) * 255).round()


def runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(value, length) of each run of equal values along a row."""
    values, counts = torch.unique_consecutive(row, return_counts=True)
    return list(zip(values.tolist(), counts.tolist()))


def sample(transform, seed: int):
    image, label = stripes()
    torch.manual_seed(seed)
    return transform(image, label)


def test_labels_stay_on_their_pixels_through_scale_flip_and_crop():
    transform = TrainTransform(160, scale_range=(0.5, 2.0), mean=MEAN, std=STD)
    matched_total = 0
    for seed in range(30):
        image, label = sample(transform, seed)
        pixels = denormalise(image).permute(1, 2, 0).reshape(-1, 1, 3)
        distance = (pixels - PALETTE.float()[None]).abs().amax(-1)  # each pixel against each class colour
        close, cls = distance.min(-1)
        clear = close <= 2  # inside a stripe, away from the blur at its edges
        flat = label.reshape(-1)
        assert (flat[clear] == cls[clear]).all(), f"seed {seed}: a pixel shows one class and is labelled another"
        matched_total += int(clear.sum())
        padded = label == 255
        assert (image[:, padded] == 0).all()  # padding: the mean colour after normalisation
        assert (~padded).sum() > 0
    assert matched_total > 0.5 * 30 * 160 * 160  # the check above saw most pixels


def test_random_scale_covers_its_range():
    image, label = stripes(100, 100)
    factors = []
    for seed in range(300):
        torch.manual_seed(seed)
        out, _ = RandomScale((0.5, 2.0))(tv_tensors.Image(image), tv_tensors.Mask(label))
        factors.append(out.shape[-1] / 100)
    assert 0.5 - 0.01 <= min(factors) < 0.55 and 1.95 < max(factors) <= 2.0 + 0.01
    assert 1.1 < sum(factors) / len(factors) < 1.4  # uniform on [0.5, 2]: mean 1.25


def test_the_training_transform_rescales_by_the_whole_range():
    transform = TrainTransform(160, scale_range=(0.5, 2.0), mean=MEAN, std=STD, flip=False)
    widths = []
    for seed in range(40):
        _, label = sample(transform, seed)
        inner = [n for value, n in runs(label[label.shape[0] // 2])[1:-1] if value != 255]  # whole stripes only
        widths += inner
    assert min(widths) <= 0.6 * STRIPE and max(widths) >= 1.8 * STRIPE


def test_half_of_the_crops_are_mirrored_with_their_labels():
    def direction(transform, seed):
        _, label = sample(transform, seed)
        order = [v for v, _ in runs(label[label.shape[0] // 2]) if v != 255]
        return "left to right" if order == sorted(order) else "mirrored" if order == sorted(order, reverse=True) else "?"

    flipping = [direction(TrainTransform(160, scale_range=(0.5, 1.0), mean=MEAN, std=STD), s) for s in range(40)]
    assert "?" not in flipping and 10 <= flipping.count("mirrored") <= 30
    steady = [direction(TrainTransform(160, scale_range=(0.5, 1.0), mean=MEAN, std=STD, flip=False), s) for s in range(10)]
    assert steady == ["left to right"] * 10


def test_colour_jitter_changes_colours_not_labels():
    jitter = TrainTransform(160, scale_range=(1.0, 1.0), mean=MEAN, std=STD, flip=False, color_jitter=(0.5, 0.5, 0.5, 0.1))
    brightness = []
    for seed in range(8):
        image, label = sample(jitter, seed)
        inner = [(v, n) for v, n in runs(label[0])[1:-1]]
        assert inner and all(n == STRIPE for _, n in inner)  # the stripes as drawn: labels are not jittered
        assert [v for v, _ in runs(label[0])] == sorted(v for v, _ in runs(label[0]))
        brightness.append(denormalise(image).mean().item())
    assert max(brightness) - min(brightness) > 10  # the jitter moved the colours


def test_uint8_crops_normalised_on_the_device_equal_the_float_ones_but_for_padding():
    from aticnet.data.loader import batch_to_device

    as_float = TrainTransform(300, scale_range=(0.5, 1.0), mean=MEAN, std=STD)  # smaller than the crop: padding
    as_bytes = TrainTransform(300, scale_range=(0.5, 1.0), mean=MEAN, std=STD, uint8=True)
    for seed in range(3):
        want, label = sample(as_float, seed)
        raw, label_bytes = sample(as_bytes, seed)
        assert raw.dtype == torch.uint8 and torch.equal(label, label_bytes)
        normalize = (torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1))
        got, _ = batch_to_device((raw[None], label[None]), torch.device("cpu"), normalize)
        inside = label != 255  # the stripes cover the whole image: ignore = padding here
        assert torch.equal(got[0][:, inside], want[:, inside])  # the same float operations, the same bits
        assert (~inside).any() and got[0][:, ~inside].abs().max() < 0.01  # the mean colour rounded to a byte


def test_augmentation_on_the_device_draws_as_the_cpu_and_cuts_the_same_window():
    from aticnet.data.device_augment import augment_on_device

    on_cpu = TrainTransform(160, scale_range=(0.5, 2.0), mean=MEAN, std=STD)
    deferred = TrainTransform(160, scale_range=(0.5, 2.0), mean=MEAN, std=STD, defer=True)
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    for seed in range(6):
        want_image, want_label = sample(on_cpu, seed)
        frame, frame_label, draws = sample(deferred, seed)
        assert frame.dtype == torch.uint8 and frame.shape[-2:] == (200, 256)  # the whole frame, untouched
        images, labels = augment_on_device(frame[None], frame_label[None], draws[None], (160, 160), mean, std)
        assert torch.equal(labels[0], want_label)  # the same scale, flip and window
        # the same pixels but for the rounding of two resize implementations: a grey level or two at edges
        assert (denormalise(images[0]) - denormalise(want_image)).abs().max() <= 2


def test_colour_jitter_on_the_device_equals_the_cpu_jitter():
    """At scale 1 both resizes are the identity: the device's jitter, crop and normalisation give the CPU's bits."""
    from aticnet.data.device_augment import augment_on_device

    jitter = (0.4, 0.4, 0.4, 0.1)
    on_cpu = TrainTransform(160, scale_range=(1.0, 1.0), color_jitter=jitter, mean=MEAN, std=STD)
    deferred = TrainTransform(160, scale_range=(1.0, 1.0), color_jitter=jitter, mean=MEAN, std=STD, defer=True)
    plain = TrainTransform(160, scale_range=(1.0, 1.0), mean=MEAN, std=STD)
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    for seed in range(4):
        want_image, want_label = sample(on_cpu, seed)
        frame, frame_label, draws = sample(deferred, seed)
        assert torch.equal(frame, stripes()[0])  # the loader's processes leave the colours alone
        images, labels = augment_on_device(frame[None], frame_label[None], draws[None], (160, 160), mean, std)
        assert torch.equal(labels[0], want_label) and torch.equal(images[0], want_image)
        assert not torch.equal(images[0], sample(plain, seed)[0])  # and the jitter did change the colours


def test_draws_cross_a_process_boundary_as_one_row():
    from aticnet.data.transforms import Draws

    jittered = TrainTransform(64, color_jitter=(0.4, 0.0, 0.4, 0.1), mean=MEAN, std=STD)
    for transform in (jittered, TrainTransform(64, mean=MEAN, std=STD)):
        torch.manual_seed(3)
        draws = transform.draw(200, 256)
        assert Draws.from_row(draws.to_row().tolist()) == draws
    assert draws.jitter is None
    torch.manual_seed(3)
    with_jitter = jittered.draw(200, 256)
    assert with_jitter.jitter["contrast_factor"] is None and sorted(with_jitter.jitter["fn_idx"]) == [0, 1, 2, 3]


def test_bytes_normalised_on_the_device_equal_the_cpu_transforms():
    """The one normalisation of uint8 frames on a device (training and evaluation) gives EvalTransform's bits."""
    from aticnet.data import EvalTransform
    from aticnet.evaluation.evaluate import normalize_on_device

    image, label = stripes()
    want, _ = EvalTransform(mean=MEAN, std=STD)(image, label)
    raw, _ = EvalTransform(mean=MEAN, std=STD, uint8=True)(image, label)
    assert raw.dtype == torch.uint8
    assert torch.equal(normalize_on_device(raw[None], MEAN, STD)[0], want)
