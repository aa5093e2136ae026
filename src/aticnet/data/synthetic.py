"""A synthetic street-scene data set (19 Cityscapes classes), generated on first use.

``generate_synthetic`` writes ``FolderDataset``'s layout (``images/``, ``masks/``,
``classes.txt`` with the Cityscapes names and palette) plus ``synthetic.json`` holding the
generation parameters. Defaults: 300 train + 60 val scenes of 128x256, seed 0 (about
3 s to write). Image ``i`` of a split depends only on (seed, split, i), so the same seed
gives byte-identical PNGs.

The set is written into a temporary sibling folder and renamed into place, so a killed
generation never leaves a half set under ``root``; a lock file beside ``root``
(``.NAME.lock``) makes concurrent processes (torchrun ranks) generate it once.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..utils.errors import DataError
from ..utils.io import file_lock
from .base import Transform
from .cityscapes_labels import CLASS_COLORS, CLASS_NAMES
from .folder import FolderDataset
from .scenes import draw_scene

DEFAULTS = {"num_train": 300, "num_val": 60, "size": [128, 256], "seed": 0}  # as generate_synthetic's
VERSION = 1  # bump when the drawing changes, so stored sets are regenerated
MARKER = "synthetic.json"
SPLITS = {"train": "num_train", "val": "num_val"}


def generate_synthetic(
    root: str | Path,
    *,
    num_train: int = 300,
    num_val: int = 60,
    size: tuple[int, int] = (128, 256),
    seed: int = 0,
) -> Path:
    """Write the synthetic set into ``root`` (replacing a synthetic set there); returns ``root``.

    ``size`` is (height, width). ``root`` must be absent, empty or an earlier synthetic set.
    """
    params = checked_params(num_train=num_train, num_val=num_val, size=size, seed=seed)
    root = Path(root)
    with generation_lock(root):
        write_atomically(root, params)
    return root


def ensure_synthetic(root: str | Path, **given: int | tuple[int, int] | None) -> dict:
    """Generate the set unless ``root`` holds one made with the ``given`` parameters; returns them.

    Parameters left out (or None) take the stored set's values, or the defaults: so reading
    an existing set never regenerates it with other parameters by accident.
    """
    root = Path(root)
    stored = read_marker(root)
    known = {k: v for k, v in (stored or {}).items() if v is not None}
    params = checked_params(**{**DEFAULTS, **known, **{k: v for k, v in given.items() if v is not None}})
    if stored == params:
        return params
    with generation_lock(root):
        if read_marker(root) != params:  # another process may have just written it
            write_atomically(root, params)
    return params


class SyntheticDataset(FolderDataset):
    """The synthetic street scenes as a ``FolderDataset`` (splits "train" and "val"), generated if needed."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        *,
        num_train: int | None = None,
        num_val: int | None = None,
        size: tuple[int, int] | None = None,
        seed: int | None = None,
        **drives,
    ) -> None:
        self.params = ensure_synthetic(root, num_train=num_train, num_val=num_val, size=size, seed=seed)
        super().__init__(root, split, transform, **drives)


def checked_params(*, num_train: int, num_val: int, size, seed: int) -> dict:
    """The parameters as stored in ``synthetic.json``; ValueError for impossible ones."""
    height, width = (int(v) for v in size)
    if min(height, width) < 32:
        raise ValueError(f"synthetic image size must be at least 32x32, got {height}x{width}")
    if num_train < 0 or num_val < 0 or seed < 0:
        raise ValueError(f"num_train, num_val and seed must be >= 0, got {num_train}, {num_val}, {seed}")
    return {"num_train": int(num_train), "num_val": int(num_val), "size": [height, width], "seed": int(seed)}


def read_marker(root: Path) -> dict | None:
    """The parameters of the set in ``root``, or None (no set, an unfinished one, an older version)."""
    try:
        data = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return None
    return {key: data.get(key) for key in DEFAULTS}


def write_set(folder: Path, params: dict) -> None:
    height, width = params["size"]
    for index, (split, count_key) in enumerate(SPLITS.items()):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "masks" / split).mkdir(parents=True)
        for i in range(params[count_key]):
            image, label = draw_scene(np.random.default_rng([params["seed"], index, i]), height, width)
            name = f"scene_{i:05d}.png"
            # PIL, not torchvision.io.write_png: twice as fast on these noisy images.
            Image.fromarray(image).save(folder / "images" / split / name, compress_level=1)
            Image.fromarray(label).save(folder / "masks" / split / name, compress_level=1)
    lines = [f"{name} {r} {g} {b}" for name, (r, g, b) in zip(CLASS_NAMES, CLASS_COLORS)]
    (folder / "classes.txt").write_text("\n".join(lines) + "\n")
    marker = {"generator": "aticnet synthetic street scenes", "version": VERSION, **params}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # last: it marks the set complete


def write_atomically(root: Path, params: dict) -> None:
    """Write into a temporary sibling, then swap it in for ``root`` (call under the lock)."""
    root = root.absolute()
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not (root / MARKER).is_file())):
        raise DataError(root, f"exists and is not a synthetic data set (no {MARKER}); use a new or empty folder")
    for stale in [*root.parent.glob(f".{root.name}.tmp-*"), *root.parent.glob(f".{root.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed generation; we hold the lock
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        write_set(tmp, params)
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            root.rename(old / "set")
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def generation_lock(root: Path) -> contextlib.AbstractContextManager:
    """An exclusive lock on ``.NAME.lock`` beside ``root`` (released if the process dies)."""
    root = root.absolute()
    return file_lock(root.parent / f".{root.name}.lock")
