"""``aticnet serve``: segmentation models behind the Open Inference Protocol v2 (KServe v2), on KServe's model
server, each model a Ray Serve deployment whose replicas batch concurrent requests with ``@serve.batch``.

KServe's ``ModelServer`` speaks the protocol (REST ``/v2/health/live|ready``, ``/v2/models/{name}``,
``/v2/models/{name}/infer`` with the binary-tensor extension, and gRPC); a ``RayModel`` per served model hands each
decoded request to its Ray Serve deployment (:class:`SegmentationModel`, a ``kserve.Model``), which decodes the
images, waits up to ``batch_wait_ms`` for other requests, runs them as one batch of up to ``max_batch`` images and
answers with class ids or PNGs (:mod:`aticnet.serving.requests`). Without a Ray address a local Ray starts; with
one the deployments run on that cluster.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _import_kserve() -> None:
    """Import kserve with an empty command line: its model_server module parses ``sys.argv`` when imported and
    would read (or reject) ``aticnet serve``'s flags as its own."""
    if "kserve" in sys.modules:
        return
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve  # noqa: F401
    finally:
        sys.argv = argv


_import_kserve()

from kserve import InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from ray import serve

from ..inference.segmenter import Segmenter
from .requests import (
    DEFAULT_MAX_MEGAPIXELS,
    PNG_FORMATS,
    bad_request,
    images_of_request,
    output_of,
    request_options,
    wants_binary,
)

log = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    """One served model: its name on the wire and how :func:`aticnet.load` loads it."""

    name: str
    weights: str
    device: str = "cpu"
    backend: str | None = None
    infer_scale: float = 1.0
    precision: str = "32"
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    replica_options: dict[str, Any] = field(default_factory=dict)


def model_name_of(weights: str) -> str:
    """The name a model answers to: a run folder's name, a file's stem, or a shipped name as given."""
    path = Path(weights)
    return path.resolve().name if path.is_dir() else path.stem


class SegmentationModel(Model):
    """A ``kserve.Model`` segmenting the images of each request with an :func:`aticnet.load` Segmenter.

    Runs as a Ray Serve replica; concurrent requests meet in :meth:`segment_batch` (``@serve.batch``), so one
    forward pass serves several clients. Responses carry ``batch_size`` (images in the pass that served them) and
    ``batch_requests`` (requests in it) as parameters.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.segmenter: Segmenter | None = None
        # The batch limits are flags: set them on this replica's batch queue before its first request.
        self.segment_batch.set_max_batch_size(spec.max_batch)
        self.segment_batch.set_batch_wait_timeout_s(spec.batch_wait_ms / 1000)
        self.load()

    def load(self) -> bool:
        """Load the weights once (KServe's RayModel calls this again on every replica's handle)."""
        if self.segmenter is None:
            from ..inference.segmenter import load

            s = self.spec
            self.segmenter = load(s.weights, s.device, backend=s.backend, infer_scale=s.infer_scale,
                                  precision=s.precision)
        self.ready = True
        return True

    def get_input_types(self) -> list[dict]:
        return [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
                {"name": "image", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        ids = "UINT8" if self.segmenter.num_classes <= 256 else "INT64"
        return [{"name": "labels", "datatype": ids, "shape": [-1, -1, -1]},
                {"name": "png", "datatype": "BYTES", "shape": [-1]}]

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        if not isinstance(payload, InferRequest):
            raise bad_request("this server speaks the Open Inference Protocol v2: POST /v2/models/{name}/infer")
        fmt, alpha = request_options(payload)
        if fmt in PNG_FORMATS and not wants_binary(payload):
            raise bad_request(f"format={fmt} answers with PNG files, which travel in the binary-tensor extension: "
                              "set the request parameter binary_data_output (or the output's binary_data) to true")
        images = images_of_request(payload, self.spec.max_megapixels)
        return {"request": payload, "images": images, "format": fmt, "alpha": alpha}

    async def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict[str, Any]:
        labels, batch_size, batch_requests = await self.segment_batch(payload["images"])
        return {**payload, "labels": labels, "batch_size": batch_size, "batch_requests": batch_requests}

    async def postprocess(self, result: dict[str, Any], headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> InferResponse:
        request: InferRequest = result["request"]
        output = output_of(result["labels"], result["images"], result["format"], result["alpha"], self.segmenter)
        return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=self.name,
                             infer_outputs=[output], from_grpc=request.from_grpc,
                             use_binary_outputs=request.use_binary_outputs,
                             requested_outputs=_requested(request),
                             parameters={"batch_size": result["batch_size"],
                                         "batch_requests": result["batch_requests"]})

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005,
                 batch_size_fn=lambda requests: sum(len(images) for images in requests))
    async def segment_batch(self, requests: list[list[Any]]) -> list[tuple[list[Any], int, int]]:
        """Several requests' images in one forward pass per image size.

        Args:
            requests: each request's list of H x W x 3 uint8 images.

        Returns:
            Per request: (its H x W label tensors, images in this batch, requests in this batch).
        """
        flat = [image for images in requests for image in images]
        # The network runs in a thread so the replica keeps queueing the requests that form the next batch.
        labels = await asyncio.to_thread(self.segmenter.predict_batch, flat, self.spec.max_batch)
        answers, start = [], 0
        for images in requests:
            answers.append((labels[start:start + len(images)], len(flat), len(requests)))
            start += len(images)
        return answers


def _requested(request: InferRequest) -> Any:
    """The outputs a request named, kept only when they name ours (else KServe would reject the answer)."""
    outputs = request.request_outputs or []
    return outputs if outputs and all(o.name in ("labels", "png") for o in outputs) else None


# ----------------------------------------------------------------------------- the binary-tensor extension
def _from_bytes_keeping_raw(cls: type, req_bytes: bytes, json_length: int, model_name: str) -> InferRequest:
    """``InferRequest.from_bytes`` that keeps each binary input as its raw bytes.

    KServe 0.21 turns every binary input into a JSON-style Python list right after reading it: a 960 x 720 RGB
    image costs 0.8 s that way, and encoded image files (BYTES that are not UTF-8 text) fail with a 500. Kept raw,
    ``InferInput.as_numpy`` reads the bytes directly (``np.frombuffer``, or KServe's BYTES deserializer).
    """
    import orjson
    from kserve import InferInput
    from kserve.protocol.infer_type import RequestedOutput

    try:
        header = orjson.loads(req_bytes[:json_length])
        inputs = header["inputs"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise InvalidInput(f"unreadable inference header ({type(e).__name__}: {e})") from None
    infer_inputs, start = [], json_length
    for item in inputs:
        try:
            parameters = item.get("parameters") or {}
            infer_input = InferInput(name=item["name"], shape=item["shape"], datatype=item["datatype"],
                                     parameters=parameters)
        except (KeyError, AttributeError) as e:
            raise InvalidInput(f"input {item!r}: missing {e}") from None
        if item.get("data") is not None:
            infer_input.data = item["data"]
        elif "binary_data_size" in parameters:
            end = start + int(parameters["binary_data_size"])
            if end > len(req_bytes):
                raise InvalidInput(f"input {item['name']!r}: binary_data_size {parameters['binary_data_size']} runs "
                                   f"past the end of the request ({len(req_bytes) - start} bytes left)")
            infer_input._raw_data = req_bytes[start:end]
            start = end
        else:
            raise InvalidInput(f"input {item['name']!r}: neither data nor binary_data_size")
        infer_inputs.append(infer_input)
    outputs = header.get("outputs")
    requested = [RequestedOutput(name=o["name"], parameters=o.get("parameters")) for o in outputs] if outputs else None
    return cls(model_name=model_name, request_id=header.get("id"), parameters=header.get("parameters"),
               infer_inputs=infer_inputs, request_outputs=requested)


def keep_binary_inputs_raw() -> None:
    """Install :func:`_from_bytes_keeping_raw` as KServe's reader of binary-extension requests."""
    InferRequest.from_bytes = classmethod(_from_bytes_keeping_raw)


# ----------------------------------------------------------------------------- the server
def ray_model(name: str, handle: Any) -> Any:
    """KServe's ``RayModel`` for a deployment, answering a replica's errors with the replica's own exception
    (Ray wraps it with a remote traceback; KServe maps the exception's class to the HTTP status)."""
    from kserve.protocol.infer_type import to_http_parameters
    from kserve.ray import RayModel
    from ray.exceptions import RayTaskError

    class SegmentationRayModel(RayModel):
        async def __call__(self, body: Any, headers: dict[str, str] | None = None, verb: Any = None) -> Any:
            if isinstance(body, InferRequest) and body.from_grpc:
                # A gRPC request keeps its parameters as a protobuf map, which Ray cannot pickle.
                body.parameters = to_http_parameters(body.parameters) if body.parameters else None
            try:
                return await self._handle.remote(body, headers=headers)
            except RayTaskError as e:
                raise e.cause from None

    model = SegmentationRayModel(name, handle)
    model.load()
    return model


def start_deployments(specs: list[ModelSpec], *, replicas: int = 1, ray_address: str | None = None) -> list[Any]:
    """Start each model as a Ray Serve deployment (on a local Ray, or the cluster at ``ray_address``).

    Args:
        specs: the models to serve.
        replicas: Ray Serve replicas per model.
        ray_address: a Ray cluster ("auto": the one `ray start` made here, "host:6379", "ray://host:10001"); None
            starts a local Ray.

    Returns:
        KServe models, one per spec, to hand to ``kserve.ModelServer.start``.
    """
    import ray

    from ..utils.errors import UserError

    ray.init(address=ray_address or "local", include_dashboard=False, logging_level=logging.WARNING,
             ignore_reinit_error=True)
    serve.start(proxy_location="Disabled")  # KServe's server is the ingress
    models = []
    for spec in specs:
        deployment = serve.deployment(SegmentationModel).options(
            name=spec.name, num_replicas=replicas, ray_actor_options=spec.replica_options,
            max_ongoing_requests=max(4 * spec.max_batch, 16))
        try:
            handle = serve.run(deployment.bind(spec), name=spec.name, route_prefix=None)
        except Exception as e:  # noqa: BLE001 (a replica's failed load arrives as whatever its code raised)
            reason = str(getattr(e, "cause", None) or e).strip().splitlines()[-1]
            raise UserError(f"{spec.weights}: model {spec.name!r} did not start: {reason}") from None
        models.append(ray_model(spec.name, handle))
    return models


def serve_models(specs: list[ModelSpec], *, http_port: int = 8080, grpc_port: int | None = 8081,
                 replicas: int = 1, ray_address: str | None = None) -> None:
    """Serve ``specs`` until interrupted: REST on ``http_port``, gRPC on ``grpc_port`` (None: no gRPC).

    Args:
        specs: the models, with distinct names.
        http_port: the REST port.
        grpc_port: the gRPC port, or None.
        replicas: Ray Serve replicas per model.
        ray_address: a Ray cluster's address; None starts a local Ray.
    """
    from kserve import ModelServer

    from ..utils.errors import UserError

    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"two models answer to the same name ({', '.join(names)}); give --name for each")
    keep_binary_inputs_raw()
    models = start_deployments(specs, replicas=replicas, ray_address=ray_address)
    server = ModelServer(http_port=http_port, grpc_port=grpc_port or 0, enable_grpc=grpc_port is not None,
                         enable_latency_logging=False, grace_period=10)
    log.info("serving %s on http://0.0.0.0:%d/v2%s", ", ".join(names), http_port,
             f" and gRPC :{grpc_port}" if grpc_port else "")
    try:
        server.start(models)
    finally:
        serve.shutdown()
