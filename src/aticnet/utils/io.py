"""The files aticnet reads and writes: images, label maps, JSON. Reads name the file when they fail;
writes are atomic (a temporary file, fsynced, renamed into place), so a kill never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from .errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def _decode(path: str | Path, mode: ImageReadMode, exif: bool = False) -> torch.Tensor:
    """``decode_image`` whose failures are a ``DataError`` naming the file."""
    path = Path(path)
    try:
        return decode_image(str(path), mode=mode, apply_exif_orientation=exif)
    except (RuntimeError, ValueError, OSError) as e:
        if not path.is_file():
            raise DataError(path, "file not found") from None
        # torchvision prefixes its C++ function and source line: "decode_png, /.../decode_png.cpp:79, Out of ..."
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = re.sub(r"^[\w()]+, \S+:\d+, ", "", text)
        raise DataError(path, f"cannot decode image ({reason})") from None


def read_image(path: str | Path, *, exif: bool = False) -> torch.Tensor:
    """An image file as a 3 x H x W uint8 RGB tensor (grey, palette and RGBA converted; 16-bit scaled to 8).

    ``exif``: turn a photo upright as its EXIF orientation says (data sets are stored upright already)."""
    image = _decode(path, ImageReadMode.RGB, exif)
    if image.dtype != torch.uint8:
        image = F.to_dtype(image, torch.uint8, scale=True)
    return image


def read_label_map(path: str | Path) -> torch.Tensor:
    """A one-channel label PNG as an H x W tensor of its raw values (uint8, or uint16 for 16-bit files).

    Palette PNGs give their indices. A colour image is refused: a label map holds a value per pixel.
    """
    raw = _decode(path, ImageReadMode.UNCHANGED)
    if raw.shape[0] != 1:
        raise DataError(path, f"label is a {raw.shape[0]}-channel image; it must be single-channel (a value per pixel)")
    return raw[0]


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding the pixels."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except Image.DecompressionBombError:
        raise DataError(path, f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (PIL's guard against "
                              "decompression bombs)") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(path, f"not a readable image ({e.__class__.__name__})") from None
    return h, w


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Call ``write(temporary_path)`` beside ``path``, fsync, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp (and safetensors, which replaces the file) make 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, atomically."""
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_text(path: str | Path, text: str) -> None:
    """``text`` at ``path``, atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive lock on the file ``path`` (made if missing) for the block: one process at a time builds what
    several may ask for at once (released if the process dies; no lock on Windows, where fcntl is missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
