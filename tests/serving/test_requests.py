"""Requests checked against the limits before a pixel is decoded (``aticnet.serving.requests``), and the
binary-extension reader (``aticnet.serving.binary.request_from_bytes``): no server, no Ray."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tests.serving.oip import binary_body, files_tensor, huge_png_header, image, png_bytes

pytest.importorskip("kserve")

from kserve.errors import InvalidInput

from aticnet.serving.binary import request_from_bytes
from aticnet.serving.requests import JSON_MAX_MEGAPIXELS, plan_request, split_bytes


def binary(header_input: dict, raw: bytes, **header) -> object:
    body, length = binary_body(header_input, raw, **header)
    return request_from_bytes(body, length, "m")


def json_request(**request) -> object:
    from kserve import InferRequest
    from kserve.protocol.rest.v2_datamodels import InferenceRequest

    return InferRequest.from_inference_request(InferenceRequest.model_validate(request), "m")


def refused(request, says: str, **limits) -> None:
    with pytest.raises(InvalidInput) as e:
        plan_request(request, **limits)
    assert says in str(e.value), str(e.value)


def test_pixels_and_files_become_their_images():
    pixels = np.stack([image(5, 7, 0), image(5, 7, 1)])
    plan = plan_request(binary({"name": "x", "shape": [2, 5, 7, 3], "datatype": "UINT8"}, pixels.tobytes()))
    assert plan.sizes == [(5, 7), (5, 7)] and plan.pixels == 70 and (plan.fmt, plan.alpha) == ("ids", 0.5)
    assert all(np.array_equal(a, b) for a, b in zip(plan.images(), pixels))

    files = [png_bytes(image(6, 4, 2)), png_bytes(image(3, 9, 3))]
    plan = plan_request(binary({"name": "x", "shape": [2], "datatype": "BYTES"}, files_tensor(*files),
                               parameters={"format": "color", "binary_data_output": True}))
    assert plan.sizes == [(6, 4), (3, 9)] and plan.fmt == "color"
    assert np.array_equal(plan.images()[1], image(3, 9, 3))
    # base64 in JSON, and JSON numbers
    encoded = base64.b64encode(files[0]).decode()
    plan = plan_request(json_request(inputs=[{"name": "x", "shape": [1], "datatype": "BYTES", "data": [encoded]}]))
    assert np.array_equal(plan.images()[0], image(6, 4, 2))
    plan = plan_request(json_request(inputs=[{"name": "x", "shape": [1, 2, 3], "datatype": "UINT8",
                                              "data": [0, 1, 2, 253, 254, 255]}]))
    assert plan.images()[0].tolist() == [[[0, 1, 2], [253, 254, 255]]]


def test_counts_and_pixels_are_limited_before_decoding():
    png = png_bytes(image(8, 8, 0))
    many = {"name": "x", "shape": [3], "datatype": "BYTES"}
    assert len(plan_request(binary(many, files_tensor(png, png, png)), max_images=3).sizes) == 3
    refused(binary(many, files_tensor(png, png, png)), "3 images, over this server's limit of 2", max_images=2)
    # the count comes from the shape: a file that is no image is never looked at
    refused(binary(many, files_tensor(png, b"nope", png)), "3 images", max_images=2)
    # pixels add up over the request's images, read from headers (a 10-byte body may claim a huge image)
    two = {"name": "x", "shape": [2], "datatype": "BYTES"}
    headers = files_tensor(huge_png_header(1000, 600), huge_png_header(1000, 500))
    pngs = {"format": "trainid", "binary_data_output": True}
    refused(binary(two, headers, parameters=pngs), "1.1 megapixels, over this server's limit of 1", max_megapixels=1)
    assert plan_request(binary(two, headers, parameters=pngs), max_megapixels=1.1).pixels == 1_100_000
    pixels = {"name": "x", "shape": [4, 500, 500, 3], "datatype": "UINT8"}
    refused(binary(pixels, b""), "1.0 megapixels, over this server's limit of 0.9", max_megapixels=0.9)
    refused(binary({**pixels, "shape": [5, 2, 2, 3]}, bytes(60)), "5 images", max_images=4)


def test_uint8_values_and_sizes_are_checked():
    one = {"name": "x", "shape": [1, 1, 3], "datatype": "UINT8"}
    for data in ([256, 0, 0], [-1, 0, 0], [0.5, 0, 0], [2**70, 0, 0]):
        refused(json_request(inputs=[{**one, "data": data}]), "integers in 0..255")
    refused(json_request(inputs=[{**one, "data": [1, 2]}]), "2 values do not fit shape [1, 1, 3]")
    refused(binary(one, bytes(4)), "4 bytes of data do not fit shape [1, 1, 3]")


def test_bytes_elements_are_split_safely():
    assert split_bytes(files_tensor(b"ab", b"", b"c"), 3, "x") == [b"ab", b"", b"c"]
    assert len(split_bytes(files_tensor(*[b"a"] * 10), 2, "x")) == 3  # stops one past the promised count
    with pytest.raises(InvalidInput, match="claims 9 bytes, past the end"):
        split_bytes(b"\x09\0\0\0abc", 1, "x")
    with pytest.raises(InvalidInput, match="cut short"):
        split_bytes(files_tensor(b"ab") + b"\x01", 2, "x")


def test_outputs_formats_and_json_answers():
    pixels = {"name": "x", "shape": [1, 1, 3], "datatype": "UINT8", "data": [0, 0, 0]}
    refused(json_request(inputs=[pixels], outputs=[{"name": "mask"}]), "output 'mask' does not exist")
    refused(json_request(inputs=[pixels], outputs=[{"name": "png"}]), "does not come with format=ids")
    refused(json_request(inputs=[pixels], parameters={"format": "overlay"}), "binary-tensor extension")
    refused(json_request(inputs=[pixels], parameters={"alpha": 1.5}), "alpha must be in [0, 1]")
    refused(json_request(inputs=[pixels], parameters={"format": 3}), "format must be one of")
    side = int((JSON_MAX_MEGAPIXELS * 1e6) ** 0.5)
    big = {"name": "x", "shape": [side + 1, side + 1, 3], "datatype": "UINT8"}
    raw = bytes((side + 1) ** 2 * 3)
    refused(binary(big, raw), "too many for a JSON answer")
    assert plan_request(binary(big, raw, parameters={"binary_data_output": True})).pixels == (side + 1) ** 2
    assert plan_request(binary({**big, "shape": [side, side, 3]}, bytes(side * side * 3))).pixels == side * side


@pytest.mark.parametrize("header, says", [
    ([1], "JSON object with a list of inputs"),
    ({"inputs": "x"}, "JSON object with a list of inputs"),
    ({"id": 1, "inputs": []}, "id is a string"),
    ({"inputs": [{"name": "x", "shape": [1]}]}, "a name, a shape and a datatype"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "parameters": [1]}]}, "parameters are an object"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": "9"}}]},
     "byte count"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 99}}]},
     "runs past the end"),
    ({"inputs": [], "outputs": "labels"}, "list of objects with a name"),
])
def test_malformed_binary_headers_are_400(header, says):
    text = json.dumps(header).encode()
    with pytest.raises(InvalidInput, match=says):
        request_from_bytes(text + b"rest", len(text), "m")


def test_binary_inputs_keep_their_bytes():
    pixels = image(3, 4, 5)
    request = binary({"name": "x", "shape": [3, 4, 3], "datatype": "UINT8"}, pixels.tobytes(),
                     id="r1", outputs=[{"name": "labels", "parameters": {"binary_data": True}}])
    assert request.id == "r1" and request.inputs[0]._raw_data == pixels.tobytes()
    assert [o.name for o in request.request_outputs] == ["labels"] and request.request_outputs[0].binary_data
