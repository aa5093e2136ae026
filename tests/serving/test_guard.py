"""``aticnet serve`` where others can reach it: loopback by default, no model-repository control, a 4xx for every
malformed REST and gRPC request (the server still ready after), bodies over the limit refused unread, too many
images refused before decoding, liveness during a large image, a bounded queue, and a replica's death answered 503
with the next request served."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.serving.oip import (
    binary_body,
    binary_request,
    files_tensor,
    huge_png_header,
    image,
    png_bytes,
    raw_http,
)

pytest.importorskip("kserve")
pytest.importorskip("ray.serve")
grpc = pytest.importorskip("grpc")
httpclient = pytest.importorskip("tritonclient.http")

UINT8 = {"name": "image", "datatype": "UINT8"}
BYTES = {"name": "image", "datatype": "BYTES"}
PIXELS = {"name": "image", "shape": [4, 4, 3], "datatype": "UINT8"}  # a valid input, to break one thing at a time


def infer_url(server, model: str = "street") -> str:
    return f"{server['url']}/v2/models/{model}/infer"


def labels_of(server, model: str, pixels: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}", network_timeout=120)
    tensor = httpclient.InferInput("image", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    out = httpclient.InferRequestedOutput("labels", binary_data=True)
    return client.infer(model, [tensor], outputs=[out]).as_numpy("labels")


def binary_with_length(url: str, body: bytes, length: str) -> httpx.Response:
    return httpx.post(url, content=body, timeout=60, headers={"Inference-Header-Content-Length": length,
                                                              "Content-Type": "application/octet-stream"})


def header_only(url: str, header: object) -> httpx.Response:
    text = json.dumps(header).encode()
    return binary_with_length(url, text, str(len(text)))


def json_infer(url: str, **request: object) -> httpx.Response:
    return httpx.post(url, json=request, timeout=60)


def rest_battery(server) -> dict[str, tuple[str, httpx.Response]]:
    """Malformed REST requests: name -> (what the error must say, the answer)."""
    url, base = infer_url(server), server["url"]
    png = png_bytes(image(8, 8, 0))
    half_png = png_bytes(image(64, 64, 1))
    one_pixel = {"inputs": [{**PIXELS, "shape": [1, 1, 3], "data": [0, 0, 0]}]}
    cases = {
        # the images
        "garbage bytes": ("not an image", binary_request(url, {**BYTES, "shape": [1]}, files_tensor(b"\0garbage" * 9))),
        "PNG header of 10000x10000": ("megapixels", binary_request(
            url, {**BYTES, "shape": [1]}, files_tensor(huge_png_header(10000, 10000)))),
        "truncated PNG": ("cannot decode", binary_request(url, {**BYTES, "shape": [1]},
                                                          files_tensor(half_png[:len(half_png) // 2]))),
        "PNGs of two sizes as ids": ("several sizes", binary_request(
            url, {**BYTES, "shape": [2]}, files_tensor(png, png_bytes(image(9, 8, 0))))),
        "9 files with --max-batch 8": ("9 images", binary_request(url, {**BYTES, "shape": [9]}, files_tensor(*[png] * 9))),
        "9 images of pixels": ("9 images", binary_request(url, {**UINT8, "shape": [9, 4, 4, 3]}, bytes(9 * 48))),
        "2000x1000 pixels": ("megapixels", binary_request(url, {**UINT8, "shape": [2000, 1000, 3]}, bytes(6))),
        "8 x 400x400 pixels": ("megapixels", binary_request(url, {**UINT8, "shape": [8, 400, 400, 3]}, bytes(6))),
        # datatypes, shapes and data
        "FP32": ("datatype FP32", binary_request(url, {"name": "image", "shape": [4, 4, 3], "datatype": "FP32"},
                                                 bytes(192))),
        "BOOL JSON": ("datatype BOOL", json_infer(url, inputs=[{**PIXELS, "datatype": "BOOL", "data": [True] * 48}])),
        "4 channels": ("shape [H, W, 3]", binary_request(url, {**UINT8, "shape": [4, 4, 4]}, bytes(64))),
        "an empty side": ("shape [H, W, 3]", binary_request(url, {**UINT8, "shape": [0, 4, 3]}, b"")),
        "a negative side": ("shape [H, W, 3]", binary_request(url, {**UINT8, "shape": [-4, 4, 3]}, bytes(48))),
        "a shape of words": ("shape must be a list of integers",
                             binary_request(url, {**UINT8, "shape": ["4", 4, 3]}, bytes(48))),
        "BYTES of shape [1, 1]": ("shape [N]", binary_request(url, {**BYTES, "shape": [1, 1]}, files_tensor(png))),
        "10 bytes for 40x40x3": ("do not fit shape", binary_request(url, {**UINT8, "shape": [40, 40, 3]}, bytes(10))),
        "UINT8 300 and -5": ("0..255", json_infer(url, inputs=[{**PIXELS, "shape": [1, 1, 3], "data": [300, -5, 0]}])),
        "UINT8 2**70": ("0..255", json_infer(url, inputs=[{**PIXELS, "shape": [1, 1, 3], "data": [2**70, 0, 0]}])),
        "UINT8 fractions": ("0..255", json_infer(url, inputs=[{**PIXELS, "shape": [1, 1, 3], "data": [0.5, 1, 2]}])),
        "UINT8 words": ("", json_infer(url, inputs=[{**PIXELS, "shape": [1, 1, 3], "data": ["a", "b", "c"]}])),
        "JSON data too short": ("do not fit shape", json_infer(url, inputs=[{**PIXELS, "data": [1, 2, 3]}])),
        "BYTES length past the end": ("past the end of the data", binary_request(
            url, {**BYTES, "shape": [1]}, b"\xff\xff\x00\x00" + png)),
        "BYTES length cut short": ("cut short", binary_request(url, {**BYTES, "shape": [2]}, files_tensor(png) + b"\1\0")),
        "BYTES one element for [2]": ("1 elements do not fit", binary_request(url, {**BYTES, "shape": [2]},
                                                                               files_tensor(png))),
        "BYTES not base64": ("base64", json_infer(url, inputs=[{**BYTES, "shape": [1], "data": ["%%%"]}])),
        "BYTES data a string": ("valid list", json_infer(url, inputs=[{**BYTES, "shape": [1], "data": "abc"}])),
        "two inputs": ("one input tensor", json_infer(url, inputs=[one_pixel["inputs"][0]] * 2)),
        "no input": ("one input tensor", json_infer(url, inputs=[])),
        # parameters and outputs
        "format jpeg": ("format must be", json_infer(url, parameters={"format": "jpeg"}, **one_pixel)),
        "alpha x": ("alpha must be a number", json_infer(url, parameters={"format": "overlay", "alpha": "x"},
                                                         **one_pixel)),
        "alpha 2": ("alpha must be in [0, 1]", json_infer(url, parameters={"format": "overlay", "alpha": 2},
                                                          **one_pixel)),
        "PNG answer in JSON": ("binary-tensor extension", json_infer(url, parameters={"format": "trainid"}, **one_pixel)),
        "an output that does not exist": ("does not exist", json_infer(url, outputs=[{"name": "x"}], **one_pixel)),
        "png output with format ids": ("does not come with format=ids", json_infer(url, outputs=[{"name": "png"}],
                                                                                   **one_pixel)),
        "labels of 600x500 as JSON": ("too many for a JSON answer", binary_request(
            url, {**UINT8, "shape": [600, 500, 3]}, bytes(600 * 500 * 3))),
        # binary-extension headers
        "unreadable header": ("unreadable inference header", binary_with_length(url, b"\xff" * 100, "50")),
        "header length a word": ("not a number", binary_with_length(url, b"{}", "abc")),
        "header length past the body": ("not within the body", binary_with_length(url, b"{}", "500")),
        "header a list": ("JSON object with a list of inputs", header_only(url, [1, 2])),
        "inputs an object": ("JSON object with a list of inputs", header_only(url, {"inputs": {"a": 1}})),
        "an input without datatype": ("a name, a shape and a datatype", header_only(
            url, {"inputs": [{"name": "image", "shape": [1]}]})),
        "id a number": ("id is a string", header_only(url, {"id": 5, "inputs": []})),
        "parameters a list": ("parameters an object", header_only(url, {"parameters": [1], "inputs": []})),
        "outputs of strings": ("list of objects with a name", binary_request(
            url, {**UINT8, "shape": [1, 1, 3]}, bytes(3), outputs=["x"])),
        "binary_data_size a word": ("byte count", header_only(
            url, {"inputs": [{**PIXELS, "parameters": {"binary_data_size": "abc"}}]})),
        "binary_data_size negative": ("byte count", header_only(
            url, {"inputs": [{**PIXELS, "parameters": {"binary_data_size": -5}}]})),
        "binary_data_size past the end": ("runs past the end", header_only(
            url, {"inputs": [{**PIXELS, "parameters": {"binary_data_size": 48}}]})),
        "neither data nor size": ("neither data nor binary_data_size", header_only(url, {"inputs": [PIXELS]})),
        # JSON that is no inference request, routes, models
        "JSON cut short": ("", httpx.post(url, content=b'{"inputs": [', timeout=60,
                                          headers={"Content-Type": "application/json"})),
        "JSON of the wrong shape": ("", json_infer(url, inputs="x")),
        "an unknown model": ("nope", json_infer(infer_url(server, "nope"), **one_pixel)),
        "GET on infer": ("", httpx.get(url, timeout=60)),
        "unload": ("no model-repository control", httpx.post(f"{base}/v2/repository/models/street/unload", timeout=60)),
        "load": ("no model-repository control", httpx.post(f"{base}/v2/repository/models/street/load", timeout=60)),
        "repository index": ("no model-repository control", httpx.post(f"{base}/v2/repository/index", timeout=60)),
        "a model version": ("no such route", json_infer(f"{base}/v2/models/street/versions/1/infer", **one_pixel)),
        "the v1 protocol": ("no such route", httpx.post(f"{base}/v1/models/street:predict", json={}, timeout=60)),
    }
    return cases


@pytest.mark.slow
def test_malformed_rest_requests_get_4xx_and_the_server_stays_ready(server, street):
    cases = rest_battery(server)
    assert len(cases) >= 50
    for name, (says, answer) in cases.items():
        assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text)
        error = answer.json().get("error", "")
        assert says in error, (name, answer.text)
        assert "Traceback" not in error and "pid" not in error and len(error) < 400, (name, error)
    assert httpx.get(f"{server['url']}/v2/health/ready", timeout=10).status_code == 200
    pixels = image(24, 40, 9)
    assert np.array_equal(labels_of(server, "street", pixels[None])[0], street.predict(pixels).numpy())


def grpc_battery(server) -> dict[str, tuple[grpc.StatusCode, str, grpc.RpcError | None]]:
    """Malformed gRPC requests: name -> (the status and words the error must have, the error raised)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    bad, missing, denied = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED
    png = png_bytes(image(8, 8, 0))

    def tensor(datatype: str, shape: list[int], **contents: list) -> pb.ModelInferRequest.InferInputTensor:
        return pb.ModelInferRequest.InferInputTensor(name="image", datatype=datatype, shape=shape,
                                                     contents=pb.InferTensorContents(**contents) if contents else None)

    def infer(*inputs, raw=(), model="street", parameters=None, outputs=()) -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name=model, inputs=list(inputs), raw_input_contents=list(raw),
                                       outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=o) for o in outputs])
        for key, value in (parameters or {}).items():
            request.parameters[key].string_param = value
        return request

    calls = {
        "FP32": (bad, "datatype FP32", "ModelInfer", infer(tensor("FP32", [4, 4, 3]), raw=[bytes(192)])),
        "data does not fit shape": (bad, "do not fit shape", "ModelInfer", infer(tensor("UINT8", [4, 4, 3]), raw=[bytes(5)])),
        "an unknown model": (missing, "nope", "ModelInfer", infer(tensor("UINT8", [1, 1, 3]), raw=[bytes(3)], model="nope")),
        "9 images": (bad, "9 images", "ModelInfer", infer(tensor("UINT8", [9, 2, 2, 3]), raw=[bytes(108)])),
        "megapixels": (bad, "megapixels", "ModelInfer", infer(tensor("UINT8", [2000, 1000, 3]), raw=[bytes(6)])),
        "format jpeg": (bad, "format must be", "ModelInfer", infer(tensor("UINT8", [1, 1, 3]), raw=[bytes(3)],
                                                                   parameters={"format": "jpeg"})),
        "two raw contents, one input": (bad, "raw input contents", "ModelInfer",
                                        infer(tensor("UINT8", [1, 1, 3]), raw=[bytes(3), bytes(3)])),
        "contents and raw": (bad, "contents field must not be specified", "ModelInfer",
                             infer(tensor("UINT8", [1, 1, 3], uint_contents=[0, 0, 0]), raw=[bytes(3)])),
        "not an image": (bad, "not an image", "ModelInfer", infer(tensor("BYTES", [1], bytes_contents=[b"\0nope"]))),
        "UINT8 300": (bad, "0..255", "ModelInfer", infer(tensor("UINT8", [1, 1, 3], uint_contents=[300, 0, 0]))),
        "an output that does not exist": (bad, "does not exist", "ModelInfer",
                                          infer(tensor("UINT8", [1, 1, 3]), raw=[bytes(3)], outputs=["x"])),
        "PNGs of two sizes": (bad, "several sizes", "ModelInfer",
                              infer(tensor("BYTES", [2], bytes_contents=[png, png_bytes(image(9, 8, 0))]))),
        "a message over 64 MiB": (grpc.StatusCode.RESOURCE_EXHAUSTED, "", "ModelInfer",
                                  infer(tensor("UINT8", [65, 2**20, 1]), raw=[bytes(65 * 2**20)])),
        "unload": (denied, "no model-repository control", "RepositoryModelUnload",
                   pb.RepositoryModelUnloadRequest(model_name="street")),
        "load": (denied, "no model-repository control", "RepositoryModelLoad",
                 pb.RepositoryModelLoadRequest(model_name="street")),
    }
    results = {}
    with grpc.insecure_channel(f"127.0.0.1:{server['grpc']}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        for name, (code, says, method, message) in calls.items():
            try:
                getattr(stub, method)(message, timeout=60)
                results[name] = (code, says, None)
            except grpc.RpcError as e:
                results[name] = (code, says, e)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="street"), timeout=30).ready
    return results


@pytest.mark.slow
def test_malformed_grpc_requests_get_client_errors_and_the_model_stays_loaded(server, street):
    results = grpc_battery(server)
    for name, (code, says, error) in results.items():
        assert error is not None, f"{name}: answered without an error"
        assert error.code() == code and says in error.details(), (name, error.code(), error.details())
    pixels = image(16, 24, 3)
    assert np.array_equal(labels_of(server, "street", pixels[None])[0], street.predict(pixels).numpy())


@pytest.mark.slow
def test_the_default_address_is_loopback_only(server):
    psutil = pytest.importorskip("psutil")
    process = psutil.Process(server["process"].pid)
    connections = getattr(process, "net_connections", None) or process.connections  # psutil >= 6 / older
    listening = {c.laddr.port: c.laddr.ip for c in connections("inet") if c.status == psutil.CONN_LISTEN}
    for port in (server["http"], server["grpc"]):
        assert port in listening and listening[port] in ("127.0.0.1", "::ffff:127.0.0.1"), (port, listening)
    log = server["log"].read_text()
    assert f"on http://127.0.0.1:{server['http']}/v2 and gRPC 127.0.0.1:{server['grpc']}" in log
    assert "no authentication" not in log  # the warning is for addresses others reach


@pytest.mark.slow
def test_bodies_over_the_limit_get_413_unread(server):
    head = (f"POST /v2/models/street/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: 100\r\nContent-Length: {300 * 2**20}").encode()
    status, body = raw_http(server["http"], head, b"\0" * 4096)  # 300 MB promised, 4 kB sent: refused unread
    assert status == 413 and "limit of 67108864 bytes" in json.loads(body)["error"]
    # JSON is parsed on the event loop: its limit is lower, and the answer says how to send more
    status, body = raw_http(server["http"], (f"POST /v2/models/street/infer HTTP/1.1\r\nHost: x\r\n"
                                             f"Content-Type: application/json\r\nContent-Length: {9 * 2**20}").encode())
    assert status == 413 and "binary-tensor extension" in json.loads(body)["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(70):
            yield bytes(2**20)

    answer = httpx.post(infer_url(server), content=chunks(), timeout=60,
                        headers={"Inference-Header-Content-Length": "100"})
    assert answer.status_code == 413
    assert httpx.get(f"{server['url']}/v2/health/ready", timeout=10).status_code == 200


def in_flight(server, pixels: np.ndarray, result: dict) -> threading.Thread:
    """A thread asking for ``pixels``' labels; ``result["done"]`` is when it was answered."""

    def ask() -> None:
        try:
            result["labels"] = labels_of(server, "street", pixels)
        except Exception as e:  # noqa: BLE001 (checked by the test)
            result["error"] = e
        result["done"] = time.monotonic()

    thread = threading.Thread(target=ask)
    thread.start()
    return thread


@pytest.mark.slow
def test_too_many_images_and_liveness_are_answered_while_large_requests_run(server, street):
    """Six 1-megapixel batches of 8 (the fixture's limit) keep the replica busy for seconds; meanwhile 9 images are
    refused and /v2/health/live answers, both before the last large answer."""
    large = [np.stack([image(500, 250, 8 * k + s) for s in range(8)]) for k in range(6)]
    results = [{} for _ in large]
    threads = [in_flight(server, pixels, result) for pixels, result in zip(large, results)]
    time.sleep(0.3)
    refused = binary_request(infer_url(server), {**BYTES, "shape": [9]},
                             files_tensor(*[png_bytes(image(8, 8, 0))] * 9))
    refused_at = time.monotonic()
    live_at = []
    while any("done" not in r for r in results) and len(live_at) < 400:
        assert httpx.get(f"{server['url']}/v2/health/live", timeout=5).status_code == 200
        live_at.append(time.monotonic())
        time.sleep(0.05)
    for thread in threads:
        thread.join(300)
    assert all("error" not in r for r in results), [r.get("error") for r in results]
    last = max(r["done"] for r in results)
    assert refused.status_code == 400 and "9 images" in refused.json()["error"]
    assert refused_at < last, "the refusal waited for the large requests"
    assert sum(t < last for t in live_at) >= 2, "liveness did not answer during the large requests"
    assert np.array_equal(results[2]["labels"][3], street.predict(large[2][3]).numpy())


@pytest.mark.slow
def test_clients_mixing_valid_and_bad_requests_lose_no_valid_one(server, street):
    pictures = {seed: image(24, 32, seed) for seed in range(6)}
    want = {seed: street.predict(p).numpy() for seed, p in pictures.items()}
    bad = {"inputs": [{**PIXELS, "shape": [1, 1, 3], "data": [300, -5, 0]}]}

    def client(number: int) -> list[tuple[str, int, bool]]:
        outcomes = []
        for step in range(6):
            if (number + step) % 3 == 0:
                answer = json_infer(infer_url(server), **bad)
                outcomes.append(("bad", answer.status_code, True))
            else:
                seed = (number + step) % len(pictures)
                labels = labels_of(server, "street", pictures[seed][None])[0]
                outcomes.append(("valid", 200, np.array_equal(labels, want[seed])))
        return outcomes

    with ThreadPoolExecutor(8) as pool:
        outcomes = [o for many in pool.map(client, range(8)) for o in many]
    assert all(ok for kind, _, ok in outcomes if kind == "valid"), "a valid request got wrong labels"
    assert all(status == 400 for kind, status, _ in outcomes if kind == "bad")
    assert sum(kind == "valid" for kind, _, _ in outcomes) == 32


@pytest.mark.slow
def test_a_full_queue_answers_503_with_retry_after(server, street):
    """--max-queued 12: of 48 requests sent at once, those beyond what the replica takes (16) and the queue holds
    are refused at once with 503 and Retry-After; the others are served."""
    pixels = np.stack([image(500, 250, s) for s in range(4)])  # half a megapixel: the replica drains slowly
    body, length = binary_body({**UINT8, "shape": list(pixels.shape)}, pixels.tobytes(),
                               parameters={"binary_data_output": True})
    start = threading.Barrier(48)

    def one(_: int) -> httpx.Response:
        start.wait()
        return binary_with_length(infer_url(server), body, str(length))

    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(one, range(48)))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503} and 503 in statuses and statuses.count(200) >= 12, statuses
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["Retry-After"] == "1" and "--max-queued" in refused.json()["error"]
    assert np.array_equal(labels_of(server, "street", pixels[:1])[0], street.predict(pixels[0]).numpy())


@pytest.mark.slow
def test_a_replica_killed_mid_request_answers_no_500_and_the_next_request_is_served(server):
    """Runs last in this module: it kills the "other" model's replica while it holds eight 1-megapixel requests
    (Ray Serve starts a new one). Each of them is served (Ray Serve may hand it to the new replica) or answered 503
    without internals; readiness goes down and up again; then the model serves again."""
    psutil = pytest.importorskip("psutil")
    replicas = [p for p in psutil.Process(server["process"].pid).children(recursive=True)
                if "ServeReplica:other" in " ".join(p.cmdline())]
    assert len(replicas) == 1, [p.cmdline() for p in replicas]
    large = np.stack([image(500, 250, s) for s in range(8)])
    body, length = binary_body({**UINT8, "shape": list(large.shape)}, large.tobytes(),
                               parameters={"binary_data_output": True})
    with ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(binary_with_length, infer_url(server, "other"), body, str(length)) for _ in range(8)]
        time.sleep(0.3)  # the replica holds them: two decoded, one batch running, the others waiting for room
        replicas[0].kill()
        # readiness turns false once Ray Serve sees the replica gone, and true again when the new one has loaded
        deadline, seen = time.monotonic() + 120, []
        while 503 not in seen or seen[-1] != 200:
            assert time.monotonic() < deadline, f"readiness did not go down and up again in 120 s: {seen[-5:]}"
            seen.append(httpx.get(f"{server['url']}/v2/health/ready", timeout=10).status_code)
            time.sleep(0.2)
        answers = [p.result() for p in pending]
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    for answer in (a for a in answers if a.status_code == 503):
        error = answer.json()["error"]
        assert "restarts" in error and "pid" not in error.lower() and "actor" not in error.lower(), error
    import aticnet

    pixels = image(16, 24, 4)
    want = aticnet.load(server["root"] / "other.safetensors", backend="torch").predict(pixels).numpy()
    assert np.array_equal(labels_of(server, "other", pixels[None])[0], want)
