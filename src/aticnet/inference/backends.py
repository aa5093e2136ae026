"""Runners: one deployable form run by one engine, all with the same contract.

``runner(x)`` takes an N x 3 x H x W float32 batch, normalised as the model expects, and returns
N x K x h x w logits as a CPU or device tensor, where (h, w) is (H, W) / ``runner.output_stride``
(4 for the ICNet family's low-res head, 1 for a graph that upsamples inside). ``aticnet.inference.segmenter.Segmenter``
turns them into labels at the image's size (``aticnet.inference.labels``).

* ``TorchRunner``: an ``nn.Module`` (or a TorchScript file), on the CPU or CUDA.
* ``OnnxRuntimeRunner``: an ``.onnx`` file (fp32, or int8 QDQ) in onnxruntime.
* ``OpenVINORunner``: an OpenVINO IR (``.xml`` + ``.bin``, fp32 or int8) or an ``.onnx`` file in
  OpenVINO, on the CPU, in fp32 or (``precision="bf16"``) with bf16 inference where the CPU has it.

Every exported file carries the same metadata (classes, colours, mean, std, model config, output
stride): ONNX in ``metadata_props`` (one JSON string per key), OpenVINO in the IR's ``rt_info``
under ``aticnet`` (one JSON string), TorchScript as ``aticnet.json`` among its extra files.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..utils.errors import UserError

META_FILE = "aticnet.json"  # TorchScript's extra file
RT_INFO_KEY = "aticnet"  # OpenVINO's rt_info entry
BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = {"32": "f32", "bf16": "bf16"}  # ours -> OpenVINO's inference precision hint


class TorchRunner:
    """A PyTorch module: its low-res head (``forward_lowres``) when it has one, else its full-size output."""

    backend = "torch"

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.module, self.device = module, device
        self.lowres = hasattr(module, "forward_lowres")
        self.output_stride = getattr(module, "output_stride", 1) if self.lowres else 1
        params = next(module.parameters(), None)
        self.dtype = params.dtype if params is not None and params.is_floating_point() else torch.float32
        # TorchScript's profiling executor re-profiles every call under inference_mode (seconds per call): no_grad
        self.grad_off = torch.no_grad if isinstance(module, torch.jit.ScriptModule) else torch.inference_mode

    def __call__(self, x: Tensor) -> Tensor:
        x = x.to(self.device, self.dtype)
        with self.grad_off():
            return (self.module.forward_lowres if self.lowres else self.module)(x).float()


class OnnxRuntimeRunner:
    """An onnxruntime session; a graph with a fixed input size gets its input resized to it and back."""

    backend = "onnxruntime"

    def __init__(self, session: Any, output_stride: int) -> None:
        self.session = session
        self.output_stride = output_stride
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.fixed_size = tuple(shape[2:4]) if all(isinstance(s, int) for s in shape[2:4]) else None

    def __call__(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if self.fixed_size and (h, w) != self.fixed_size:
            x = torch.nn.functional.interpolate(x, size=self.fixed_size, mode="bilinear", align_corners=False)
        chunk = self.fixed_batch or len(x)
        x = x.cpu().numpy()
        outs = [self.session.run(None, {self.input_name: x[i : i + chunk]})[0] for i in range(0, len(x), chunk)]
        logits = torch.from_numpy(np.concatenate(outs))
        if self.fixed_size and (h, w) != self.fixed_size and self.output_stride == 1:
            logits = torch.nn.functional.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits


class OpenVINORunner:
    """A model compiled by OpenVINO for the CPU (latency hint), one inference request per call."""

    backend = "openvino"

    def __init__(self, compiled: Any, output_stride: int) -> None:
        self.compiled = compiled
        self.output_stride = output_stride
        self.request = compiled.create_infer_request()

    def __call__(self, x: Tensor) -> Tensor:
        self.request.infer({0: np.ascontiguousarray(x.cpu().numpy())})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


# ----------------------------------------------------------------------------- metadata
def file_meta(model: nn.Module, meta: dict[str, Any], output_stride: int) -> dict[str, Any]:
    """What every exported file carries: ``meta`` (classes, colours...), the model config, mean, std, output stride."""
    cfg = model.config
    return {**meta, "model_config": cfg.to_dict(), "num_classes": cfg.num_classes, "mean": list(cfg.mean),
            "std": list(cfg.std), "output_stride": output_stride}


def checked_meta(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """An exported file's metadata with what a Segmenter needs, or a UserError naming the file."""
    config = dict(meta.get("model_config") or {})
    if not (config.get("num_classes") or meta.get("num_classes")) or not (meta.get("mean") or config.get("mean")):
        raise UserError(f"{path}: no aticnet metadata (classes, mean, std); write it with 'aticnet export'")
    config.setdefault("num_classes", meta.get("num_classes"))
    return {**meta, "model_config": config, "output_stride": int(meta.get("output_stride", 1))}


def trained_scale(meta: dict[str, Any], infer_scale: float | None = None) -> float:
    """``infer_scale`` when given, else the scale the weights were trained for (their metadata's ``infer_scale``:
    a model trained on frames upsampled 2x runs on images upsampled 2x), else 1."""
    if infer_scale is not None:
        return float(infer_scale)
    return float(meta.get("infer_scale") or 1.0)


def _json_values(props: dict[str, str]) -> dict[str, Any]:
    out = {}
    for k, v in props.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out


def onnx_meta(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return checked_meta(_json_values({p.key: p.value for p in model.metadata_props}), path)


def openvino_meta(model: Any, path: Path) -> dict[str, Any]:
    try:
        raw = model.get_rt_info(RT_INFO_KEY).astype(str)
    except RuntimeError:
        raw = ""
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        meta = {}
    return checked_meta(meta, path)


# ----------------------------------------------------------------------------- loading
def _needs(module: str, extra: str, path: Path) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{path}: running it needs {module} (pip install 'aticnet[{extra}]')") from None


def load_onnx(path: Path, device: torch.device, backend: str = "onnxruntime",
              precision: str = "32") -> tuple[Any, dict[str, Any]]:
    """(runner, metadata) of an ``.onnx`` file in onnxruntime (CUDA when asked and available) or OpenVINO."""
    if backend == "openvino":
        return load_openvino(path, precision)
    ort = _needs("onnxruntime", "export", path)
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    # onnxruntime's workers spin on the cores for a while after each run, waiting for more work, and so take
    # them from whatever runs next: the labels step, the next frame's decoding, another engine (a PyTorch
    # pass right after a run took 78 ms instead of 44 at 360x480 on 2 cores). Spinning stays on within a run
    # (its fast path) and stops when the run ends (onnxruntime pull 11841).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise UserError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:160]})") from None
    meta = _json_values(session.get_modelmeta().custom_metadata_map)
    meta = checked_meta(meta, path)
    return OnnxRuntimeRunner(session, meta["output_stride"]), meta


@functools.cache
def openvino_core() -> Any:
    """The process's one ``openvino.Core``, kept until exit. Each Core starts its own CPU plugin, and the
    plugin installs a signal stack (sigaltstack, big enough for AMX's signal frames: openvinotoolkit/openvino
    pull 11894) on the thread that starts it, and puts back the one it found when it goes. Two Cores that go
    in the order they came (not the reverse) leave the thread pointing at a freed stack, and the next signal
    (a child process ending) kills the process with SIGSEGV (openvino 2026.4;
    tests/deploy/test_deploy.py::test_openvino_models_can_go_in_any_order). One Core, as OpenVINO advises anyway,
    never goes before the end."""
    import openvino as ov

    core = ov.Core()
    core.get_property("CPU", "FULL_DEVICE_NAME")  # starts the CPU plugin now, not at the first compile
    return core


def _read_openvino(path: Path) -> Any:
    _needs("openvino", "deploy", path)
    try:
        return openvino_core().read_model(str(path))
    except RuntimeError as e:
        raise UserError(f"{path}: OpenVINO cannot read it ({str(e).strip().splitlines()[0][:160]})") from None


def load_openvino(path: Path, precision: str = "32") -> tuple[OpenVINORunner, dict[str, Any]]:
    """(runner, metadata) of an OpenVINO IR (``.xml``) or ``.onnx`` file, compiled for the CPU."""
    model = _read_openvino(path)
    meta = onnx_meta(path) if path.suffix.lower() == ".onnx" else openvino_meta(model, path)
    return OpenVINORunner(compile_openvino(model, precision), meta["output_stride"]), meta


def deployed_meta(path: Path) -> dict[str, Any]:
    """The metadata of an ``.onnx`` or OpenVINO ``.xml`` file, read without compiling it."""
    return onnx_meta(path) if path.suffix.lower() == ".onnx" else openvino_meta(_read_openvino(path), path)


def compile_openvino(model: Any, precision: str = "32") -> Any:
    """``model`` compiled for the CPU for latency, computing in fp32 or bf16 (``precision`` "32" or "bf16")."""
    if precision not in PRECISIONS:
        raise UserError(f"OpenVINO runs in precision 32 or bf16, not {precision!r}")
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
    return openvino_core().compile_model(model, "CPU", config)


def convert_to_openvino(model: nn.Module, example: Tensor) -> Any:
    """The PyTorch model's low-res head as an in-memory OpenVINO model with free batch and size."""
    import openvino as ov

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return ov.convert_model(LowResolution(model).eval(), example_input=example, input=[(-1, 3, -1, -1)])


def load_torchscript(path: Path, device: torch.device) -> tuple[TorchRunner, dict[str, Any]]:
    """(runner, metadata) of a TorchScript file written by ``aticnet export --format torchscript``."""
    extra = {META_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as e:
        raise UserError(f"{path}: not a TorchScript model ({str(e).splitlines()[0][:120]})") from None
    try:
        meta = json.loads(extra[META_FILE]) if extra[META_FILE] else {}
    except json.JSONDecodeError:
        meta = {}
    return TorchRunner(module.eval(), device), checked_meta(meta, path)


class LowResolution(nn.Module):
    """``image -> logits`` at the model's output stride (``forward_lowres``): what deployed graphs compute."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model.forward_lowres(image)
