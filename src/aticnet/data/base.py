"""The base of every data set: listing is cheap and strict, decoding checks every file.

A data set is a list of (image path, label path) pairs found when it is built. Reading a
pair decodes both files with torchvision and maps the label's raw values to train ids
through a 256-entry table, so each data set only says where its files are and what its
raw values mean.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch.utils.data import Dataset

from ..utils.errors import DataError
from ..utils.io import image_size, read_image, read_label_map

if TYPE_CHECKING:
    from .cache import DecodedFrames

IGNORE = 255
INVALID = 254  # label-table value for raw values a data set never contains

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_lut(
    mapping: dict[int, int] | None = None, *, identity: int = 0, ignore: tuple[int, ...] = (IGNORE,)
) -> torch.Tensor:
    """A 256-entry uint8 label table: raw value -> train id.

    Values ``0..identity-1`` map to themselves, ``mapping`` adds or overrides entries, the
    values in ``ignore`` map to 255, and everything else to ``INVALID`` (an error on read).
    """
    lut = torch.full((256,), INVALID, dtype=torch.uint8)
    lut[:identity] = torch.arange(identity, dtype=torch.uint8)
    for raw in ignore:
        lut[raw] = IGNORE
    for raw, train_id in (mapping or {}).items():
        lut[raw] = train_id
    return lut


def drive_of(image: Path) -> str:
    """The drive (recording) a frame comes from: its file name up to the first '_'."""
    return image.name.split("_", 1)[0]


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(path, f"{what} not found" if not path.exists() else f"{what} is not a folder")
    return path


_unpaired: contextvars.ContextVar[list[DataError] | None] = contextvars.ContextVar("unpaired", default=None)


@contextlib.contextmanager
def collect_unpaired() -> Iterator[list[DataError]]:
    """Inside this block ``pair_up`` lists unpaired files here and leaves them out instead of raising
    (``aticnet check-data`` reports every bad file at once)."""
    found: list[DataError] = []
    token = _unpaired.set(found)
    try:
        yield found
    finally:
        _unpaired.reset(token)


def pair_up(
    images: dict[str, Path], labels: dict[str, Path], image_dir: Path, label_dir: Path
) -> list[tuple[Path, Path]]:
    """Join images and labels on a shared key; any image or label without its partner is an error
    (or, under ``collect_unpaired``, listed there and left out)."""
    errors = [DataError(images[key], f"no label for this image (looked in {label_dir})") for key in sorted(images)
              if key not in labels]
    errors += [DataError(labels[key], f"no image for this label (looked in {image_dir})") for key in sorted(labels)
               if key not in images]
    collected = _unpaired.get()
    if errors and collected is None:
        raise errors[0]
    if collected is not None:
        collected.extend(errors)
    return [(images[key], labels[key]) for key in sorted(images) if key in labels]


class SegmentationDataset(Dataset, abc.ABC):
    """(image, label) pairs of one split, or of several joined by '+' (``"train+val"``).

    ``read(i)`` gives the decoded pair: a uint8 3xHxW RGB image and a uint8 HxW label of
    train ids 0..K-1 or 255 (ignored). ``dataset[i]`` passes it through ``transform``.
    Subclasses set ``classes``, ``colors``, ``label_lut``, where a split's files are
    (``image_folder``, ``label_folder``) and how an image and its label pair up (``keyed_files``).

    ``drives`` keeps only the frames of those drives, ``exclude_drives`` leaves them out. A
    drive is the recording a frame comes from: its file name up to the first '_' (CamVid's
    sequence, such as 0016E5; Cityscapes' city). Frames of one drive are near-copies of
    each other, so an honest held-out set holds whole drives.
    """

    ignore_index = IGNORE
    classes: list[str]
    colors: list[tuple[int, int, int]]
    label_lut: torch.Tensor

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        *,
        drives: Sequence[str] | None = None,
        exclude_drives: Sequence[str] = (),
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        require_dir(self.root, "data root")
        self.splits = [part for part in split.split("+") if part]
        self.image_dirs = [self.split_dir(part) for part in self.splits]
        samples = [pair for part in self.splits for pair in self.find_samples(part)]
        if not samples:
            raise DataError(self.image_dirs[0], f"split {split!r} has no images")
        if drives is not None:
            samples = [s for s in samples if drive_of(s[0]) in set(drives)]
        samples = [s for s in samples if drive_of(s[0]) not in set(exclude_drives)]
        if not samples:
            which = f"drives {', '.join(drives)}" if drives is not None else "what is not excluded"
            raise DataError(self.image_dirs[0], f"split {split!r} has no images of {which}")
        self.samples: list[tuple[Path, Path]] = samples
        self.decoded: DecodedFrames | None = None  # the pairs decoded once (data/cache.py), read instead of the files

    # --- what a subclass says -------------------------------------------------------
    image_folder: str  # a split's images, relative to the root: "leftImg8bit/{split}"
    label_folder: str  # a split's labels: "gtFine/{split}"

    @abc.abstractmethod
    def keyed_files(self, image_dir: Path, label_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
        """The split's images and labels, each keyed by the name an image and its label share."""

    def lut_for(self, label_path: Path) -> torch.Tensor:
        """The label table for one label file (Cityscapes has two kinds of label files)."""
        return self.label_lut

    # --- shared ---------------------------------------------------------------------
    def split_dir(self, split: str) -> Path:
        """The folder of one split's images; ``relative_name`` is relative to it."""
        return self.root / self.image_folder.format(split=split)

    def label_dir(self, split: str) -> Path:
        return self.root / self.label_folder.format(split=split)

    def find_samples(self, split: str) -> list[tuple[Path, Path]]:
        """All (image, label) pairs of one split, sorted; raises DataError for unpaired files."""
        image_dir = require_dir(self.split_dir(split), f"image folder of split {split!r}")
        label_dir = require_dir(self.label_dir(split), f"label folder of split {split!r}")
        images, labels = self.keyed_files(image_dir, label_dir)
        return pair_up(images, labels, image_dir, label_dir)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_dir(self) -> Path:
        """The first split's image folder."""
        return self.image_dirs[0]

    def __len__(self) -> int:
        return len(self.samples)

    def drives(self) -> dict[str, int]:
        """Frames per drive, in order of first appearance."""
        return dict(Counter(drive_of(image) for image, _ in self.samples))

    def frame_sizes(self) -> set[tuple[int, int]]:
        """The (height, width) of every frame, from the files' headers (nothing decoded)."""
        return {image_size(image) for image, _ in self.samples}

    def relative_name(self, i: int) -> str:
        """The image's path relative to its split folder, without extension ('city/name')."""
        image = self.samples[i][0]
        folder = next(d for d in self.image_dirs if image.is_relative_to(d))
        return image.relative_to(folder).with_suffix("").as_posix()

    def read(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode pair ``i``: (uint8 3xHxW RGB image, uint8 HxW train ids or 255); with ``decoded`` set (a
        [`DecodedFrames`][aticnet.data.cache.DecodedFrames] of this data set), copy it out of that instead."""
        if self.decoded is not None:
            return self.decoded.read(i)
        image_path, label_path = self.samples[i]
        image = read_image(image_path)
        raw = read_label_map(label_path)
        if raw.dtype != torch.uint8:
            kind = str(raw.dtype).removeprefix("torch.")
            raise DataError(label_path, f"label is a {kind} image; it must be 8-bit single-channel (a value per pixel)")
        if raw.shape != image.shape[1:]:
            raise DataError(
                label_path, f"label is {raw.shape[0]}x{raw.shape[1]} but its image {image_path.name} is "
                f"{image.shape[1]}x{image.shape[2]}"
            )
        label = self.lut_for(label_path)[raw.long()]
        bad = label == INVALID
        if bad.any():
            values = torch.unique(raw[bad]).tolist()
            shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
            raise DataError(
                label_path, f"label values not used by {type(self).__name__}: {shown} (neither a class nor ignore)"
            )
        return image, label

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.read(i)
        if self.transform is not None:
            return self.transform(image, label)
        return image, label

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(root={str(self.root)!r}, split={self.split!r}, {len(self)} samples, {self.num_classes} classes)"
