"""Any data set laid out as images + masks + a classes file.

Layout::

    root/classes.txt  or  root/classes.json
    root/images/{split}/**/NAME.{png,jpg,jpeg}
    root/masks/{split}/**/NAME.png        8-bit, values 0..K-1 or 255 (ignored)

``classes.txt`` has one class per line, ``name r g b`` (the name may contain spaces; blank
lines and lines starting with ``#`` are skipped). ``classes.json`` is a list of
``{"name": ..., "color": [r, g, b]}``. The line / list order gives the class index.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..utils.errors import DataError
from .base import INVALID, SegmentationDataset, Transform, make_lut, require_dir

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CLASS_FILES = ("classes.txt", "classes.json")

Classes = list[tuple[str, tuple[int, int, int]]]


def read_classes(root: Path) -> Classes:
    """(name, colour) per class from ``root/classes.txt`` or ``root/classes.json``."""
    found = [root / name for name in CLASS_FILES if (root / name).is_file()]
    if not found:
        raise DataError(root, f"no classes file ({' or '.join(CLASS_FILES)})")
    if len(found) > 1:
        raise DataError(root, "both classes.txt and classes.json exist; keep one")
    path = found[0]
    try:
        classes = read_classes_txt(path) if path.suffix == ".txt" else read_classes_json(path)
    except UnicodeDecodeError:
        raise DataError(path, "not UTF-8 text") from None
    if not classes:
        raise DataError(path, "no classes")
    if len(classes) >= INVALID:
        raise DataError(path, f"{len(classes)} classes; at most {INVALID - 1} fit in 8-bit masks with 255 as ignore")
    names = [name for name, _ in classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(path, f"class names repeated: {', '.join(duplicates)}")
    return classes


def parse_color(values: object, where: str, path: Path) -> tuple[int, int, int]:
    """Three integers 0..255, given as text tokens (classes.txt) or JSON numbers."""
    if isinstance(values, list) and len(values) == 3:
        ints = [int(v) if isinstance(v, str) and v.isdigit() else v for v in values]
        if all(type(v) is int and 0 <= v <= 255 for v in ints):
            return (ints[0], ints[1], ints[2])
    raise DataError(path, f"{where}: colour must be three integers 0..255, got {values}")


def read_classes_txt(path: Path) -> Classes:
    classes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=3)  # the last three tokens are the colour
        if len(parts) != 4:
            raise DataError(path, f"line {number}: expected 'name r g b', got {line!r}")
        classes.append((parts[0].strip(), parse_color(parts[1:], f"line {number}", path)))
    return classes


def read_classes_json(path: Path) -> Classes:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise DataError(path, 'expected a list of {"name": ..., "color": [r, g, b]}')
    classes = []
    for i, item in enumerate(data):
        if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("color"), list)):
            raise DataError(path, f'entry {i}: expected {{"name": str, "color": [r, g, b]}}, got {item!r}')
        classes.append((item["name"], parse_color(item["color"], f"entry {i} ({item['name']})", path)))
    return classes


class FolderDataset(SegmentationDataset):
    """A data set in the images/masks/classes-file layout (see the module docstring)."""

    image_folder, label_folder = "images/{split}", "masks/{split}"

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None, **drives) -> None:
        root = Path(root)
        require_dir(root, "data root")
        classes = read_classes(root)
        self.classes = [name for name, _ in classes]
        self.colors = [color for _, color in classes]
        self.label_lut = make_lut(identity=len(classes))
        super().__init__(root, split, transform, **drives)

    def keyed_files(self, image_dir: Path, label_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
        images: dict[str, Path] = {}
        for p in image_dir.rglob("*"):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                key = p.relative_to(image_dir).with_suffix("").as_posix()
                if key in images:
                    other = images[key].name
                    raise DataError(p, f"two images share the name {key!r} ({other}); their masks would clash")
                images[key] = p
        masks = {p.relative_to(label_dir).with_suffix("").as_posix(): p for p in label_dir.rglob("*.png") if p.is_file()}
        return images, masks
