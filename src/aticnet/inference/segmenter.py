"""Using a trained model from Python.

>>> import aticnet
>>> m = aticnet.load("runs/demo/aticnet")          # a run, .safetensors, .onnx, OpenVINO .xml or TorchScript
>>> labels = m.predict("street.png")               # H x W train ids (uint8 tensor) at the image's size
>>> picture = aticnet.overlay(image, labels, m.colors)
>>> fast = aticnet.load("model.int8.xml", precision="bf16", infer_scale=0.75)   # OpenVINO int8, 3/4 size

``predict`` takes a path, a PIL image, an H x W x 3 uint8 numpy array (float arrays are
[0, 1]) or a 3 x H x W tensor (uint8, or float in [0, 1]). The image is scaled to [0, 1]
and normalised with the model's own ``config.mean`` / ``config.std``, so the caller never
normalises. The network runs on one of three engines (``backend``: torch, onnxruntime,
openvino; ``aticnet.inference.backends``) and returns low-resolution logits; the labels
at the image's size come from ``aticnet.inference.labels.labels_from_logits``, equal
to the models' own bilinear upsample + argmax and several times faster. ``m.model`` is
the ``nn.Module`` when the engine is PyTorch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import place_on_device
from ..utils.distributed import pick_device
from ..utils.errors import UserError
from .backends import (
    BACKENDS,
    OpenVINORunner,
    TorchRunner,
    compile_openvino,
    convert_to_openvino,
    load_onnx,
    load_openvino,
    load_torchscript,
    trained_scale,
)
from .fast import DTYPES, optimize_for_inference
from .images import as_float, default_palette, group_by_size, scaled_size, to_image_tensor
from .labels import labels_from_logits
from .overlay import colorize as _colorize
from .overlay import overlay as _overlay

log = logging.getLogger(__name__)
TORCHSCRIPT_EXTENSIONS = (".ts", ".torchscript", ".pt", ".pth")


# ----------------------------------------------------------------------------- the segmenter
class Segmenter:
    """A loaded model ready to segment images: [`aticnet.load`][aticnet.load] makes one from any deployable form.

    An image may be a file path, a PIL image, an H x W x 3 uint8 numpy array (a float array is read as [0, 1]) or
    a 3 x H x W torch tensor (uint8, or float in [0, 1]). The segmenter scales it to [0, 1] and normalises it with
    the model's own mean and std, so the caller never normalises. The network runs on one engine (PyTorch, ONNX
    Runtime or OpenVINO) and returns low-resolution logits; the labels at the image's size come from
    [`labels_from_logits`][aticnet.inference.labels.labels_from_logits], equal to the model's own bilinear upsample
    and argmax and several times faster.

    Examples:
        >>> import aticnet
        >>> m = aticnet.load("aticnet-camvid")
        >>> labels = m.predict("street.png")        # H x W uint8 tensor of class ids
        >>> m.classes[int(labels[0, 0])]            # the class of the top-left pixel, e.g. 'Sky'
        >>> picture = m.overlay("street.png", labels)

    Args:
        runner: the engine: maps a normalised N x 3 x H x W batch to N x K x H/s x W/s logits, s being its
            ``output_stride`` attribute (1 when it has none).
        num_classes: K, the number of classes.
        mean: the model's per-channel input mean, on [0, 1] pixels.
        std: the model's per-channel input standard deviation.
        meta: what the weights file says besides the model config: ``classes`` and ``colors`` among others.
        model: the ``nn.Module``, when the engine is PyTorch.
        device: where PyTorch runs the network.
        name: the model's name, for messages.
        source: where the weights came from, for messages.
        align_corners: the model's bilinear convention, for the labels step.
        infer_scale: run the network at this multiple of each image's size (labels still come at the image's
            own size).

    Attributes:
        classes (list[str]): the class names, in class-id order.
        colors (list[list[int]]): an RGB colour per class, as overlays and colour masks draw them.
        num_classes (int): K.
        backend (str): the engine: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``.
        model (nn.Module | None): the unmodified module when the engine is PyTorch, else None.
        infer_scale (float): the network's scale, as given.
    """

    def __init__(
        self,
        runner: Any,
        *,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        meta: dict[str, Any] | None = None,
        model: nn.Module | None = None,
        device: torch.device | str = "cpu",
        name: str = "model",
        source: str = "",
        align_corners: bool = True,
        infer_scale: float = 1.0,
    ) -> None:
        meta = dict(meta or {})
        if infer_scale <= 0:
            raise UserError(f"infer_scale must be positive, not {infer_scale}")
        self.run = runner
        self.model = model
        self.meta = meta
        self.num_classes = int(num_classes)
        self.name = name
        self.source = source
        self.device = torch.device(device)
        self.align_corners = align_corners
        self.infer_scale = float(infer_scale)
        self.mean = torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1)
        self.std = torch.tensor([float(v) for v in std]).view(1, 3, 1, 1)
        self.classes: list[str] = list(meta.get("classes") or [f"class {i}" for i in range(self.num_classes)])
        self.colors: list[list[int]] = [list(c) for c in (meta.get("colors") or default_palette(self.num_classes))]
        self.backend: str = getattr(runner, "backend", "torch")

    def __repr__(self) -> str:
        scale = f", infer_scale {self.infer_scale:g}" if self.infer_scale != 1 else ""
        return (f"Segmenter({self.name}, {self.num_classes} classes, {self.backend} on {self.device}{scale}, "
                f"from {self.source})")

    @property
    def label_dtype(self) -> torch.dtype:
        return torch.uint8 if self.num_classes <= 255 else torch.int64

    def normalize(self, batch: Tensor) -> Tensor:
        """The model's normalised input.

        Args:
            batch: N x 3 x H x W float images in [0, 1].

        Returns:
            N x 3 x H x W, minus the model's mean, divided by its std.
        """
        return (batch - self.mean.to(batch.device)) / self.std.to(batch.device)

    def network_logits(self, x: Tensor, infer_scale: float | None = None) -> Tensor:
        """The network's own output: low-resolution logits.

        Args:
            x: N x 3 x H x W normalised images.
            infer_scale: this call's network scale (None: the segmenter's own).

        Returns:
            N x K x h x w logits, (h, w) being (H, W) times the scale, divided by the engine's output stride.
        """
        scale = self.infer_scale if infer_scale is None else infer_scale
        if scale != 1:
            x = F.interpolate(x, size=scaled_size(x.shape[-2:], scale), mode="bilinear", align_corners=False,
                              antialias=scale < 1)
        if self.backend == "torch":
            x = x.to(self.device)
        return self.run(x)

    def labels_of_normalized(self, x: Tensor, infer_scale: float | None = None) -> Tensor:
        """Class ids of normalised images, at their size.

        Args:
            x: N x 3 x H x W normalised images.
            infer_scale: this call's network scale (None: the segmenter's own).

        Returns:
            N x H x W class ids on the CPU (uint8, or int64 past 255 classes).
        """
        low = self.network_logits(x, infer_scale)
        return labels_from_logits(low, tuple(x.shape[-2:]), self.align_corners).to("cpu", self.label_dtype)

    def logits(self, images: Tensor | Sequence[Any], infer_scale: float | None = None) -> Tensor:
        """Class scores of same-size images, at their size.

        Args:
            images: a list of images of one size (any form [`predict`][aticnet.Segmenter.predict] takes), or an
                N x 3 x H x W tensor (uint8, or float in [0, 1]).
            infer_scale: this call's network scale (None: the segmenter's own).

        Returns:
            N x K x H x W float logits, bilinearly upsampled from the network's output.

        Raises:
            UserError: the images differ in size (use [`predict_batch`][aticnet.Segmenter.predict_batch]).
        """
        if isinstance(images, Tensor) and images.ndim == 4:
            batch = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        else:
            tensors = [to_image_tensor(im) for im in images]
            sizes = {tuple(t.shape[-2:]) for t in tensors}
            if len(sizes) > 1:
                raise UserError(f"logits() needs images of one size, got {sorted(sizes)}; use predict_batch")
            batch = as_float(tensors)
        low = self.network_logits(self.normalize(batch), infer_scale)
        if tuple(low.shape[-2:]) == tuple(batch.shape[-2:]):
            return low
        return F.interpolate(low, size=batch.shape[-2:], mode="bilinear", align_corners=self.align_corners)

    def predict(self, image: Any, *, infer_scale: float | None = None) -> Tensor:
        """The class of every pixel of one image. Calling the segmenter, ``m(image)``, does the same.

        Args:
            image: a file path (PNG, JPEG, ...), a PIL image, an H x W x 3 uint8 numpy array (float arrays are read
                as [0, 1]), or a 3 x H x W torch tensor (uint8, or float in [0, 1]).
            infer_scale: this call's network scale (None: the segmenter's own).

        Returns:
            An H x W torch tensor of class ids at the image's own size, on the CPU, uint8 (int64 past 255
                classes). ``m.classes[i]`` names id i; ``labels.numpy()`` gives a numpy array.

        Raises:
            UserError: the image cannot be read, or is not H x W x 3 / 3 x H x W.
        """
        return self.labels_of_normalized(self.normalize(as_float([to_image_tensor(image)])), infer_scale)[0]

    __call__ = predict

    def predict_batch(self, images: Iterable[Any], batch_size: int = 8, *, infer_scale: float | None = None
                      ) -> list[Tensor]:
        """[`predict`][aticnet.Segmenter.predict] for many images; same-size images run through the network
        together.

        Args:
            images: images of any sizes, in any form ``predict`` takes.
            batch_size: at most this many images per pass.
            infer_scale: this call's network scale (None: the segmenter's own).

        Returns:
            One H x W class-id tensor per image, in input order.
        """
        tensors = [to_image_tensor(im) for im in images]
        results: list[Tensor | None] = [None] * len(tensors)
        for idx in group_by_size([tuple(t.shape[-2:]) for t in tensors], batch_size):
            batch = self.normalize(as_float([tensors[i] for i in idx]))
            for i, labels in zip(idx, self.labels_of_normalized(batch, infer_scale)):
                results[i] = labels
        return results  # type: ignore[return-value]

    def colorize(self, labels: Any) -> np.ndarray:
        """Class ids drawn in this model's class colours (ids past the classes, 255 among them, are black).

        Args:
            labels: H x W class ids (a tensor or an array), e.g. from [`predict`][aticnet.Segmenter.predict].

        Returns:
            An H x W x 3 uint8 RGB numpy array.
        """
        return _colorize(labels, self.colors)

    def overlay(self, image: Any, labels: Any, alpha: float = 0.5) -> np.ndarray:
        """The image with its class colours blended over it.

        Args:
            image: the image, in any form [`predict`][aticnet.Segmenter.predict] takes.
            labels: its H x W class ids.
            alpha: the colours' opacity, 0 to 1 (1: the colours alone).

        Returns:
            An H x W x 3 uint8 RGB numpy array.
        """
        img = to_image_tensor(image)
        if img.is_floating_point():
            img = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        return _overlay(img.permute(1, 2, 0).numpy(), labels, self.colors, alpha)


# ----------------------------------------------------------------------------- loading
# The engine a run prefers on a CPU where it is installed: OpenVINO fp32 beats PyTorch's fastest fp32 path on
# every CPU measured here (README "Deploying on a CPU"); converting costs a few seconds when loading.
DEFAULT_CPU_ENGINE = "openvino"


def default_backend(device: torch.device, fast: bool = True) -> str:
    """The engine a run gets by default: ``DEFAULT_CPU_ENGINE`` on a CPU where it is installed, else
    PyTorch. ``fast=False`` asks for the module as it is: PyTorch."""
    if device.type != "cpu" or not fast:
        return "torch"
    import importlib.util

    return DEFAULT_CPU_ENGINE if importlib.util.find_spec(DEFAULT_CPU_ENGINE) is not None else "torch"


def load(
    weights: str | Path,
    device: str | torch.device = "cpu",
    *,
    backend: str | None = None,
    fast: bool = True,
    infer_scale: float | None = None,
    precision: str = "32",
) -> Segmenter:
    """A [`Segmenter`][aticnet.Segmenter] from any deployable form: the way to segment images from Python.

    Examples:
        >>> import aticnet
        >>> m = aticnet.load("aticnet-camvid")                     # OpenVINO on a CPU where it is installed
        >>> labels = m.predict("street.png")                        # H x W uint8 tensor of class ids
        >>> fast = aticnet.load("model.int8.xml", infer_scale=0.75)  # an int8 file, at 3/4 of the image size

    Args:
        weights: a shipped name (``"aticnet-camvid"``; [`aticnet.list_weights`][aticnet.list_weights]), a run
            directory, a ``.safetensors`` file or a saved-pretrained folder (PyTorch, or OpenVINO converted in
            memory), an ``.onnx`` file (onnxruntime or OpenVINO; fp32 or int8), an OpenVINO IR ``.xml`` (fp32 or
            int8) or a TorchScript file written by ``aticnet export``.
        device: "cpu", "cuda" or "auto"; OpenVINO runs on the CPU whatever is asked (a warning says so).
        backend: torch, onnxruntime or openvino, where a file can run on more than one (default: the file's own;
            for weights, OpenVINO on a CPU where it is installed, else PyTorch).
        fast: PyTorch runs the model with its BatchNorms folded into the convs and channels-last
            ([`optimize_for_inference`][aticnet.inference.fast.optimize_for_inference]: the same logits to float
            rounding); ``m.model`` stays the unmodified module.
        infer_scale: run the network at this multiple of each image's size; labels come at the image's size.
            None: the scale the weights were trained for (their ``infer_scale``; 1 when they do not say).
        precision: "32"; "bf16" computes in bfloat16 (OpenVINO on CPUs that have it, or PyTorch with its weights in
            bf16: close, not equal, labels); "16" is PyTorch's float16 on CUDA.

    Returns:
        The segmenter; its ``predict(image)`` gives H x W class ids at the image's size.

    Raises:
        UserError: the weights are not found, or the engine or precision does not suit them.
    """
    path = Path(weights)
    suffix = path.suffix.lower()
    if backend is not None and backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    device = pick_device(device)
    if suffix in (".onnx", ".xml") or suffix in TORCHSCRIPT_EXTENSIONS:
        if not path.is_file():
            raise UserError(f"{path}: weights not found")
        own = {".onnx": "onnxruntime", ".xml": "openvino"}.get(suffix, "torch")
        allowed = {".onnx": ("onnxruntime", "openvino"), ".xml": ("openvino",)}.get(suffix, ("torch",))
        chosen = backend or own
        if chosen not in allowed:
            raise UserError(f"{path}: a {suffix} file runs on {' or '.join(allowed)}, not {chosen}")
        if suffix == ".onnx":
            runner, meta = load_onnx(path, device, chosen, precision)
        elif suffix == ".xml":
            runner, meta = load_openvino(path, precision)
        else:
            if precision != "32":
                raise UserError(f"{path}: a TorchScript file runs in the precision it was traced in; drop --precision")
            runner, meta = load_torchscript(path, device)
        config = meta.pop("model_config")
        on_device = chosen == "torch" or (chosen == "onnxruntime" and "CUDAExecutionProvider" in runner.session.get_providers())
        if device.type != "cpu" and not on_device:
            log.warning("%s runs on the CPU (%s%s), not on %s", path, chosen,
                        ": this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
                        if chosen == "onnxruntime" else " runs on the CPU", device)
        return Segmenter(runner, num_classes=config["num_classes"], mean=meta.pop("mean", config.get("mean")),
                         std=meta.pop("std", config.get("std")), meta=meta, device=device if on_device else "cpu",
                         model=getattr(runner, "module", None), name=config.get("name", path.stem), source=str(path),
                         align_corners=config.get("align_corners", True), infer_scale=trained_scale(meta, infer_scale))
    from ..models.weights import load_model

    model, meta = load_model(path, device)
    return segmenter_of_module(model, meta, device, backend=backend, fast=fast, infer_scale=infer_scale,
                               precision=precision, source=str(path))


def segmenter_of_module(model: nn.Module, meta: dict[str, Any], device: torch.device, *, backend: str | None = None,
                        fast: bool = True, infer_scale: float | None = None, precision: str = "32",
                        source: str = "") -> Segmenter:
    """A ``Segmenter`` running an aticnet model (eval mode, on ``device``) on ``backend`` (default:
    ``default_backend``): PyTorch, BatchNorms folded with ``fast``, or OpenVINO, converted here."""
    cfg = model.config
    backend = backend or default_backend(device, fast)
    if backend == "onnxruntime":
        raise UserError(f"{source or cfg.name}: export it to ONNX first (aticnet export --format onnx) to run it "
                        "in onnxruntime")
    if backend == "openvino":
        if device.type != "cpu":
            raise UserError("--backend openvino runs on the CPU")
        example = torch.randn(1, cfg.in_channels, 256, 512)
        runner: Any = OpenVINORunner(compile_openvino(convert_to_openvino(model, example), precision),
                                     getattr(model, "output_stride", 1))
    else:
        if precision not in DTYPES:
            raise UserError(f"--precision must be one of {', '.join(DTYPES)}, not {precision!r}")
        if precision == "16" and device.type != "cuda":
            raise UserError("--precision 16 runs on CUDA; on a CPU use bf16")
        if precision != "32" and not fast:
            raise UserError(f"--precision {precision} on PyTorch runs the optimised model (weights in {precision}); "
                            "it cannot be combined with fast=False")
        runner = TorchRunner(optimize_for_inference(model, dtype=DTYPES[precision]) if fast
                             else place_on_device(model, device), device)
    return Segmenter(runner, num_classes=cfg.num_classes, mean=cfg.mean, std=cfg.std, meta=meta, model=model,
                     device=device if backend != "openvino" else "cpu", name=cfg.name, source=source,
                     align_corners=cfg.align_corners, infer_scale=trained_scale(meta, infer_scale))
