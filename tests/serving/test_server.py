"""``aticnet serve``: a real Open Inference Protocol client against the server in a subprocess (a local Ray, a
tiny model) gets the labels of ``predict``, over REST, JSON and gRPC, and batched with other clients' requests."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

import aticnet
from tests.serving.oip import image, png_bytes

pytest.importorskip("kserve")
pytest.importorskip("ray.serve")
httpclient = pytest.importorskip("tritonclient.http")

# The server (tests/serving/conftest.py) starts once for the serving tests: a local Ray, one replica per model.


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
    assert main(["serve", "--weights", "a.onnx", "--max-queued", "0"]) == 2
    assert "--max-queued must be at least 1" in capsys.readouterr().err


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
def test_requests_batched_together_each_get_their_own_labels(server, street):
    """Eight different images sent at once meet in shared forward passes (the answers say so) and each answer is
    ``predict`` of its own image: batching never hands one request another's labels."""
    pictures = {seed: image(32, 48, seed) for seed in range(8)}

    def one(seed: int) -> tuple[int, np.ndarray, dict]:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}")
        answer = triton_infer(client, "street", pictures[seed][None])
        return seed, answer.as_numpy("labels")[0], answer.get_response()["parameters"]

    shared = 0
    for _ in range(3):  # three rounds, in case a busy machine lets a round's requests arrive 100 ms apart
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, pictures))
        for seed, labels, parameters in answers:
            assert np.array_equal(labels, street.predict(pictures[seed]).numpy()), seed
            assert 1 <= parameters["batch_requests"] <= parameters["batch_size"] <= 8
        shared = max(a[2]["batch_requests"] for a in answers)
        if shared > 1:
            break
    assert shared > 1, "no two concurrent requests shared a forward pass"
    # the images differ, so equal answers could not hide a mix-up
    assert len({a[1].tobytes() for a in answers}) == len(answers)


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
