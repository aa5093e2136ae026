"""``aticnet serve``: segmentation models behind the Open Inference Protocol v2 (KServe v2), on KServe's model
server, each model a Ray Serve deployment whose replicas batch concurrent requests with ``@serve.batch``.

The front ([`aticnet.serving.front`][aticnet.serving.front]) speaks the protocol (REST ``/v2/health/live|ready``,
``/v2/models/{name}``, ``/v2/models/{name}/infer`` with the binary-tensor extension, and gRPC) on one address,
loopback unless told otherwise. A ``RayModel`` per served model checks each request against the limits before
it is queued, then hands it to its Ray Serve deployment ([`SegmentationModel`][aticnet.serving.replica.SegmentationModel]),
whose queue is bounded: a full queue answers 503 with Retry-After. Without a Ray address a local Ray starts;
with one the deployments run on that cluster.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import import_kserve

import_kserve()

from kserve import InferRequest
from kserve.errors import InvalidInput
from ray import serve

from .front import (
    DEFAULT_MAX_BODY_MB,
    GuardedModelServer,
    Overloaded,
    ReplicaUnavailable,
    ServerFault,
    is_loopback,
    url_host,
)
from .replica import SegmentationModel
from .requests import DEFAULT_MAX_MEGAPIXELS, bad_request, plan_request

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_QUEUED = 32
HEALTH_CHECK_S = 2.0  # how often Ray Serve checks a replica: readiness turns false this soon after one dies
NO_AUTHENTICATION = ("this server has no authentication: anyone who reaches {host} can use it; put it behind a "
                     "gateway or service mesh that authenticates (docs: Serving, Security)")


@dataclass
class ModelSpec:
    """One served model: its name on the wire, how [`aticnet.load`][aticnet.load] loads it, and its limits.

    Attributes:
        name: the model's name on the wire.
        weights: what `aticnet.load` loads.
        device, backend, infer_scale, precision: as `aticnet.load` takes them.
        max_megapixels: the most pixels a request may carry (all its images).
        max_batch: the most images a request and a forward pass may carry.
        batch_wait_ms: how long a request waits for others to share its batch.
        max_queued: requests that may wait for a replica; more are answered 503.
        replica_options: Ray actor options of each replica (CPUs, GPUs).
    """

    name: str
    weights: str
    device: str = "cpu"
    backend: str | None = None
    infer_scale: float | None = None  # None: the scale the weights were trained for
    precision: str = "32"
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    max_queued: int = DEFAULT_MAX_QUEUED
    replica_options: dict[str, Any] = field(default_factory=dict)

    @property
    def max_ongoing(self) -> int:
        """Requests a replica takes at once: one batch running while the next one forms."""
        return 2 * self.max_batch


def model_name_of(weights: str) -> str:
    """The name a model answers to: a run folder's name, a file's stem, or a shipped name as given."""
    path = Path(weights)
    return path.resolve().name if path.is_dir() else path.stem


def ray_model(spec: ModelSpec, handle: Any) -> Any:
    """KServe's ``RayModel`` for a deployment: checks a request against ``spec``'s limits before queueing it,
    and answers a replica's errors as the client's (400) or the server's (503, 500) without internals."""
    from kserve.protocol.infer_type import to_http_parameters
    from kserve.ray import RayModel
    from ray.exceptions import RayError, RayTaskError
    from ray.serve.exceptions import BackPressureError, RayServeException

    class SegmentationRayModel(RayModel):
        async def __call__(self, body: Any, headers: dict[str, str] | None = None, verb: Any = None) -> Any:
            if not isinstance(body, InferRequest):
                raise bad_request("this server speaks the Open Inference Protocol v2: POST /v2/models/{name}/infer")
            if body.from_grpc:
                # A gRPC request keeps its parameters as a protobuf map (empty or not), which Ray cannot pickle.
                body.parameters = to_http_parameters(body.parameters) if body.parameters else None
            # Refused here, a bad request never waits in the queue behind others.
            await asyncio.to_thread(plan_request, body, max_megapixels=spec.max_megapixels, max_images=spec.max_batch)
            try:
                return await self._handle.remote(body, headers=headers)
            except BackPressureError:
                raise Overloaded(f"model {spec.name!r} has {spec.max_queued} requests waiting (--max-queued): "
                                 "try again shortly") from None
            except RayTaskError as e:
                if isinstance(e.cause, InvalidInput):
                    raise e.cause from None
                log.error("model %r failed on a request: %r", spec.name, e.cause)
                raise ServerFault(f"model {spec.name!r} failed on this request") from None
            except (RayError, RayServeException) as e:
                log.error("model %r: its replica is unavailable: %s", spec.name, type(e).__name__)
                raise ReplicaUnavailable(f"model {spec.name!r}: its replica stopped while serving this request "
                                         "and restarts: try again shortly") from None

    model = SegmentationRayModel(spec.name, handle)
    model.load()
    return model


async def deployments_running(names: list[str]) -> bool:
    """Whether the Ray Serve applications ``names`` run (False while a replica restarts, or on no answer)."""
    from ray.serve.schema import ApplicationStatus

    try:
        status = await asyncio.wait_for(asyncio.to_thread(serve.status), timeout=5)
    except Exception as e:  # noqa: BLE001 (no answer from Ray Serve: not ready, whatever the reason)
        log.warning("readiness: Ray Serve did not answer (%s)", type(e).__name__)
        return False
    apps = status.applications
    return all(name in apps and apps[name].status == ApplicationStatus.RUNNING for name in names)


def start_deployments(specs: list[ModelSpec], *, replicas: int = 1, ray_address: str | None = None) -> list[Any]:
    """Start each model as a Ray Serve deployment (on a local Ray, or the cluster at ``ray_address``).

    Args:
        specs: the models to serve.
        replicas: Ray Serve replicas per model.
        ray_address: a Ray cluster ("auto": the one `ray start` made here, "host:6379", "ray://host:10001"); None
            starts a local Ray.

    Returns:
        KServe models, one per spec, to hand to ``kserve.ModelServer.start``.

    Raises:
        UserError: a model did not start (its weights, its engine).
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
            max_ongoing_requests=spec.max_ongoing, max_queued_requests=spec.max_queued,
            health_check_period_s=HEALTH_CHECK_S)
        try:
            handle = serve.run(deployment.bind(spec), name=spec.name, route_prefix=None)
        except Exception as e:  # noqa: BLE001 (a replica's failed load arrives as whatever its code raised)
            reason = str(getattr(e, "cause", None) or e).strip().splitlines()[-1]
            raise UserError(f"{spec.weights}: model {spec.name!r} did not start: {reason}") from None
        models.append(ray_model(spec, handle))
    return models


def announce(names: list[str], host: str, http_port: int, grpc_port: int | None) -> None:
    """Log where the server listens; an address other machines reach gets the warning that it has no
    authentication.

    Args:
        names: the served models' names.
        host: the address both servers listen on.
        http_port: the REST port.
        grpc_port: the gRPC port, or None.
    """
    where = url_host(host)
    log.info("serving %s on http://%s:%d/v2%s", ", ".join(names), where, http_port,
             f" and gRPC {where}:{grpc_port}" if grpc_port else "")
    if not is_loopback(host):
        log.warning(NO_AUTHENTICATION.format(host=host))


def serve_models(specs: list[ModelSpec], *, host: str = DEFAULT_HOST, http_port: int = 8080,
                 grpc_port: int | None = 8081, replicas: int = 1, ray_address: str | None = None,
                 max_body_mb: float = DEFAULT_MAX_BODY_MB) -> None:
    """Serve ``specs`` until interrupted: REST on ``host:http_port``, gRPC on ``host:grpc_port`` (None: no gRPC).

    Args:
        specs: the models, with distinct names.
        host: the address to listen on (loopback by default; ``0.0.0.0`` or ``::`` for every interface).
        http_port: the REST port.
        grpc_port: the gRPC port, or None.
        replicas: Ray Serve replicas per model.
        ray_address: a Ray cluster's address; None starts a local Ray.
        max_body_mb: the largest request body (REST) or message (gRPC), in MiB.

    Raises:
        UserError: two models share a name, or a model did not start.
    """
    from ..utils.errors import UserError

    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"two models answer to the same name ({', '.join(names)}); give --name for each")
    models = start_deployments(specs, replicas=replicas, ray_address=ray_address)
    server = GuardedModelServer(host=host, max_body_bytes=int(max_body_mb * 2**20),
                                deployments_running=deployments_running, http_port=http_port,
                                grpc_port=grpc_port or 0, enable_grpc=grpc_port is not None,
                                enable_latency_logging=False, grace_period=10)
    announce(names, host, http_port, grpc_port)
    try:
        server.start(models)
    finally:
        serve.shutdown()
