"""Trained weights that ship with aticnet, loaded by name with nothing downloaded.

Each shipped model is a Hub-style folder under ``aticnet/weights/NAME/`` (``model.safetensors`` in fp16,
``config.json``, ``README.md``, the model card), installed with the package. A name such as ``aticnet-camvid``
works wherever weights are taken: ``aticnet.load("aticnet-camvid")``, ``aticnet.from_pretrained(...)``,
``aticnet.build_model("aticnet", weights="camvid")``, ``--weights`` and ``--init`` of every command.

>>> import aticnet
>>> [w.name for w in aticnet.list_weights()]
['aticnet-camvid', 'icnet-camvid']
>>> aticnet.get_weights("aticnet-camvid").metrics["camvid_heldout_0006R0_miou"]   # measured figures
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class Weights:
    """One shipped model: where it lies and what its ``config.json`` says about it.

    Attributes:
        name: the name every command takes (``"aticnet-camvid"``).
        folder: its Hub-style folder (``model.safetensors``, ``config.json``, ``README.md``: the model card).
        model: the architecture (``"aticnet"``, ``"icnet"``).
        dataset: the data set it was trained on.
        num_classes: its number of classes.
        classes: the class names, in class-id order.
        input_size: (H, W) of the frames it was trained on.
        params: its number of parameters.
        metrics: the figures measured for it: ``camvid_heldout_0006R0_miou`` (a fraction), the seeds and steps of
            that protocol, and ``speed``, per deployable form the milliseconds at 360x480 and 1024x2048 and the
            change of val mIoU. ``aticnet weights`` prints them by name.
        commands: the command behind each group of figures (``train``, ``heldout``, ``speed``).
    """

    name: str
    folder: Path
    model: str
    dataset: str
    num_classes: int
    classes: tuple[str, ...]
    input_size: tuple[int, int]
    params: int
    metrics: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    commands: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def file(self) -> Path:
        """The safetensors file (fp16 numbers; loaded as fp32)."""
        return self.folder / "model.safetensors"


def _read(folder: Path) -> Weights:
    config = json.loads((folder / "config.json").read_text())
    shipped = config.get("shipped", {})
    return Weights(
        name=folder.name, folder=folder, model=config["model_type"], dataset=config.get("dataset", ""),
        num_classes=int(config["num_classes"]), classes=tuple(config["classes"]),
        input_size=tuple(shipped.get("input_size", (0, 0))), params=int(shipped.get("params", 0)),
        metrics=dict(shipped.get("metrics", {})), commands=dict(shipped.get("commands", {})),
    )


def list_weights() -> list[Weights]:
    """Every model that ships with aticnet, sorted by name.

    Examples:
        >>> import aticnet
        >>> [w.name for w in aticnet.list_weights()]
        ['aticnet-camvid', 'icnet-camvid']

    Returns:
        A [`Weights`][aticnet.models.pretrained.Weights] record per shipped model (an empty list when the
            installation holds none).
    """
    if not WEIGHTS_DIR.is_dir():
        return []
    return [_read(d) for d in sorted(WEIGHTS_DIR.iterdir()) if (d / "config.json").is_file()]


def weight_names() -> list[str]:
    """The names ``get_weights`` knows."""
    return [w.name for w in list_weights()]


def is_weights_name(text: str) -> bool:
    """Whether ``text`` is the name of a shipped model."""
    return "/" not in text and "\\" not in text and (WEIGHTS_DIR / text / "config.json").is_file()


def get_weights(name: str) -> Weights:
    """The shipped model called ``name``.

    Args:
        name: a shipped name, e.g. ``"aticnet-camvid"``.

    Returns:
        Its [`Weights`][aticnet.models.pretrained.Weights] record.

    Raises:
        UserError: no model of that name ships; the message lists those that do.
    """
    if not is_weights_name(name):
        known = ", ".join(weight_names()) or "none in this installation"
        raise UserError(f"{name}: no shipped weights of that name (shipped: {known})")
    return _read(WEIGHTS_DIR / name)


def weights_for(model: str, weights: str) -> Weights:
    """``build_model(model, weights=...)``'s lookup: ``weights`` is a data set (``camvid``) or a full name."""
    name = weights if is_weights_name(weights) else f"{model}-{weights}"
    found = get_weights(name)
    if found.model != model:
        raise UserError(f"{name}: these are {found.model} weights, not {model}")
    return found

