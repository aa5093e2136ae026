"""The server's parts without a server: the body limit and route guard as ASGI middleware, readiness that follows
the deployments, the replica's pixel budget and its forward passes bounded in images and pixels."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import torch

pytest.importorskip("kserve")
pytest.importorskip("ray.serve")

from fastapi import Request

from aticnet.serving.front import BodyLimit, GuardedDataPlane, RouteGuard, is_loopback, url_host
from aticnet.serving.replica import PixelBudget, predict_bounded


def guarded_app(max_bytes: int, max_json_bytes: int):
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v2/models/m/infer")
    async def infer(request: Request) -> dict:
        return {"read": len(await request.body())}

    @app.post("/v2/repository/models/m/unload")
    async def unload() -> dict:
        return {"unloaded": True}

    app.add_middleware(BodyLimit, max_bytes=max_bytes, max_json_bytes=max_json_bytes)
    app.add_middleware(RouteGuard)
    return app


def post(app, path: str, content, headers: dict | None = None) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post(path, content=content, headers=headers or {})

    return asyncio.run(send())


def test_bodies_over_the_limit_are_413_json_ones_sooner():
    app = guarded_app(max_bytes=1000, max_json_bytes=100)
    binary = {"Inference-Header-Content-Length": "10"}
    assert post(app, "/v2/models/m/infer", bytes(1000), binary).json() == {"read": 1000}
    answer = post(app, "/v2/models/m/infer", bytes(1001), binary)
    assert answer.status_code == 413 and "of 1001 bytes over this server's limit of 1000" in answer.json()["error"]
    assert post(app, "/v2/models/m/infer", bytes(100)).json() == {"read": 100}
    answer = post(app, "/v2/models/m/infer", bytes(101))
    assert answer.status_code == 413 and "limit of 100 bytes" in answer.json()["error"]
    assert "binary-tensor extension" in answer.json()["error"]

    async def chunks():  # no Content-Length: counted as the bytes arrive
        for _ in range(11):
            yield bytes(100)

    answer = post(app, "/v2/models/m/infer", chunks(), binary)  # refused inside the route: FastAPI's own answer
    assert answer.status_code == 413 and "limit of 1000 bytes" in answer.text
    assert post(app, "/v2/models/m/infer", b"x", {"Content-Length": "ten"}).status_code == 400


def test_the_repository_routes_are_refused_before_they_run():
    app = guarded_app(max_bytes=1000, max_json_bytes=100)
    answer = post(app, "/v2/repository/models/m/unload", b"")
    assert answer.status_code == 403 and "no model-repository control" in answer.json()["error"]
    assert post(app, "/v1/models/m:predict", b"{}").status_code == 404


def test_the_log_names_the_address_and_warns_off_loopback(caplog):
    from aticnet.serving.server import announce

    with caplog.at_level("INFO", logger="aticnet.serving.server"):
        announce(["street"], "127.0.0.1", 8080, 8081)
        assert caplog.messages == ["serving street on http://127.0.0.1:8080/v2 and gRPC 127.0.0.1:8081"]
        caplog.clear()
        announce(["street", "other"], "::", 9000, None)
    assert caplog.messages[0] == "serving street, other on http://[::]:9000/v2"
    assert "no authentication: anyone who reaches :: can use it" in caplog.messages[1]
    assert caplog.records[1].levelname == "WARNING"


def test_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.org"))
    assert (url_host("::"), url_host("127.0.0.1")) == ("[::]", "127.0.0.1")


class Registered:
    def __init__(self, ready: bool) -> None:
        self.ready = ready


class Registry:
    def __init__(self, models: dict) -> None:
        self.models = models

    def get_models(self) -> dict:
        return self.models

    def get_model(self, name: str):
        return self.models.get(name)

    async def is_model_ready(self, name: str) -> bool:
        return name in self.models and self.models[name].ready


def test_readiness_follows_the_models_and_their_deployments():
    running = {"a": True, "b": True}

    async def deployments_running(names):
        return all(running[n] for n in names)

    async def check(plane) -> tuple[bool, bool, bool]:
        return await plane.ready(), await plane.model_ready("b"), await plane.model_ready("b", True)

    registry = Registry({"a": Registered(True), "b": Registered(True)})
    assert asyncio.run(check(GuardedDataPlane(registry, ["a", "b"], deployments_running))) == (True, True, True)
    running["b"] = False  # b's replica restarts: not ready, but an inference still waits for it
    assert asyncio.run(check(GuardedDataPlane(registry, ["a", "b"], deployments_running))) == (False, False, True)
    running["b"] = True
    del registry.models["b"]  # a model gone from the registry: the server is not ready
    plane = GuardedDataPlane(registry, ["a", "b"], deployments_running)
    assert asyncio.run(plane.ready()) is False


def test_the_pixel_budget_lets_holders_in_only_while_they_fit():
    async def scenario() -> list[str]:
        budget, events = PixelBudget(100), []

        async def holder(name: str, pixels: int, seconds: float) -> None:
            async with budget.hold(pixels):
                events.append(f"{name} in ({budget.used})")
                await asyncio.sleep(seconds)
            events.append(f"{name} out")

        await asyncio.gather(holder("a", 60, 0.05), holder("b", 60, 0.01), holder("c", 30, 0.01),
                             holder("huge", 500, 0.01))
        return events

    events = asyncio.run(scenario())
    # b (60) waits for a to leave; c (30) fits beside a; "huge" takes the whole budget, alone
    assert events.index("b in (60)") > events.index("a out")
    assert "c in (90)" in events
    huge = events.index("huge in (100)")
    assert events[huge + 1] == "huge out"


class CountingSegmenter:
    """predict_batch noting each forward pass: labels are each image's first channel (so mix-ups show)."""

    def __init__(self) -> None:
        self.passes: list[tuple[int, tuple[int, int]]] = []

    def predict_batch(self, images, batch_size: int = 8):
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            self.passes.append((len(chunk), chunk[0].shape[:2]))
            out += [torch.from_numpy(im[..., 0].copy()) for im in chunk]
        return out


def test_forward_passes_are_bounded_in_images_and_pixels():
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 256, (10, 10, 3), dtype=np.uint8) for _ in range(7)]
    large = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(3)]
    images = [small[0], large[0], *small[1:4], large[1], *small[4:], large[2]]
    segmenter = CountingSegmenter()
    labels = predict_bounded(segmenter, images, max_batch=4, max_pixels=2500)
    assert all(np.array_equal(lab.numpy(), im[..., 0]) for lab, im in zip(labels, images))
    # 7 small images: at most 4 a pass; 3 large ones of 1200 pixels: 2 a pass within 2500 pixels
    assert sorted(segmenter.passes) == [(1, (30, 40)), (2, (30, 40)), (3, (10, 10)), (4, (10, 10))]
    segmenter = CountingSegmenter()
    predict_bounded(segmenter, large, max_batch=8, max_pixels=1000)  # each over the budget: alone
    assert segmenter.passes == [(1, (30, 40))] * 3


class FailingHandle:
    """A deployment handle whose calls raise ``error`` (a replica's death, a full queue, a replica's exception)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.load = self  # RayModel.load() calls handle.load.remote()

    def remote(self, *args, **kwargs):
        async def fail():
            raise self.error

        return fail()


def test_replica_failures_become_short_answers_without_internals():
    from kserve.errors import InvalidInput
    from ray.exceptions import ActorDiedError, RayTaskError
    from ray.serve.exceptions import BackPressureError

    from aticnet.serving.front import Overloaded, ReplicaUnavailable, ServerFault
    from aticnet.serving.server import ModelSpec, ray_model
    from tests.serving.test_requests import json_request

    spec = ModelSpec(name="m", weights="w", max_queued=4)
    request = json_request(inputs=[{"name": "x", "shape": [1, 1, 3], "datatype": "UINT8", "data": [0, 0, 0]}])
    cases = [
        (ActorDiedError(), ReplicaUnavailable, "its replica stopped while serving this request and restarts"),
        (BackPressureError(num_queued_requests=5, max_queued_requests=4), Overloaded, "4 requests waiting"),
        (RayTaskError("f", "Traceback: /srv/app.py pid 42", InvalidInput("image 0: not an image")), InvalidInput,
         "image 0: not an image"),
        (RayTaskError("f", "Traceback: /srv/app.py pid 42", OverflowError("/srv/app.py pid 42")), ServerFault,
         "model 'm' failed on this request"),
    ]
    for error, answer, says in cases:
        with pytest.raises(answer) as raised:
            asyncio.run(ray_model(spec, FailingHandle(error))(request))
        assert says in str(raised.value) and "pid" not in str(raised.value) and "/srv" not in str(raised.value)
    # a request over the limits is refused before it reaches the replica's queue
    nine = json_request(inputs=[{"name": "x", "shape": [9, 1, 1, 3], "datatype": "UINT8", "data": [0] * 27}])
    with pytest.raises(InvalidInput, match="9 images"):
        asyncio.run(ray_model(spec, FailingHandle(AssertionError("queued")))(nine))
