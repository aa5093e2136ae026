"""Weights to ONNX or TorchScript (``aticnet export``), checked against PyTorch.

The ONNX graph takes ``image``, float N x 3 x H x W normalised as the model expects
(``model.config.mean/std`` on [0, 1] pixels, also in the file's metadata), and returns
``logits``, N x K x H x W. The file's ``metadata_props`` carry ``classes``, ``colors``,
``mean``, ``std``, ``num_classes`` and ``model_config`` (JSON strings), so ``aticnet
predict --weights model.onnx`` and ``aticnet.load`` need nothing else.

Exporters (torch 2.9 and later): the default ONNX exporter is the ``torch.export`` based
one (``dynamo=True``), which writes opset 18 and up; ``--opset`` below 18 (or
``--exporter legacy``) uses the older TorchScript-based exporter (``dynamo=False``,
deprecated by PyTorch but still working). Adaptive average pooling, whose windows the
exporters would bake in for the traced size, is written as two matrix products while
exporting (``models/pyramid.py``), so ``--dynamic`` graphs hold for any N, H and W.

TorchScript is made with ``torch.jit.trace`` (``torch.jit`` is in maintenance mode in
PyTorch 2.x; scripting these models is not attempted); the metadata rides in the file as
``aticnet.json`` (``torch.jit.load(..., _extra_files=...)``).

After writing, the file is loaded back and run (onnxruntime, or ``torch.jit.load``) on
random input at ``--size`` (and, with ``--dynamic``, at a second size with other odd H
and W and batch 2); the maximum absolute difference from PyTorch is printed, and above
``--tolerance`` (1e-3) the command fails.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..inference.backends import META_FILE, RT_INFO_KEY, LowResolution, file_meta
from ..utils.errors import UserError

FORMATS = ("onnx", "torchscript", "openvino")
MIN_DYNAMO_OPSET = 18


class _ImageToLogits(nn.Module):
    """The eval-mode model with a fixed signature: ``image`` -> ``logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image)


def second_size(size: tuple[int, int]) -> tuple[int, int]:
    """Another size for the dynamic check: about 3/4 and 5/8 of ``size``, both odd."""
    h, w = size
    return max(33, round(h * 0.75)) | 1, max(33, round(w * 0.625)) | 1


def check_sizes(size: tuple[int, int], dynamic: bool) -> list[tuple[int, int, int, int]]:
    """Input shapes the check runs: the export size, and with ``dynamic`` a second size at batch 2."""
    shapes = [(1, 3, *size)]
    if dynamic:
        shapes.append((2, 3, *second_size(size)))
    return shapes


@contextlib.contextmanager
def _quiet(enabled: bool = True):
    """Hide the exporters' progress lines and warnings (stdout, stderr and the warnings module)."""
    if not enabled:
        yield
        return
    sink = io.StringIO()  # on failure the exception says what went wrong; --verbose shows all of it
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def export_onnx(
    model: nn.Module,
    meta: dict[str, Any],
    out: str | Path,
    *,
    size: tuple[int, int] = (1024, 2048),
    dynamic: bool = False,
    opset: int = MIN_DYNAMO_OPSET,
    exporter: str = "auto",
    verbose: bool = False,
    lowres: bool = False,
) -> dict[str, Any]:
    """Write ``model`` as ONNX; returns {"exporter", "opset"}. ``exporter``: auto, dynamo or legacy.

    With ``lowres`` the graph stops before the last upsampling (logits at the model's output stride, 1/4
    for ICNet); ``aticnet.load`` does the labels step after it, faster than the graph would."""
    import onnx

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if exporter == "auto":
        exporter = "dynamo" if opset >= MIN_DYNAMO_OPSET else "legacy"
    if exporter == "dynamo" and opset < MIN_DYNAMO_OPSET:
        raise UserError(f"--opset {opset}: the dynamo exporter writes opset {MIN_DYNAMO_OPSET} and up; "
                        "use --exporter legacy for older opsets")
    wrapped = (LowResolution(model) if lowres else _ImageToLogits(model)).eval()
    example = torch.randn(1, 3, *size, device=next(model.parameters()).device)
    try:
        with _quiet(not verbose):
            if exporter == "dynamo":
                from torch.export import Dim

                shapes = {"image": {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}} if dynamic else None
                program = torch.onnx.export(wrapped, (example,), input_names=["image"], output_names=["logits"],
                                            opset_version=opset, dynamo=True, dynamic_shapes=shapes, verbose=verbose)
                proto = program.model_proto
            else:
                axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}}
                buffer = io.BytesIO()
                torch.onnx.export(wrapped, (example,), buffer, input_names=["image"], output_names=["logits"],
                                  opset_version=opset, dynamo=False, dynamic_axes=axes if dynamic else None)
                proto = onnx.load_from_string(buffer.getvalue())
    except UserError:
        raise
    except Exception as e:  # the exporters raise many types; name the failure in one line
        raise UserError(f"{out}: ONNX export ({exporter}) failed: {e.__class__.__name__}: "
                        f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}") from e
    if len(proto.graph.output) != 1:
        raise UserError(f"{out}: the exported graph has {len(proto.graph.output)} outputs, expected 1 (logits)")
    del proto.metadata_props[:]
    for key, value in file_meta(model, meta, model.output_stride if lowres else 1).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save_model(proto, str(out))
    opset_written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    return {"exporter": exporter, "opset": opset_written}


def export_torchscript(model: nn.Module, meta: dict[str, Any], out: str | Path, *, size: tuple[int, int]) -> dict[str, Any]:
    """Trace ``model`` at ``size`` and save it with its metadata (``aticnet.json``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _ImageToLogits(model).eval()
    example = torch.randn(1, 3, *size, device=next(model.parameters()).device)
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(wrapped, (example,), check_trace=False)
    except Exception as e:
        raise UserError(f"{out}: TorchScript trace failed: {e.__class__.__name__}: {str(e).splitlines()[0][:300]}") from e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save is deprecated in favour of torch.export
        torch.jit.save(traced, str(out), _extra_files={META_FILE: json.dumps(file_meta(model, meta, 1))})
    return {"exporter": "torch.jit.trace", "opset": None}


def export_openvino(model: nn.Module, meta: dict[str, Any], out: str | Path, *, size: tuple[int, int]) -> dict[str, Any]:
    """Write the model's low-res head as an OpenVINO IR (``out`` .xml + .bin, fp32 weights) with its metadata."""
    import openvino as ov

    from ..inference.backends import convert_to_openvino

    out = Path(out)
    if out.suffix.lower() != ".xml":
        raise UserError(f"{out}: an OpenVINO IR is written as NAME.xml (and NAME.bin beside it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    ov_model = convert_to_openvino(model, torch.randn(1, 3, *size))
    ov_model.set_rt_info(json.dumps(file_meta(model, meta, model.output_stride)), RT_INFO_KEY)
    ov.save_model(ov_model, str(out), compress_to_fp16=False)
    return {"exporter": f"openvino.convert_model {ov.__version__}", "opset": None}


def _reference(model: nn.Module, x: Tensor, lowres: bool) -> Tensor:
    with torch.inference_mode():
        x = x.to(next(model.parameters()).device, next(model.parameters()).dtype)
        return (model.forward_lowres(x) if lowres else model(x)).float().cpu()


def check_export(path: str | Path, fmt: str, model: nn.Module, shapes: list[tuple[int, ...]], seed: int = 0,
                 fp64_above: float = float("inf")) -> list[dict]:
    """Run the exported file (as ``aticnet.load`` would) and PyTorch on the same random input; max abs
    difference per shape.

    Where the difference is above ``fp64_above``, PyTorch also runs in float64, and both the export's and
    PyTorch float32's distance from it are reported: when the export is the closer of the two, the
    difference is float32 rounding in a badly conditioned model (e.g. untrained, logits in the
    hundreds), not an export error."""
    from ..inference.backends import load_onnx, load_openvino, load_torchscript

    path = Path(path)
    cpu = torch.device("cpu")
    run, meta = {"onnx": lambda: load_onnx(path, cpu), "openvino": lambda: load_openvino(path),
                 "torchscript": lambda: load_torchscript(path, cpu)}[fmt]()
    lowres = meta["output_stride"] > 1
    cpu_model = model if next(model.parameters()).device.type == "cpu" else None
    results = []
    generator = torch.Generator().manual_seed(seed)
    for shape in shapes:
        x = torch.randn(*shape, generator=generator)
        try:
            got = run(x)
        except Exception as e:
            raise UserError(f"{path}: running it at {'x'.join(map(str, shape))} failed: "
                            f"{str(e).strip().splitlines()[0][:300]}") from e
        want = _reference(cpu_model or model, x, lowres)
        if got.shape != want.shape:
            raise UserError(f"{path}: output {tuple(got.shape)} at input {shape}, PyTorch gives {tuple(want.shape)}")
        diff = (got - want).abs().max().item()
        results.append({"shape": list(shape), "max_abs_diff": diff, "max_abs_logit": want.abs().max().item()})
        if diff > fp64_above:  # is it the export, or float32 itself? PyTorch in float64 tells
            exact = _reference(copy.deepcopy(cpu_model or model).cpu().double(), x.double(), lowres).double()
            results[-1]["export_vs_fp64"] = (got.double() - exact).abs().max().item()
            results[-1]["torch_fp32_vs_fp64"] = (want.double() - exact).abs().max().item()
    return results


def export(
    weights: str | Path,
    fmt: str,
    out: str | Path,
    *,
    size: tuple[int, int] = (1024, 2048),
    dynamic: bool = False,
    opset: int = MIN_DYNAMO_OPSET,
    exporter: str = "auto",
    tolerance: float = 1e-3,
    verbose: bool = False,
    lowres: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Export trained weights to a deployable file and check it against PyTorch.

    The file loads with [`aticnet.load`][aticnet.load] and runs wherever weights are taken (``predict``,
    ``evaluate``, ``serve``, the app).

    Examples:
        >>> import aticnet
        >>> report = aticnet.export("aticnet-camvid", "onnx", "aticnet.onnx", dynamic=True, lowres=True)
        >>> aticnet.load("aticnet.onnx").predict("street.png")

    Args:
        weights: a shipped name, a run or a ``.safetensors`` file.
        fmt: ``"onnx"``, ``"torchscript"`` or ``"openvino"``.
        out: the file to write (an OpenVINO IR is ``NAME.xml`` + ``NAME.bin``).
        size: (H, W) of the example input and the check.
        dynamic: ONNX: free batch, height and width.
        opset: the ONNX opset.
        exporter: ``"auto"``, ``"dynamo"`` or ``"legacy"`` (the ONNX exporter).
        tolerance: the largest max |export - PyTorch| allowed on the check's random input.
        verbose: show the exporter's own output.
        lowres: ONNX (OpenVINO always): the graph ends at the model's output stride, before the last upsampling,
            and [`aticnet.load`][aticnet.load] does the labels step.
        log: where progress lines go (a function taking a string).

    Returns:
        The report, a dict of the file, format, exporter, opset, sizes checked and their differences.

    Raises:
        UserError: the export failed or differs from PyTorch by more than ``tolerance`` (the file stays).
    """
    from ..models.weights import load_model

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    model, meta = load_model(weights, "cpu")
    model.eval()
    cfg = model.config
    start = time.perf_counter()
    if fmt == "onnx":
        info = export_onnx(model, meta, out, size=size, dynamic=dynamic, opset=opset, exporter=exporter, verbose=verbose,
                           lowres=lowres)
        what = f"ONNX opset {info['opset']}, {info['exporter']} exporter" + (", low-res logits" if lowres else "")
    elif fmt == "openvino":
        info = export_openvino(model, meta, out, size=size)
        what, dynamic = f"OpenVINO IR ({info['exporter']}), low-res logits", True
    else:
        info = export_torchscript(model, meta, out, size=size)
        what = "TorchScript (torch.jit.trace)"
    seconds = time.perf_counter() - start
    mb = sum(p.stat().st_size for p in (Path(out), Path(out).with_suffix(".bin")) if p.is_file()) / 2**20
    shape_note = "N, H, W free" if dynamic else f"fixed 1x3x{size[0]}x{size[1]}"
    log(f"exported {cfg.name} (width {cfg.width}, {cfg.num_classes} classes) to {out}: {what}, {shape_note}; "
        f"{mb:.1f} MiB in {seconds:.1f} s")
    checks = check_export(out, fmt, model, check_sizes(size, dynamic), fp64_above=tolerance)
    runtime = {"onnx": "onnxruntime", "openvino": "OpenVINO f32", "torchscript": "torch.jit.load"}[fmt]
    for c in checks:
        ok = c["max_abs_diff"] <= tolerance
        log(f"check ({runtime}) at {'x'.join(map(str, c['shape']))}: max |export - torch| = {c['max_abs_diff']:.2e} "
            f"(logits up to {c['max_abs_logit']:.1f}) {'ok' if ok else 'FAILED'}")
    refuse_if_off(out, checks, tolerance)
    return {"out": str(out), "format": fmt, **info, "dynamic": dynamic, "size": list(size), "seconds": seconds,
            "checks": checks, "tolerance": tolerance}


def refuse_if_off(out: str | Path, checks: list[dict[str, Any]], tolerance: float) -> None:
    """A UserError when the worst of ``checks`` differs from PyTorch by more than ``tolerance``, saying whether
    float32 rounding of the model itself explains it (its distance to float64 PyTorch)."""
    worst = max(checks, key=lambda c: c["max_abs_diff"])
    if worst["max_abs_diff"] <= tolerance:
        return
    note = ""
    if "export_vs_fp64" in worst:
        closer = worst["export_vs_fp64"] <= worst["torch_fp32_vs_fp64"]
        note = (f"; against PyTorch in float64 the export is off by {worst['export_vs_fp64']:.2e}, PyTorch float32 "
                f"by {worst['torch_fp32_vs_fp64']:.2e}"
                + (" (float32 rounding of this model, not an export error: raise --tolerance)" if closer else ""))
    raise UserError(f"{out}: the export differs from PyTorch by {worst['max_abs_diff']:.2e} at "
                    f"{'x'.join(map(str, worst['shape']))}, above the tolerance {tolerance:g}{note} "
                    "(file left for inspection)")
