"""Open Inference Protocol requests checked against the server's limits and turned into images, for ``aticnet serve``.

An inference request carries one input tensor: pixels as UINT8 ``[H, W, 3]`` or ``[N, H, W, 3]``, or encoded
image files (PNG, JPEG, ...) as BYTES ``[N]``. The request parameter ``format`` picks the answer: ``ids`` (the
default: UINT8 ``[N, H, W]`` class ids, INT64 past 255 classes) or PNG files as BYTES ``[N]``: ``trainid``
(one-channel class ids), ``labelid`` (Cityscapes label ids), ``color`` or ``overlay`` (``alpha`` sets its opacity).

Every request is checked against the server's limits before a pixel is decoded ([`plan_request`][aticnet.serving.requests.plan_request]):
the number of images, their total pixels (read from the tensor's shape or the files' headers), the outputs it
names, and the size of a JSON answer. Anything wrong is a ``kserve.errors.InvalidInput``, which KServe answers
with HTTP 400 (gRPC INVALID_ARGUMENT) and the message.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

OUTPUT_FORMATS = ("ids", "trainid", "labelid", "color", "overlay")
PNG_FORMATS = OUTPUT_FORMATS[1:]
OUTPUT_NAMES = ("labels", "png")  # "labels" answers format=ids, "png" every PNG format
DEFAULT_MAX_MEGAPIXELS = 16.0
# A JSON answer is built on the front process's event loop (about 0.5 s a megapixel of labels): larger label
# answers travel in the binary-tensor extension, which costs a copy.
JSON_MAX_MEGAPIXELS = 0.25
ACCEPTED = "UINT8 pixels [H, W, 3] or [N, H, W, 3], or BYTES [N] of encoded image files (PNG, JPEG, ...)"
BINARY_HINT = "set the request parameter binary_data_output (or the output's binary_data) to true"


def bad_request(message: str) -> Exception:
    """KServe's exception for a request it answers with 400 (gRPC INVALID_ARGUMENT).

    Args:
        message: one line naming the request's problem.

    Returns:
        A ``kserve.errors.InvalidInput`` to raise.
    """
    from kserve.errors import InvalidInput

    return InvalidInput(message)


def parameter(parameters: Any, key: str, default: Any = None) -> Any:
    """A request parameter from REST (a dict of plain values) or gRPC (a map of InferParameter messages).

    Args:
        parameters: the request's (or an input's) parameters, or None.
        key: the parameter's name.
        default: what a missing parameter is.

    Returns:
        The parameter's plain value.

    Raises:
        InvalidInput: ``parameters`` is not a map.
    """
    if not parameters:
        return default
    if not isinstance(parameters, Mapping) and not hasattr(parameters, "keys"):
        raise bad_request(f"parameters must be an object of names to values, not {type(parameters).__name__}")
    if key not in parameters:
        return default
    value = parameters[key]
    if hasattr(value, "WhichOneof"):  # gRPC InferParameter: bool_param, int64_param, string_param, ...
        choice = value.WhichOneof("parameter_choice")
        return getattr(value, choice) if choice else default
    return value


def request_options(request: Any) -> tuple[str, float]:
    """(output format, overlay alpha) asked by a request's parameters.

    Args:
        request: a ``kserve.InferRequest``.

    Returns:
        One of [`OUTPUT_FORMATS`][aticnet.serving.requests.OUTPUT_FORMATS] and an opacity in [0, 1].

    Raises:
        InvalidInput: an unknown format, or an alpha that is no number in [0, 1].
    """
    fmt = parameter(request.parameters, "format", "ids")
    if not isinstance(fmt, str) or fmt not in OUTPUT_FORMATS:
        raise bad_request(f"parameter format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}")
    alpha = parameter(request.parameters, "alpha", 0.5)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError, OverflowError):
        raise bad_request(f"parameter alpha must be a number in [0, 1], not {alpha!r}") from None
    if not 0 <= alpha <= 1:
        raise bad_request(f"parameter alpha must be in [0, 1], not {alpha}")
    return fmt, alpha


def wants_binary(request: Any) -> bool:
    """Whether the answer may travel as raw bytes (gRPC, or REST's binary-tensor extension)."""
    if request.from_grpc or request.use_binary_outputs is True:
        return True
    return any(out.binary_data is True for out in request.request_outputs or [])


def check_outputs(request: Any, fmt: str) -> None:
    """Refuse outputs this model does not have, or that another format answers (Triton answers 400 too).

    Args:
        request: a ``kserve.InferRequest``.
        fmt: the format the request asked for.

    Raises:
        InvalidInput: an unknown output name, or one that ``fmt`` does not answer.
    """
    answer = "labels" if fmt == "ids" else "png"
    for out in request.request_outputs or []:
        if out.name not in OUTPUT_NAMES:
            raise bad_request(f"output {out.name!r} does not exist: this model answers 'labels' (format=ids) or "
                              f"'png' (format={'|'.join(PNG_FORMATS)})")
        if out.name != answer:
            raise bad_request(f"output {out.name!r} does not come with format={fmt}, which answers {answer!r}")


@dataclass
class RequestPlan:
    """A request checked against the limits, its pixels not yet decoded.

    Attributes:
        fmt: the output format.
        alpha: the overlay opacity.
        sizes: (height, width) of each image.
        sources: per image, H x W x 3 uint8 pixels or an encoded file's bytes.
    """

    fmt: str
    alpha: float
    sizes: list[tuple[int, int]]
    sources: list[Any]

    @property
    def pixels(self) -> int:
        """The request's pixels, all images together."""
        return sum(h * w for h, w in self.sizes)

    def images(self) -> list[np.ndarray]:
        """The N images as H x W x 3 uint8 RGB, encoded files decoded."""
        return [s if isinstance(s, np.ndarray) else decode_image(s, i) for i, s in enumerate(self.sources)]


def plan_request(request: Any, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, max_images: int = 8
                 ) -> RequestPlan:
    """Check a request against the server's limits without decoding a pixel.

    Args:
        request: a ``kserve.InferRequest`` with one input.
        max_megapixels: the most pixels a request may carry, all its images together (width x height / 1e6).
        max_images: the most images a request may carry (``--max-batch``).

    Returns:
        The [`RequestPlan`][aticnet.serving.requests.RequestPlan]: format, sizes and the images' sources.

    Raises:
        InvalidInput: the request breaks a limit or the protocol; the message names the problem.
    """
    fmt, alpha = request_options(request)
    check_outputs(request, fmt)
    if fmt in PNG_FORMATS and not wants_binary(request):
        raise bad_request(f"format={fmt} answers with PNG files, which travel in the binary-tensor extension: "
                          f"{BINARY_HINT}")
    if len(request.inputs) != 1:
        raise bad_request(f"send one input tensor ({ACCEPTED}), not {len(request.inputs)}")
    tensor = request.inputs[0]
    what = f"input {tensor.name!r}"
    shape = _shape_of(tensor, what)
    if tensor.datatype == "UINT8":
        sizes, sources = _pixel_sources(tensor, shape, what, max_megapixels, max_images)
    elif tensor.datatype == "BYTES":
        sizes, sources = _file_sources(tensor, shape, what, max_megapixels, max_images)
    else:
        raise bad_request(f"{what} has datatype {tensor.datatype}; send {ACCEPTED}")
    plan = RequestPlan(fmt, alpha, sizes, sources)
    if fmt == "ids":
        if len(set(sizes)) > 1:
            raise bad_request(f"images of several sizes {sorted(set(sizes))} cannot share one ids tensor; ask "
                              "format=trainid for one PNG per image, or send one size per request")
        if not wants_binary(request) and plan.pixels > JSON_MAX_MEGAPIXELS * 1e6:
            raise bad_request(f"the labels of {plan.pixels / 1e6:.2f} megapixels are too many for a JSON answer "
                              f"(at most {JSON_MAX_MEGAPIXELS:g}): ask for them in the binary-tensor extension: "
                              f"{BINARY_HINT}")
    return plan


def _shape_of(tensor: Any, what: str) -> list[int]:
    try:
        return [_as_int(s) for s in tensor.shape]
    except (TypeError, ValueError):
        raise bad_request(f"{what}: its shape must be a list of integers, not {tensor.shape!r}") from None


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(value)
    return int(value)


def _check_count(count: int, max_images: int, what: str) -> None:
    if count > max_images:
        raise bad_request(f"{what}: {count} images, over this server's limit of {max_images} a request "
                          "(--max-batch): send them in several requests")


def _check_pixels(pixels: int, max_megapixels: float, what: str) -> None:
    if pixels > max_megapixels * 1e6:
        raise bad_request(f"{what} is {pixels / 1e6:.1f} megapixels, over this server's limit of "
                          f"{max_megapixels:g} a request (--max-megapixels)")


def _pixel_sources(tensor: Any, shape: list[int], what: str, max_megapixels: float, max_images: int
                   ) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    if len(shape) not in (3, 4) or shape[-1] != 3 or min(shape) < 1:
        raise bad_request(f"{what}: UINT8 pixels have shape [H, W, 3] or [N, H, W, 3], not {shape}")
    count = shape[0] if len(shape) == 4 else 1
    _check_count(count, max_images, what)
    height, width = shape[-3], shape[-2]
    _check_pixels(count * height * width, max_megapixels, f"{what} ({count} x {width}x{height})")
    pixels = _uint8_array(tensor, shape, what)
    return [(height, width)] * count, list(pixels) if len(shape) == 4 else [pixels]


def _uint8_array(tensor: Any, shape: list[int], what: str) -> np.ndarray:
    """The tensor's pixels in ``shape``; data that does not fill it, or values outside 0..255, are a 400."""
    expected = math.prod(shape)
    raw = getattr(tensor, "_raw_data", None)  # the binary extension's bytes, or gRPC's raw_input_contents
    if raw is not None:
        if len(raw) != expected:
            raise bad_request(f"{what}: {len(raw)} bytes of data do not fit shape {shape} ({expected} bytes)")
        return np.frombuffer(raw, np.uint8).reshape(shape)
    try:
        values = np.asarray(tensor.data)
    except (ValueError, TypeError, OverflowError):
        raise bad_request(f"{what}: its data is not a list of numbers") from None
    if values.size != expected:
        raise bad_request(f"{what}: {values.size} values do not fit shape {shape} ({expected} values)")
    if values.dtype.kind not in "iu" or (values.size and (values.min() < 0 or values.max() > 255)):
        raise bad_request(f"{what}: UINT8 data must be integers in 0..255")
    return values.astype(np.uint8).reshape(shape)


def _file_sources(tensor: Any, shape: list[int], what: str, max_megapixels: float, max_images: int
                  ) -> tuple[list[tuple[int, int]], list[bytes]]:
    if len(shape) != 1 or shape[0] < 1:
        raise bad_request(f"{what}: BYTES images have shape [N], not {shape}")
    _check_count(shape[0], max_images, what)
    raw = getattr(tensor, "_raw_data", None)
    if raw is not None:
        items: list[Any] = split_bytes(raw, shape[0], what)
    elif isinstance(tensor.data, list):
        items = tensor.data
    else:
        raise bad_request(f"{what}: BYTES data in JSON is a list of base64-encoded image files")
    if len(items) != shape[0]:
        raise bad_request(f"{what}: {len(items)} elements do not fit shape {shape}")
    files = [_image_bytes(item, i) for i, item in enumerate(items)]
    sizes = [image_size_of(data, i) for i, data in enumerate(files)]
    _check_pixels(sum(h * w for h, w in sizes), max_megapixels,
                  f"{what} ({', '.join(f'{w}x{h}' for h, w in sizes)})")
    return sizes, files


def split_bytes(raw: bytes, count: int, what: str) -> list[bytes]:
    """The elements of a BYTES tensor's raw data (each a 4-byte little-endian length, then that many bytes).

    Args:
        raw: the tensor's bytes.
        count: the elements its shape promises; more are not read.
        what: names the input in errors.

    Returns:
        The elements, at most ``count + 1`` (a count that does not match is the caller's 400).

    Raises:
        InvalidInput: a length prefix that is cut short or runs past the end of the data.
    """
    items, offset = [], 0
    while offset < len(raw) and len(items) <= count:
        if offset + 4 > len(raw):
            raise bad_request(f"{what}: element {len(items)}'s length prefix is cut short")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise bad_request(f"{what}: element {len(items)} claims {length} bytes, past the end of the data "
                              f"({len(raw) - offset} bytes left)")
        items.append(bytes(raw[offset:offset + length]))
        offset += length
    return items


def _image_bytes(item: Any, index: int) -> bytes:
    """An encoded file from a BYTES element: raw bytes (binary extension) or base64 text (JSON)."""
    if isinstance(item, bytes):
        return item
    if not isinstance(item, str):
        raise bad_request(f"image {index}: BYTES in JSON must be base64-encoded image files")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"image {index}: BYTES in JSON must be base64-encoded image files") from None


def image_size_of(data: bytes, index: int) -> tuple[int, int]:
    """(height, width) of an encoded image file, read from its header; no pixel is decoded.

    Args:
        data: the file's bytes.
        index: the image's place in the request (named in errors).

    Returns:
        (height, width).

    Raises:
        InvalidInput: the bytes are no image file Pillow reads.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except UnidentifiedImageError:
        raise bad_request(f"image {index}: not an image file ({len(data)} bytes; PNG, JPEG, BMP, TIFF, WebP)") from None
    except Image.DecompressionBombError as e:
        raise bad_request(f"image {index}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # a header cut short or corrupt
        raise bad_request(f"image {index}: cannot read its header ({e})") from None


def decode_image(data: bytes, index: int) -> np.ndarray:
    """An encoded image file -> H x W x 3 uint8 RGB (its size checked by [`plan_request`][aticnet.serving.requests.plan_request]).

    Args:
        data: the file's bytes.
        index: the image's place in the request (named in errors).

    Returns:
        H x W x 3 uint8 RGB.

    Raises:
        InvalidInput: the file cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise bad_request(f"image {index}: not an image file ({len(data)} bytes; PNG, JPEG, BMP, TIFF, WebP)") from None
    except Image.DecompressionBombError as e:
        raise bad_request(f"image {index}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data past a valid header
        raise bad_request(f"image {index}: cannot decode ({e})") from None
