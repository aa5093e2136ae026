"""Using a trained model from Python.

>>> import aticnet
>>> m = aticnet.load("runs/demo/aticnet")          # a run directory, .safetensors, .onnx or TorchScript
>>> labels = m.predict("street.png")               # H x W train ids (uint8 tensor) at the image's size
>>> picture = aticnet.overlay(image, labels, m.colors)

``predict`` takes a path, a PIL image, an H x W x 3 uint8 numpy array (float arrays are
[0, 1]) or a 3 x H x W tensor (uint8, or float in [0, 1]). The image is scaled to [0, 1]
and normalised with the model's own ``config.mean`` / ``config.std``, so the caller never
normalises. ``m.model`` is the ``nn.Module`` (eval mode: logits at the input's size);
an ONNX model runs through onnxruntime and has no ``m.model``.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import pick_device
from .errors import UserError
from .fast import optimize_for_inference
from .io import read_image
from .visualize import colorize as _colorize
from .visualize import overlay as _overlay

TORCHSCRIPT_EXTENSIONS = (".ts", ".torchscript", ".pt", ".pth")
META_FILE = "aticnet.json"  # the metadata TorchScript files carry (``_extra_files``)


# ----------------------------------------------------------------------------- images
def to_image_tensor(image: Any) -> Tensor:
    """Any accepted image -> 3 x H x W tensor, uint8 (0..255) or float32 (0..1), on the CPU."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if type(image).__module__.startswith("PIL."):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise UserError(f"an image array must be H x W x 3 (RGB), not {'x'.join(map(str, image.shape))}")
        image = np.ascontiguousarray(image[..., :3])
        image = torch.from_numpy(image if image.flags.writeable else image.copy()).permute(2, 0, 1)
    if not isinstance(image, Tensor):
        raise UserError(f"cannot read an image from a {type(image).__name__}: give a path, a PIL image, "
                        "an H x W x 3 uint8 array or a 3 x H x W tensor")
    if image.ndim == 3 and image.shape[0] != 3 and image.shape[-1] == 3:
        image = image.permute(2, 0, 1)
    if image.ndim != 3 or image.shape[0] != 3:
        raise UserError(f"an image tensor must be 3 x H x W, not {'x'.join(map(str, image.shape))}")
    if image.dtype == torch.uint8:
        return image.cpu()
    if image.is_floating_point():
        return image.detach().float().cpu()
    raise UserError(f"an image tensor must be uint8 or float in [0, 1], not {image.dtype}")


def _as_float(images: Sequence[Tensor]) -> Tensor:
    """Same-size 3 x H x W images -> N x 3 x H x W float in [0, 1]."""
    batch = torch.stack([im.float() / 255 if im.dtype == torch.uint8 else im.float() for im in images])
    return batch


def group_by_size(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size`` same-size images (first-seen size order)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, size in enumerate(sizes):
        groups[tuple(size)].append(i)
    step = max(1, batch_size)
    return [idx[k : k + step] for idx in groups.values() for k in range(0, len(idx), step)]


# ----------------------------------------------------------------------------- backends
class TorchRunner:
    """N x 3 x H x W normalised float -> N x K x H x W logits with a PyTorch module."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.module, self.device = module, device
        # TorchScript's profiling executor re-profiles every call under inference_mode (seconds per call): no_grad
        self.grad_off = torch.no_grad if isinstance(module, torch.jit.ScriptModule) else torch.inference_mode

    def __call__(self, x: Tensor) -> Tensor:
        with self.grad_off():
            return self.module(x.to(self.device))


class OnnxRunner:
    """The same through an onnxruntime session; a static graph gets its own size (resized in and out)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.fixed_size = tuple(shape[2:4]) if all(isinstance(s, int) for s in shape[2:4]) else None

    def __call__(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if self.fixed_size and (h, w) != self.fixed_size:
            x = F.interpolate(x, size=self.fixed_size, mode="bilinear", align_corners=False)
        chunk = self.fixed_batch or len(x)
        outs = [self.session.run(None, {self.input_name: x[i : i + chunk].cpu().numpy()})[0] for i in range(0, len(x), chunk)]
        logits = torch.from_numpy(np.concatenate(outs))
        if tuple(logits.shape[-2:]) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits


def default_palette(n: int) -> list[list[int]]:
    """The Cityscapes colours for 19 classes, otherwise distinct generated colours."""
    from .data.cityscapes_labels import CLASS_COLORS

    if n <= len(CLASS_COLORS):
        return [list(c) for c in CLASS_COLORS[:n]]
    rng = np.random.default_rng(0)
    return [list(c) for c in CLASS_COLORS] + rng.integers(0, 256, (n - len(CLASS_COLORS), 3)).tolist()


# ----------------------------------------------------------------------------- the segmenter
class Segmenter:
    """A loaded model ready to segment images (see the module docstring)."""

    def __init__(
        self,
        run: Callable[[Tensor], Tensor],
        *,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        meta: dict[str, Any] | None = None,
        model: nn.Module | None = None,
        device: torch.device | str = "cpu",
        name: str = "model",
        source: str = "",
    ) -> None:
        meta = dict(meta or {})
        self.run = run
        self.model = model
        self.meta = meta
        self.num_classes = int(num_classes)
        self.name = name
        self.source = source
        self.device = torch.device(device)
        self.mean = torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1)
        self.std = torch.tensor([float(v) for v in std]).view(1, 3, 1, 1)
        self.classes: list[str] = list(meta.get("classes") or [f"class {i}" for i in range(self.num_classes)])
        self.colors: list[list[int]] = [list(c) for c in (meta.get("colors") or default_palette(self.num_classes))]
        self.backend = "onnxruntime" if isinstance(run, OnnxRunner) else "torch"

    def __repr__(self) -> str:
        return f"Segmenter({self.name}, {self.num_classes} classes, {self.backend} on {self.device}, from {self.source})"

    @property
    def label_dtype(self) -> torch.dtype:
        return torch.uint8 if self.num_classes <= 255 else torch.int64

    def normalize(self, batch: Tensor) -> Tensor:
        """N x 3 x H x W in [0, 1] -> the model's normalised input."""
        return (batch - self.mean.to(batch.device)) / self.std.to(batch.device)

    def logits(self, images: Tensor | Sequence[Any]) -> Tensor:
        """N x K x H x W logits of same-size images (a list, or an N x 3 x H x W tensor in [0, 1] or uint8)."""
        if isinstance(images, Tensor) and images.ndim == 4:
            batch = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        else:
            tensors = [to_image_tensor(im) for im in images]
            sizes = {tuple(t.shape[-2:]) for t in tensors}
            if len(sizes) > 1:
                raise UserError(f"logits() needs images of one size, got {sorted(sizes)}; use predict_batch")
            batch = _as_float(tensors)
        if self.backend == "torch":
            batch = batch.to(self.device)
        return self.run(self.normalize(batch))

    def _labels(self, batch: Tensor) -> Tensor:
        return self.logits(batch).argmax(1).to("cpu", self.label_dtype)

    def predict(self, image: Any) -> Tensor:
        """H x W train ids (uint8, or int64 past 255 classes) of one image, at its own size."""
        return self._labels(_as_float([to_image_tensor(image)]))[0]

    __call__ = predict

    def predict_batch(self, images: Iterable[Any], batch_size: int = 8) -> list[Tensor]:
        """``predict`` for many images; same-size images run together, ``batch_size`` at a time."""
        tensors = [to_image_tensor(im) for im in images]
        results: list[Tensor | None] = [None] * len(tensors)
        for idx in group_by_size([tuple(t.shape[-2:]) for t in tensors], batch_size):
            for i, labels in zip(idx, self._labels(_as_float([tensors[i] for i in idx]))):
                results[i] = labels
        return results  # type: ignore[return-value]

    def colorize(self, labels: Any) -> np.ndarray:
        """H x W train ids -> H x W x 3 uint8 in this model's class colours."""
        return _colorize(labels, self.colors)

    def overlay(self, image: Any, labels: Any, alpha: float = 0.5) -> np.ndarray:
        """The image with its colourised labels blended over it (H x W x 3 uint8)."""
        img = to_image_tensor(image)
        if img.is_floating_point():
            img = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        return _overlay(img.permute(1, 2, 0).numpy(), labels, self.colors, alpha)


# ----------------------------------------------------------------------------- loading
def load(weights: str | Path, device: str | torch.device = "cpu", *, fast: bool = True) -> Segmenter:
    """A :class:`Segmenter` from a run directory, a ``.safetensors`` file, an ``.onnx`` file written by
    ``aticnet export`` (run with onnxruntime) or a TorchScript file written by ``aticnet export``.

    With ``fast`` (the default) a PyTorch model runs with its BatchNorms folded into the convs
    (:func:`aticnet.fast.optimize_for_inference`, float32: the same logits to float rounding);
    ``m.model`` stays the unmodified module.
    """
    path = Path(weights)
    device = pick_device(device)
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path, device)
    if path.suffix.lower() in TORCHSCRIPT_EXTENSIONS:
        return _load_torchscript(path, device)
    from .checkpoint import load_model

    model, meta = load_model(path, device)
    cfg = model.config
    runner = optimize_for_inference(model) if fast else model
    return Segmenter(TorchRunner(runner, device), num_classes=cfg.num_classes, mean=cfg.mean, std=cfg.std, meta=meta,
                     model=model, device=device, name=cfg.name, source=str(path))


def _load_onnx(path: Path, device: torch.device) -> Segmenter:
    if not path.is_file():
        raise UserError(f"{path}: weights not found")
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"{path}: running ONNX models needs onnxruntime (pip install 'aticnet[export]')") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise UserError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:160]})") from None
    meta = _decode_meta(_json_values(session.get_modelmeta().custom_metadata_map), path)
    config = meta.pop("model_config", {}) or {}
    return Segmenter(OnnxRunner(session), num_classes=config.get("num_classes", len(meta.get("classes", []))),
                     mean=meta.pop("mean", config.get("mean")), std=meta.pop("std", config.get("std")), meta=meta,
                     device=device if "CUDAExecutionProvider" in providers else "cpu",
                     name=config.get("name", path.stem), source=str(path))


def _load_torchscript(path: Path, device: torch.device) -> Segmenter:
    if not path.is_file():
        raise UserError(f"{path}: weights not found")
    extra = {META_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as e:
        raise UserError(f"{path}: not a TorchScript model ({str(e).splitlines()[0][:120]})") from None
    raw = extra[META_FILE]
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        meta = {}
    meta = _decode_meta(meta, path)
    config = meta.pop("model_config", {}) or {}
    return Segmenter(TorchRunner(module.eval(), device), num_classes=config["num_classes"], mean=config["mean"],
                     std=config["std"], meta=meta, model=module, device=device, name=config.get("name", path.stem),
                     source=str(path))


def export_meta(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata an exported file carries: ``meta`` (classes, colors...), the model config, mean and std.

    ONNX keeps each value as a JSON string in ``metadata_props``; TorchScript keeps the whole dict as
    one JSON file (``aticnet.json``) among its extra files."""
    cfg = model.config
    return {**meta, "model_config": cfg.to_dict(), "num_classes": cfg.num_classes, "mean": list(cfg.mean),
            "std": list(cfg.std)}


def _decode_meta(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """Check that an exported file's metadata has what a Segmenter needs; fill ``model_config``."""
    config = dict(meta.get("model_config") or {})
    if not (config.get("num_classes") or meta.get("num_classes")) or not (meta.get("mean") or config.get("mean")):
        raise UserError(f"{path}: no aticnet metadata (classes, mean, std); write it with 'aticnet export'")
    config.setdefault("num_classes", meta.get("num_classes"))
    return {**meta, "model_config": config}


def _json_values(props: dict[str, str]) -> dict[str, Any]:
    out = {}
    for k, v in props.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out
