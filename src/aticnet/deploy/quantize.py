"""``aticnet quantize``: post-training static int8 of a trained model, calibrated on real images.

Two routes, both per-channel weights and per-tensor activations, both ending at the model's
low-res logits (the labels step stays exact, outside the graph):

* ``openvino`` (the default): the PyTorch model converted with ``openvino.convert_model``,
  quantized by NNCF (``nncf.quantize``, fast bias correction), saved as an IR (``.xml`` + ``.bin``).
  Weights use 7 of their 8 bits in every layer (NNCF's overflow fix, ``overflow_fix="enable"``) by default:
  CPUs without VNNI (AVX2 only) add pairs of u8 x s8 products in 16 bits, which saturate with full-range
  weights. On an AVX2-only AMD EPYC the tests' tiny model agreed with fp32 on 92.5% of pixels with the fix on
  the first layer only (NNCF's default) and on 94.1% with it everywhere. ``"first_layer"`` keeps NNCF's
  default for IRs that will only run on VNNI or AMX CPUs.
* ``onnxruntime``: exported to ONNX, then ``onnxruntime.quantization.quantize_static`` in QDQ form.

OpenVINO is the default because it is the fastest int8 route at the same accuracy in the deployment table
(docs/deployment.md: ``python benchmarks/deploy.py ...``, with the CPU it ran on).

Calibration images come from a data set split (``dataset``, ``data_root``, ``split``) or a folder of
pictures (``images_dir``), ``count`` of them spread over the set, at their own size or ``size``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..inference.backends import RT_INFO_KEY, convert_to_openvino, file_meta, openvino_core
from ..utils.errors import UserError

ROUTES = ("openvino", "onnxruntime")
OVERFLOW_FIXES = ("enable", "first_layer")


def calibration_images(mean, std, *, dataset: str | None = None, data_root: str | None = None, split: str = "train",
                       images_dir: str | None = None, count: int = 32, size: tuple[int, int] | None = None,
                       drives: list[str] | None = None) -> tuple[list[np.ndarray], str]:
    """``count`` normalised 1 x 3 x H x W float32 arrays spread evenly over the source, and a description."""
    from ..data import EvalTransform, build_dataset
    from ..utils.io import IMAGE_EXTENSIONS, read_image

    if count < 1:
        raise UserError(f"--images must be at least 1, not {count}")
    if images_dir:
        files = sorted(p for p in Path(images_dir).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise UserError(f"{images_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        picked = [files[i] for i in _spread(len(files), count)]
        m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
        images = [(read_image(p).float() / 255 - m) / s for p in picked]
        where = f"{len(picked)} images of {images_dir}"
    elif dataset and data_root:
        data = build_dataset(dataset, data_root, split, EvalTransform(mean=mean, std=std), drives=drives or None)
        images = [data[i][0] for i in _spread(len(data), count)]
        where = f"{len(images)} images of {dataset} {split}" + (f", drives {' '.join(drives)}" if drives else "")
        where += f" ({data_root})"
    else:
        raise UserError("calibration needs images: --dataset and --data-root (and --split), or --images-dir")
    if size is not None:
        images = [F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0] for x in images]
    return [x[None].numpy().astype(np.float32) for x in images], where


def _spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (all of them when there are fewer)."""
    if count >= total:
        return list(range(total))
    return [round(i * (total - 1) / (count - 1)) if count > 1 else 0 for i in range(count)]


def quantize(weights: str | Path, out: str | Path, *, route: str = "openvino", overflow_fix: str = "enable",
             log: Any = print, **calibration: Any) -> dict[str, Any]:
    """Post-training static int8 of trained weights, calibrated on real images.

    Needs the ``deploy`` extra (OpenVINO and NNCF, or ONNX Runtime). The int8 file loads with
    [`aticnet.load`][aticnet.load] like any other form.

    Examples:
        >>> import aticnet
        >>> aticnet.quantize("aticnet-camvid", "aticnet.int8.xml", dataset="camvid", data_root="CAMVID")
        >>> aticnet.quantize("runs/mine", "mine.int8.xml", images_dir="my_frames", count=64)

    Args:
        weights: a shipped name, a run or a ``.safetensors`` file.
        out: the int8 model: ``.xml`` (OpenVINO IR) for the openvino route, ``.onnx`` (QDQ) for onnxruntime.
        route: ``"openvino"`` (NNCF) or ``"onnxruntime"``.
        overflow_fix: openvino only: ``"enable"`` (7-bit weights everywhere, safe on AVX2-only CPUs) or
            ``"first_layer"``.
        log: where progress lines go (a function taking a string).
        **calibration: where the calibration images come from: ``dataset``, ``data_root``, ``split`` (default
            ``"train"``) and ``drives``, or ``images_dir`` (a folder of pictures); ``count`` images (default 32),
            resized to ``size`` (H, W) when given.

    Returns:
        The report, a dict also written beside ``out`` as ``FILE.json``. It names the route, the versions, the
            calibration images, the seconds taken and the layers kept in float.

    Raises:
        UserError: a wrong route or file extension, no calibration images, or a missing extra.
    """
    from ..models.weights import load_model

    out = Path(out)
    if route not in ROUTES:
        raise UserError(f"--backend must be one of {', '.join(ROUTES)}, not {route!r}")
    if overflow_fix not in OVERFLOW_FIXES:
        raise UserError(f"--overflow-fix must be one of {', '.join(OVERFLOW_FIXES)}, not {overflow_fix!r}")
    wanted = {"openvino": ".xml", "onnxruntime": ".onnx"}[route]
    if out.suffix.lower() != wanted:
        raise UserError(f"{out}: the {route} route writes a {wanted} file")
    model, meta = load_model(weights, "cpu")
    data, where = calibration_images(model.config.mean, model.config.std, **calibration)
    log(f"calibrating {model.config.name} on {where}")
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    info = _openvino(model, meta, data, out, overflow_fix) if route == "openvino" else _onnxruntime(model, meta, data, out)
    report = {"out": str(out), "route": route, "weights": str(weights), "calibration": where,
              "calibration_images": len(data), "calibration_size": list(data[0].shape[-2:]),
              "seconds": time.perf_counter() - start, "weights_per_channel": True, **info}
    from ..utils.io import write_json

    report_path = report_file(out)
    write_json(report_path, report)
    log(f"wrote {out} in {report['seconds']:.1f} s: {info['quantized_layers']} layers int8, "
        f"{len(info['kept_in_float'])} kept in float; report {report_path}")
    return report


def report_file(out: Path) -> Path:
    """Where the report of ``out`` goes: ``FILE.json`` beside it (an .xml and an .onnx of one name keep their own)."""
    return out.with_name(out.name + ".json")


def _openvino(model, meta: dict[str, Any], data: list[np.ndarray], out: Path, overflow_fix: str) -> dict[str, Any]:
    import nncf
    import openvino as ov

    ov_model = convert_to_openvino(model, torch.from_numpy(data[0]))
    openvino_core()  # before NNCF's own Cores, so that theirs come and go inside ours (see openvino_core)
    quantized = nncf.quantize(ov_model, nncf.Dataset(data), subset_size=len(data),
                              preset=nncf.QuantizationPreset.PERFORMANCE,
                              advanced_parameters=nncf.AdvancedQuantizationParameters(
                                  overflow_fix=nncf.OverflowFix.ENABLE if overflow_fix == "enable"
                                  else nncf.OverflowFix.FIRST_LAYER))
    ov_model_meta = file_meta(model, meta, model.output_stride)
    quantized.set_rt_info(json.dumps({**ov_model_meta, "quantized": "int8 (NNCF)"}), RT_INFO_KEY)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    layers = [op for op in quantized.get_ordered_ops() if op.get_type_name() in ("Convolution", "MatMul")]
    quantized_layers = [op for op in layers if any(
        inp.get_source_output().get_node().get_type_name() == "FakeQuantize" for inp in op.inputs())]
    kept = sorted({op.get_friendly_name() for op in layers} - {op.get_friendly_name() for op in quantized_layers})
    return {"quantized_layers": len(quantized_layers), "kept_in_float": kept, "overflow_fix": overflow_fix,
            "versions": {"openvino": ov.__version__, "nncf": nncf.__version__}}


class _Reader:
    """onnxruntime's calibration data reader over our arrays."""

    def __init__(self, data: list[np.ndarray]) -> None:
        self.items: Iterator[np.ndarray] = iter(data)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self.items, None)
        return None if item is None else {"image": item}


def _onnxruntime(model, meta: dict[str, Any], data: list[np.ndarray], out: Path) -> dict[str, Any]:
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    from .export import export_onnx

    with tempfile.TemporaryDirectory(prefix="aticnet-quantize-") as tmp:
        fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        export_onnx(model, meta, fp32, size=tuple(data[0].shape[-2:]), dynamic=True, lowres=True)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), _Reader(data), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    graph = onnx.load(str(out))
    del graph.metadata_props[:]
    for key, value in {**file_meta(model, meta, model.output_stride), "quantized": "int8 (onnxruntime QDQ)"}.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save_model(graph, str(out))
    producers = {o: n for n in graph.graph.node for o in n.output}
    layers = [n for n in graph.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    quantized_layers = [n for n in layers if producers.get(n.input[0]) is not None
                        and producers[n.input[0]].op_type == "DequantizeLinear"]
    kept = sorted({n.name for n in layers} - {n.name for n in quantized_layers})
    return {"quantized_layers": len(quantized_layers), "kept_in_float": kept,
            "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}}
