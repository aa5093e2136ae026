"""``aticnet serve``: a real Open Inference Protocol client against the server in a subprocess (a local Ray, a
tiny model), batching under concurrent load, and a flood of bad requests answered with 4xx while it keeps serving."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import aticnet
from aticnet import build_model
from aticnet.data.cityscapes_labels import CLASS_COLORS, CLASS_NAMES
from aticnet.models.weights import save_weights

pytest.importorskip("kserve")
pytest.importorskip("ray.serve")
httpclient = pytest.importorskip("tritonclient.http")

# The server's tests are slow: one server start (a local Ray, one replica per model) costs about 20 s.


def test_model_names_and_flag_checks(tmp_path, capsys):
    from aticnet.cli import main
    from aticnet.serving.server import model_name_of

    (tmp_path / "run-7").mkdir()
    assert model_name_of(str(tmp_path / "run-7")) == "run-7"
    assert model_name_of(str(tmp_path / "int8" / "aticnet.xml")) == "aticnet"
    assert model_name_of("aticnet-camvid") == "aticnet-camvid"
    assert main(["serve", "--weights", "a.onnx", "b.onnx", "--name", "one"]) == 2
    assert "--name gives 1 names for 2 --weights" in capsys.readouterr().err
    assert main(["serve", "--weights", "a.onnx", "--max-batch", "0"]) == 2
    assert "--max-batch must be at least 1" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_weights(path, seed: int) -> None:
    torch.manual_seed(seed)
    model = build_model("aticnet", num_classes=19, width=0.125).eval()
    save_weights(model, path, {"classes": CLASS_NAMES, "colors": [list(c) for c in CLASS_COLORS],
                               "dataset": "synthetic"})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server on free ports serving a run folder ("street") and a .safetensors file ("other")."""
    root = tmp_path_factory.mktemp("serve")
    tiny_weights(root / "street" / "model.safetensors", 0)
    tiny_weights(root / "other.safetensors", 1)
    http, grpc = free_port(), free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "aticnet", "serve", "--weights", str(root / "street"), str(root / "other.safetensors"),
         "--http-port", str(http), "--grpc-port", str(grpc), "--backend", "torch", "--max-batch", "8",
         "--batch-wait-ms", "100", "--max-megapixels", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{http}"
    deadline = time.time() + 180
    while time.time() < deadline:
        assert process.poll() is None, (root / "server.log").read_text()[-3000:]
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the server was not ready in 180 s:\n" + (root / "server.log").read_text()[-3000:])
    yield {"url": url, "http": http, "grpc": grpc, "root": root, "process": process}
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def street(server):
    return aticnet.load(server["root"] / "street", backend="torch")


def image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def triton_infer(client, model: str, array: np.ndarray, datatype: str = "UINT8", output: str = "labels",
                 parameters: dict | None = None):
    tensor = httpclient.InferInput("image", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=True)
    return client.infer(model, [tensor], outputs=[httpclient.InferRequestedOutput(output, binary_data=True)],
                        parameters=parameters)


@pytest.mark.slow
def test_an_oip_client_gets_the_labels_of_predict(server, street):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("street") and client.is_model_ready("other")
    meta = client.get_model_metadata("street")
    assert meta["name"] == "street" and {"UINT8", "BYTES"} <= {i["datatype"] for i in meta["inputs"]}

    pixels = np.stack([image(40, 56, 1), image(40, 56, 2)])
    labels = triton_infer(client, "street", pixels).as_numpy("labels")
    assert labels.shape == (2, 40, 56) and labels.dtype == np.uint8
    for one, want in zip(pixels, labels):
        assert np.array_equal(street.predict(one).numpy(), want)
    # the other model answers with its own weights
    other = triton_infer(client, "other", pixels[:1]).as_numpy("labels")[0]
    assert np.array_equal(other, aticnet.load(server["root"] / "other.safetensors", backend="torch")
                          .predict(pixels[0]).numpy())

    # PNG files in, PNG label files and overlays out
    files = np.array([png_bytes(pixels[0])], dtype=np.object_)
    pngs = triton_infer(client, "street", files, "BYTES", "png", {"format": "trainid"}).as_numpy("png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(pngs[0]))), labels[0])
    overlay = triton_infer(client, "street", files, "BYTES", "png", {"format": "overlay", "alpha": 0.5}).as_numpy("png")
    want = street.overlay(pixels[0], labels[0], 0.5)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(overlay[0])).convert("RGB")), want)


@pytest.mark.slow
def test_json_requests_without_the_binary_extension(server, street):
    pixels = image(8, 12, 3)
    body = {"inputs": [{"name": "image", "shape": [8, 12, 3], "datatype": "UINT8", "data": pixels.ravel().tolist()}]}
    answer = httpx.post(f"{server['url']}/v2/models/street/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    out = answer.json()["outputs"][0]
    assert out["shape"] == [1, 8, 12]
    assert np.array_equal(np.array(out["data"], np.uint8).reshape(8, 12), street.predict(pixels).numpy())


@pytest.mark.slow
def test_concurrent_requests_share_a_batch(server):
    def one(seed: int) -> dict:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}")
        return triton_infer(client, "street", image(32, 48, seed)[None]).get_response()["parameters"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(16)))
    sizes = [a["batch_size"] for a in answers]
    assert max(sizes) > 1, sizes  # with a 100 ms wait, concurrent requests meet in one forward pass
    assert max(sizes) <= 8 and all(a["batch_requests"] <= a["batch_size"] for a in answers)


def binary_request(url: str, header: dict, raw: bytes) -> httpx.Response:
    header = {**header, "parameters": {"binary_data_size": len(raw)}}
    text = json.dumps({"inputs": [header]}).encode()
    return httpx.post(url, content=text + raw, timeout=30,
                      headers={"Inference-Header-Content-Length": str(len(text)),
                               "Content-Type": "application/octet-stream"})


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG claiming width x height whose pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def files_tensor(*files: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(f)) + f for f in files)


def disconnect_mid_request(port: int) -> None:
    """Promise a 1 MB body, send 1 kB of it, and hang up."""
    header = json.dumps({"inputs": [{"name": "image", "shape": [1000, 333, 3], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": 999000}}]}).encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v2/models/street/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                  + f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {len(header) + 999000}\r\n\r\n"
                  .encode() + header + b"\0" * 1000)


@pytest.mark.slow
def test_bad_requests_get_4xx_naming_the_problem_and_serving_goes_on(server, street):
    url = f"{server['url']}/v2/models/street/infer"
    bytes_input = {"name": "image", "shape": [1], "datatype": "BYTES"}
    cases = {
        "not an image": binary_request(url, bytes_input, files_tensor(b"\x00garbage\xff" * 10)),
        "megapixels": binary_request(url, bytes_input, files_tensor(huge_png_header(10000, 10000))),
        "datatype FP32": binary_request(url, {"name": "image", "shape": [4, 4, 3], "datatype": "FP32"},
                                        np.zeros((4, 4, 3), np.float32).tobytes()),
        "shape [H, W, 3]": binary_request(url, {"name": "image", "shape": [4, 4, 4], "datatype": "UINT8"},
                                          bytes(64)),
        "does not fit shape": binary_request(url, {"name": "image", "shape": [40, 40, 3], "datatype": "UINT8"},
                                             bytes(10)),
        "megapixels ": binary_request(url, {"name": "image", "shape": [2000, 1000, 3], "datatype": "UINT8"},
                                      bytes(6)),
        "format must be": httpx.post(url, timeout=30, json={
            "parameters": {"format": "jpeg"},
            "inputs": [{"name": "image", "shape": [1, 1, 3], "datatype": "UINT8", "data": [0, 0, 0]}]}),
        "unreadable inference header": httpx.post(url, content=b"\xff" * 100, timeout=30,
                                                  headers={"Inference-Header-Content-Length": "50"}),
        "nope": httpx.post(f"{server['url']}/v2/models/nope/infer", timeout=30, json={"inputs": []}),
    }
    for expected, answer in cases.items():
        assert 400 <= answer.status_code < 500, (expected, answer.status_code, answer.text)
        assert expected.strip() in answer.json()["error"], (expected, answer.text)
    for _ in range(3):
        disconnect_mid_request(server["http"])

    assert server["process"].poll() is None
    pixels = image(24, 40, 9)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}")
    labels = triton_infer(client, "street", pixels[None]).as_numpy("labels")[0]
    assert np.array_equal(labels, street.predict(pixels).numpy())


@pytest.mark.slow
def test_grpc_answers_the_same_labels(server, street):
    import asyncio

    from kserve import InferenceGRPCClient, InferInput, InferRequest

    pixels = image(16, 24, 5)[None]

    async def ask():
        tensor = InferInput("image", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels, binary_data=True)
        client = InferenceGRPCClient(f"127.0.0.1:{server['grpc']}")
        try:
            return await client.infer(InferRequest(model_name="street", infer_inputs=[tensor]))
        finally:
            await client.close()

    answer = asyncio.run(ask())
    assert np.array_equal(answer.outputs[0].as_numpy()[0], street.predict(pixels[0]).numpy())
