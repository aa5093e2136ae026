"""What the benchmark measures: our models and torchvision's peers, each run as a ``Variant``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..inference.fast import DTYPES, LabelPredictor, compile_module, logits_of, optimize_for_inference
from ..models import place_on_device
from ..utils.errors import UserError

DEFAULT_MODELS = ("icnet", "aticnet", "pspnet", "lraspp_mobilenet_v3", "deeplabv3_mobilenet_v3")
DEFAULT_TRAIN_MODELS = ("icnet", "aticnet")
TIMED_REGION = "float32 NCHW image on the device -> forward -> final upsample to HxW -> argmax -> labels"
FLOPS_NOTE = "FlopCounterMode: 2 x multiply-accumulates of convs and matmuls (resizes, pooling, argmax not counted)"


@dataclass(frozen=True)
class Variant:
    """How a model is run: the engine, the fast-path options, the precision, the labels step and the input scale."""

    channels_last: bool = False
    fold_bn: bool = False
    compile: bool = False
    precision: str = "32"  # "32", "bf16", "16"
    engine: str = "torch"  # "torch", "openvino", "onnxruntime"
    int8: bool = False  # post-training int8 (openvino: NNCF; onnxruntime: QDQ), calibrated on synthetic scenes
    refine: bool = False  # low-res logits + the exact labels step (inference.labels) instead of upsampling all
    infer_scale: float = 1.0  # the network runs at this multiple of the input size

    @property
    def name(self) -> str:
        if self.channels_last and self.fold_bn:
            parts = ["fast"]
        else:
            parts = [p for p, on in (("cl", self.channels_last), ("fold", self.fold_bn)) if on]
        parts += [p for p, on in (("ov", self.engine == "openvino"), ("ort", self.engine == "onnxruntime"),
                                  ("int8", self.int8), ("compile", self.compile)) if on]
        parts = parts or ["plain"]
        if self.precision != "32":
            parts.append(self.precision)
        if self.refine:
            parts.append("refine")
        if self.infer_scale != 1:
            parts.append(f"s{self.infer_scale:g}")
        return "+".join(parts)


def parse_variant(text: str, precision: str = "32") -> Variant:
    """'plain', 'fast', 'cl', 'fold', 'compile', 'bf16', '16', 'ov', 'ort', 'int8', 'refine', 'sS' joined by '+':
    'fast+refine', 'ov+int8+refine+s0.75'.

    ``fast`` = ``cl+fold``; ``ov``/``ort`` run the model in OpenVINO / onnxruntime (they always end at the
    low-res logits and take the exact labels step); ``sS`` runs the network at S x the input size. Without a
    precision token the variant takes ``precision``.
    """
    options: dict[str, Any] = {"channels_last": False, "fold_bn": False, "compile": False, "precision": precision}
    for token in text.lower().split("+"):
        token = token.strip()
        if token == "plain":
            continue
        if token == "fast":
            options.update(channels_last=True, fold_bn=True)
        elif token in ("cl", "channels_last"):
            options["channels_last"] = True
        elif token in ("fold", "compile", "int8", "refine"):
            options[{"fold": "fold_bn"}.get(token, token)] = True
        elif token in ("ov", "ort"):
            options.update(engine={"ov": "openvino", "ort": "onnxruntime"}[token], refine=True)
        elif token in ("bf16", "16", "fp16", "32", "fp32"):
            options["precision"] = {"fp16": "16", "fp32": "32"}.get(token, token)
        elif token.startswith("s") and _is_number(token[1:]) and float(token[1:]) > 0:
            options["infer_scale"] = float(token[1:])
        else:
            raise UserError(f"unknown variant part {token!r} in {text!r}; use plain, fast, cl, fold, compile, bf16, "
                            "16, ov, ort, int8, refine, s0.75")
    variant = Variant(**options)
    if variant.int8 and variant.engine == "torch":
        raise UserError(f"{text!r}: int8 runs on ov or ort (int8 PyTorch was slower than fp32 here; BENCHMARKS.md)")
    if variant.engine != "torch" and (variant.compile or variant.channels_last or variant.fold_bn):
        raise UserError(f"{text!r}: fast, cl, fold and compile are PyTorch options")
    if variant.engine == "onnxruntime" and variant.precision != "32":
        raise UserError(f"{text!r}: onnxruntime runs fp32 (or int8) here")
    return variant


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_benchmark_model(name: str, *, width: float | None = None, num_classes: int = 19, seed: int = 0) -> nn.Module:
    """An eval-mode model: one of ours with random weights (``width`` applies to the ICNet family; PSPNet keeps
    its own 1.0), a torchvision peer (its own widths, as torchvision builds it), or trained weights (a shipped
    name, a run directory or .safetensors file: what the deployed labels step is measured on, since random
    weights give noise, not regions)."""
    from pathlib import Path

    from ..models import MODEL_NAMES, PEER_NAMES, build_model
    from ..models.pretrained import is_weights_name, weight_names

    if Path(name).exists() or is_weights_name(name):
        from ..models.weights import load_model

        return load_model(name, "cpu")[0].eval()
    if name not in (*MODEL_NAMES, *PEER_NAMES):
        shipped = ", ".join(weight_names())
        raise UserError(f"unknown model {name!r}; choose from {', '.join((*MODEL_NAMES, *PEER_NAMES))}"
                        + (f", shipped weights ({shipped})" if shipped else "") + " or give a run directory")
    torch.manual_seed(seed)
    overrides = {"width": width} if width and name in MODEL_NAMES and name != "pspnet" else {}
    return build_model(name, num_classes=num_classes, **overrides).eval()


DEPLOYED_SUFFIXES = (".onnx", ".xml")  # files the benchmark runs as they are (aticnet.load), not rebuilt


def is_deployed_file(name: str) -> bool:
    return name.lower().endswith(DEPLOYED_SUFFIXES)


def deployed_architecture(path: str) -> nn.Module:
    """The network a deployed file holds, rebuilt with random weights from the file's metadata: its FLOPs and
    parameters, for the table (the file itself is what is timed)."""
    from pathlib import Path

    from ..inference.backends import deployed_meta
    from ..models import ModelConfig, model_from_config

    return model_from_config(ModelConfig.from_dict(deployed_meta(Path(path))["model_config"])).eval()


def prepare_deployed(path: str, variant: Variant, device: torch.device = torch.device("cpu")
                     ) -> tuple[Callable[[Tensor], Tensor], Callable[[], Any]]:
    """(image -> labels, context) of a deployed file run as it is: a variant picks only the engine (ov or ort, for
    an .onnx), the precision (bf16 on OpenVINO) and the input scale; fp32/int8 is the file's own. On a GPU only an
    .onnx file in an onnxruntime with its CUDA provider runs there; anything else is refused, not timed on the CPU
    under a GPU's name."""
    from ..inference.segmenter import load

    if variant.int8 or variant.channels_last or variant.fold_bn or variant.compile:
        raise UserError(f"{path}: a deployed file runs as it is; its variants take only ov, ort, bf16 and sS")
    seg = load(path, device, backend=None if variant.engine == "torch" else variant.engine,
               precision=variant.precision, infer_scale=variant.infer_scale)
    if seg.device.type != device.type:
        raise UserError(f"{path}: runs on the {seg.device.type} ({seg.backend}), not the {device.type}: benchmark it "
                        f"with --device {seg.device.type}" + (" (or install onnxruntime-gpu)" if path.endswith(".onnx") else ""))
    return seg.labels_of_normalized, contextlib.nullcontext


def prepare(model: nn.Module, variant: Variant, device: torch.device) -> tuple[Callable[[Tensor], Tensor], Callable[[], Any]]:
    """(image -> labels callable, context factory) running ``model`` as ``variant`` says.

    PyTorch: optimised variants go through ``optimize_for_inference`` (the dtype becomes the
    weights'); the plain variant in bf16/16 runs under autocast, as ``evaluate`` does. OpenVINO and
    onnxruntime get the model converted (and quantized, calibrated on synthetic scenes) here.
    """
    dtype = DTYPES[variant.precision]
    autocast: Callable[[], Any] = contextlib.nullcontext
    if variant.engine != "torch":
        if device.type != "cpu":
            raise UserError(f"variant {variant.name}: OpenVINO and onnxruntime are timed on the CPU; benchmark them "
                            "with --device cpu")
        return _EngineLabels(model, variant), autocast
    model = place_on_device(model, device)
    if variant.channels_last or variant.fold_bn:
        model = optimize_for_inference(model, channels_last=variant.channels_last, fold_bn=variant.fold_bn, dtype=dtype)
    elif dtype is not None:
        autocast = lambda: torch.autocast(device.type, dtype=dtype)
    predictor: nn.Module = (RefinedLabels(model) if variant.refine else LabelPredictor(model)).eval()
    if variant.compile:
        predictor = compile_module(predictor)  # the whole input -> labels, so the final resize and argmax fuse
    return (_Scaled(predictor, variant.infer_scale) if variant.infer_scale != 1 else predictor), autocast


class RefinedLabels(nn.Module):
    """image batch -> N x H x W labels: the low-res logits, then the exact labels step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        from ..inference.labels import labels_from_logits

        if not hasattr(self.model, "forward_lowres"):  # a torchvision peer upsamples inside
            return logits_of(self.model(image)).argmax(1)
        low = self.model.forward_lowres(image.to(next(self.model.parameters()).dtype)).float()
        return labels_from_logits(low, tuple(image.shape[-2:]), self.model.config.align_corners)


class _Scaled:
    """Run ``predictor`` at ``scale`` x the image size; labels at the image's size (nearest, for peers too)."""

    def __init__(self, predictor: Callable[[Tensor], Tensor], scale: float) -> None:
        self.predictor, self.scale = predictor, scale

    @property
    def module(self) -> Any:
        """What runs the network (its weights count in the memory figure)."""
        return self.predictor

    def __call__(self, image: Tensor) -> Tensor:
        from ..inference.images import scaled_size

        size = tuple(image.shape[-2:])
        small = torch.nn.functional.interpolate(image, size=scaled_size(size, self.scale), mode="bilinear",
                                                align_corners=False, antialias=self.scale < 1)
        labels = self.predictor(small)
        return torch.nn.functional.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


class _EngineLabels:
    """image batch -> labels through OpenVINO or onnxruntime: the low-res graph, then the exact labels step."""

    def __init__(self, model: nn.Module, variant: Variant) -> None:
        from ..inference import backends
        from ..inference.segmenter import Segmenter

        if not hasattr(model, "forward_lowres"):
            raise UserError(f"{model.config.name}: the ov and ort variants are for aticnet's models")
        self.variant = variant
        example = torch.randn(1, 3, 512, 1024)
        if variant.engine == "openvino":
            ov_model = backends.convert_to_openvino(model, example)
            if variant.int8:
                import nncf

                ov_model = nncf.quantize(ov_model, nncf.Dataset(_calibration(model)), subset_size=4,
                                         preset=nncf.QuantizationPreset.PERFORMANCE)
            runner: Any = backends.OpenVINORunner(backends.compile_openvino(ov_model, variant.precision),
                                                  model.output_stride)
        else:
            runner = _onnxruntime_runner(model, variant.int8)
        cfg = model.config
        self.segmenter = Segmenter(runner, num_classes=cfg.num_classes, mean=cfg.mean, std=cfg.std,
                                   align_corners=cfg.align_corners, infer_scale=variant.infer_scale)

    def __call__(self, image: Tensor) -> Tensor:
        return self.segmenter.labels_of_normalized(image)


def _calibration(model: nn.Module, count: int = 4, size: tuple[int, int] = (512, 1024)) -> list[Any]:
    """A few normalised synthetic street scenes: calibration for speed measurements (not for accuracy)."""
    import numpy as np

    from ..data.scenes import draw_scene

    mean = np.asarray(model.config.mean, np.float32)[:, None, None]
    std = np.asarray(model.config.std, np.float32)[:, None, None]
    scenes = [draw_scene(np.random.default_rng(i), *size)[0] for i in range(count)]
    return [((s.transpose(2, 0, 1).astype(np.float32) / 255 - mean) / std)[None] for s in scenes]


def _onnxruntime_runner(model: nn.Module, int8: bool) -> Any:
    import tempfile
    from pathlib import Path

    from ..deploy.export import export_onnx
    from ..deploy.quantize import _onnxruntime
    from ..inference import backends

    with tempfile.TemporaryDirectory(prefix="aticnet-bench-") as tmp:
        path = Path(tmp) / "model.onnx"
        if int8:
            _onnxruntime(model, {}, _calibration(model), path)
        else:
            export_onnx(model, {}, path, size=(512, 1024), dynamic=True, lowres=True)
        runner, _ = backends.load_onnx(path, torch.device("cpu"))
    return runner
