"""Open Inference Protocol requests to images and labels to responses, for ``aticnet serve``.

An inference request carries one input tensor: pixels as UINT8 ``[H, W, 3]`` or ``[N, H, W, 3]``, or encoded
image files (PNG, JPEG, ...) as BYTES ``[N]``. The request parameter ``format`` picks the answer: ``ids`` (the
default: UINT8 ``[N, H, W]`` class ids, INT64 past 255 classes) or PNG files as BYTES ``[N]``: ``trainid``
(one-channel class ids), ``labelid`` (Cityscapes label ids), ``color`` or ``overlay`` (``alpha`` sets its opacity).
Anything else is an :class:`~kserve.errors.InvalidInput`, which KServe answers with HTTP 400 (gRPC
INVALID_ARGUMENT) and the message.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

OUTPUT_FORMATS = ("ids", "trainid", "labelid", "color", "overlay")
PNG_FORMATS = OUTPUT_FORMATS[1:]
DEFAULT_MAX_MEGAPIXELS = 40.0
ACCEPTED = "UINT8 pixels [H, W, 3] or [N, H, W, 3], or BYTES [N] of encoded image files (PNG, JPEG, ...)"


def bad_request(message: str) -> Exception:
    """KServe's exception for a request it answers with 400 and ``message``."""
    from kserve.errors import InvalidInput

    return InvalidInput(message)


def parameter(parameters: Any, key: str, default: Any = None) -> Any:
    """A request parameter from REST (a dict of plain values) or gRPC (a map of InferParameter messages)."""
    if not parameters or key not in parameters:
        return default
    value = parameters[key]
    if hasattr(value, "WhichOneof"):  # gRPC InferParameter: bool_param, int64_param, string_param, ...
        choice = value.WhichOneof("parameter_choice")
        return getattr(value, choice) if choice else default
    return value


def request_options(request: Any) -> tuple[str, float]:
    """(output format, overlay alpha) asked by a request's parameters."""
    fmt = parameter(request.parameters, "format", "ids")
    if fmt not in OUTPUT_FORMATS:
        raise bad_request(f"parameter format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}")
    alpha = parameter(request.parameters, "alpha", 0.5)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise bad_request(f"parameter alpha must be a number in [0, 1], not {alpha!r}") from None
    if not 0 <= alpha <= 1:
        raise bad_request(f"parameter alpha must be in [0, 1], not {alpha}")
    return fmt, alpha


def images_of_request(request: Any, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> list[np.ndarray]:
    """The images an inference request carries.

    Args:
        request: a ``kserve.InferRequest`` with one input.
        max_megapixels: the largest image accepted (width x height / 1e6).

    Returns:
        N arrays of H x W x 3 uint8 RGB (sizes may differ between encoded files).
    """
    if len(request.inputs) != 1:
        raise bad_request(f"send one input tensor ({ACCEPTED}), not {len(request.inputs)}")
    tensor = request.inputs[0]
    shape = [int(s) for s in tensor.shape]
    if tensor.datatype == "UINT8":
        return _pixels(tensor, shape, max_megapixels)
    if tensor.datatype == "BYTES":
        if len(shape) != 1 or shape[0] < 1:
            raise bad_request(f"input {tensor.name!r}: BYTES images have shape [N], not {shape}")
        items = _as_numpy(tensor, shape).ravel()
        return [decode_image(_image_bytes(item, i), i, max_megapixels) for i, item in enumerate(items)]
    raise bad_request(f"input {tensor.name!r} has datatype {tensor.datatype}; send {ACCEPTED}")


def _pixels(tensor: Any, shape: list[int], max_megapixels: float) -> list[np.ndarray]:
    if len(shape) not in (3, 4) or shape[-1] != 3 or min(shape) < 1:
        raise bad_request(f"input {tensor.name!r}: UINT8 pixels have shape [H, W, 3] or [N, H, W, 3], not {shape}")
    height, width = shape[-3], shape[-2]
    _check_size(width, height, max_megapixels, f"input {tensor.name!r}")
    pixels = _as_numpy(tensor, shape)
    return list(pixels) if len(shape) == 4 else [pixels]


def _as_numpy(tensor: Any, shape: list[int]) -> np.ndarray:
    """The tensor's data, or a 400 when its data does not fill its shape."""
    try:
        return tensor.as_numpy()
    except ValueError as e:  # numpy: "cannot reshape array of size ... into shape ..."
        raise bad_request(f"input {tensor.name!r}: its data does not fit shape {shape} ({e})") from None


def _image_bytes(item: Any, index: int) -> bytes:
    """An encoded file from a BYTES element: raw bytes (binary extension) or base64 text (JSON)."""
    if isinstance(item, bytes):
        return item
    try:
        return base64.b64decode(str(item), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"image {index}: BYTES in JSON must be base64-encoded image files") from None


def _check_size(width: int, height: int, max_megapixels: float, what: str) -> None:
    if width * height > max_megapixels * 1e6:
        raise bad_request(f"{what}: {width}x{height} is {width * height / 1e6:.1f} megapixels, over this server's "
                          f"limit of {max_megapixels:g} (--max-megapixels)")


def decode_image(data: bytes, index: int, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """An encoded image file -> H x W x 3 uint8 RGB; its header's size is checked before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_size(image.width, image.height, max_megapixels, f"image {index}")
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise bad_request(f"image {index}: not an image file ({len(data)} bytes; PNG, JPEG, BMP, TIFF, WebP)") from None
    except Image.DecompressionBombError as e:
        raise bad_request(f"image {index}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data past a valid header
        raise bad_request(f"image {index}: cannot decode ({e})") from None


def encode_png(array: np.ndarray) -> bytes:
    """H x W (x 3) uint8 -> PNG file bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)  # fast: the network, not the disk, is slow
    return buffer.getvalue()


def wants_binary(request: Any) -> bool:
    """Whether the answer may travel as raw bytes (gRPC, or REST's binary-tensor extension)."""
    if request.from_grpc or request.use_binary_outputs:
        return True
    return any(out.binary_data for out in request.request_outputs or [])


def output_of(labels: list[Any], images: list[np.ndarray], fmt: str, alpha: float, segmenter: Any) -> Any:
    """The response tensor for one request.

    Args:
        labels: N tensors of H x W class ids, one per image.
        images: the N H x W x 3 images they came from (overlays draw on them).
        fmt: one of :data:`OUTPUT_FORMATS`.
        alpha: overlay opacity.
        segmenter: the :class:`~aticnet.inference.segmenter.Segmenter` (classes, colours).

    Returns:
        A ``kserve.InferOutput``: "labels" UINT8/INT64 [N, H, W], or "png" BYTES [N].
    """
    from ..inference.predict import Renderer
    from ..utils.errors import UserError

    if fmt == "ids":
        sizes = {tuple(lab.shape) for lab in labels}
        if len(sizes) > 1:
            raise bad_request(f"images of several sizes {sorted(sizes)} cannot share one ids tensor; ask "
                              "format=trainid for one PNG per image, or send one size per request")
        ids = np.stack([lab.numpy() for lab in labels])
        ids = ids.astype(np.uint8) if segmenter.num_classes <= 256 else ids.astype(np.int64)
        return _raw_output("labels", ids, "UINT8" if ids.dtype == np.uint8 else "INT64")
    try:
        render = Renderer(segmenter, fmt, alpha, segmenter.name)
    except UserError as e:  # labelid on a model without the Cityscapes classes
        raise bad_request(str(e)) from None
    pngs = np.array([encode_png(render(img, lab)) for img, lab in zip(images, labels)], dtype=np.object_)
    return _raw_output("png", pngs, "BYTES")


def _raw_output(name: str, array: np.ndarray, datatype: str) -> Any:
    """An output holding its bytes: KServe sends them as they are (gRPC, binary extension) or as JSON."""
    from kserve import InferOutput

    output = InferOutput(name, list(array.shape), datatype)
    output.set_data_from_numpy(array, binary_data=True)
    return output
