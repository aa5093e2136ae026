"""Reading every (image, label) pair of a data set before training on it (``aticnet check-data``).

Each pair is decoded by the data set's own ``read`` (exactly what training sees): both files
open, the label has its image's size, and it holds only class values or the ignore value.
Images and labels without a partner are listed too. Prints the class pixel frequencies of
each split; exits with code 2 and the list of bad files when any is bad.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..utils.errors import DataError
from . import build_dataset
from .base import IGNORE, SegmentationDataset, collect_unpaired


class PairStats(Dataset):
    """Item i: {"size": (H, W), "counts": 256 label-value counts} of pair i, or its DataError."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any] | DataError:
        try:
            image, label = self.dataset.read(i)
        except DataError as e:
            return e
        return {"size": tuple(image.shape[1:]), "counts": torch.bincount(label.flatten().long(), minlength=256)}


def check_split(name: str, root: str, split: str, workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Check one split: {"pairs", "bad": [{"path", "problem"}], "class_pixels", "ignored_pixels", "sizes",
    "drives" (frames per drive)}."""
    from tqdm import tqdm

    report: dict[str, Any] = {"pairs": 0, "bad": [], "class_pixels": {}, "ignored_pixels": 0, "sizes": {}, "drives": {}}
    with collect_unpaired() as unpaired:
        try:
            dataset = build_dataset(name, root, split)
        except DataError as e:
            dataset = None
            unpaired.append(e)
    report["bad"] = [{"path": str(e.path), "problem": e.problem} for e in unpaired]
    if dataset is None:
        return report
    counts = torch.zeros(256, dtype=torch.int64)
    sizes: Counter[str] = Counter()
    loader = DataLoader(PairStats(dataset), batch_size=None, num_workers=workers)
    for item in tqdm(loader, total=len(dataset), desc=f"{split}", unit="pair", leave=False, disable=not progress):
        if isinstance(item, DataError):
            report["bad"].append({"path": str(item.path), "problem": item.problem})
        else:
            counts += item["counts"]
            sizes["x".join(map(str, item["size"]))] += 1
    report["pairs"] = len(dataset)
    report["drives"] = dataset.drives()
    report["class_pixels"] = {c: int(n) for c, n in zip(dataset.classes, counts[: dataset.num_classes])}
    report["ignored_pixels"] = int(counts[IGNORE])
    report["sizes"] = dict(sizes.most_common())
    return report


def format_table(reports: dict[str, dict[str, Any]]) -> str:
    """Class pixel frequencies, one column per split: % of the labelled pixels."""
    splits = [s for s, r in reports.items() if r["class_pixels"]]
    if not splits:
        return ""
    classes = list(reports[splits[0]]["class_pixels"])
    width = max(len(c) for c in [*classes, "ignored (% of all)"]) + 2
    lines = ["class".ljust(width) + "".join(f"{s:>12}" for s in splits)]
    for c in classes:
        cells = []
        for s in splits:
            total = sum(reports[s]["class_pixels"].values())
            cells.append(f"{100 * reports[s]['class_pixels'][c] / max(total, 1):11.2f}%")
        lines.append(c.ljust(width) + "".join(cells))
    cells = []
    for s in splits:
        r = reports[s]
        total = sum(r["class_pixels"].values()) + r["ignored_pixels"]
        cells.append(f"{100 * r['ignored_pixels'] / max(total, 1):11.2f}%")
    lines.append("ignored (% of all)".ljust(width) + "".join(cells))
    absent = [f"{c} ({s})" for s in splits for c, n in reports[s]["class_pixels"].items() if n == 0]
    if absent:
        lines.append("classes with no pixels: " + ", ".join(absent))
    return "\n".join(lines)
