"""The front of ``aticnet serve``: KServe's REST and gRPC servers, bound to one address, without model-repository
control, with a body limit, and answering every client error with a 4xx and every fault without internals.

KServe's ``ModelServer`` mounts ``/v2/repository/models/{name}/load|unload`` (and the gRPC RepositoryModelLoad and
RepositoryModelUnload) and listens on every interface; Triton refuses model control unless it is enabled and
binds where ``--http-address``/``--grpc-address`` say. [`GuardedModelServer`][aticnet.serving.front.GuardedModelServer]
does as Triton does: the repository routes answer 403 (gRPC PERMISSION_DENIED), the servers listen on ``host``,
readiness is true only while every model's Ray Serve deployment runs, and a request body over the limit is
refused before it is read (413).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any

from . import import_kserve

import_kserve()

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from grpc import StatusCode, aio
from grpc_interceptor.exceptions import PermissionDenied
from kserve import InferRequest, ModelServer
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer
from starlette.exceptions import HTTPException

from .binary import request_from_bytes

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_MB = 64.0  # Triton's default request limit
JSON_BODY_MB = 8.0  # a JSON body is parsed on the event loop: about 0.1 s per 4 MiB
NO_REPOSITORY = ("this server has no model-repository control: it serves the models it started with, and "
                 "load/unload are refused")
RETRY_AFTER_S = 1
READY_CACHE_S = 1.0  # readiness asks Ray Serve at most this often


class Overloaded(Exception):
    """A model's queue is full: HTTP 503 with Retry-After, gRPC UNAVAILABLE."""


class ReplicaUnavailable(Exception):
    """A model's replica stopped while serving a request (it restarts): HTTP 503, gRPC UNAVAILABLE."""


class ServerFault(Exception):
    """A fault of the server, not the request: HTTP 500 and gRPC INTERNAL with this short message only."""


class BodyTooLarge(HTTPException):
    """A request body over the limit: 413 (an HTTPException, so FastAPI's body reader passes it on)."""

    def __init__(self, size: int | None, limit: int, binary: bool) -> None:
        size_text = f"of {size} bytes " if size is not None else ""
        hint = "" if binary else (f"; a JSON body may have {limit} bytes: send large images in the binary-tensor "
                                  "extension (the Inference-Header-Content-Length header)")
        super().__init__(413, f"request body {size_text}over this server's limit of {limit} bytes "
                              f"(--max-body-mb){hint}")


# ----------------------------------------------------------------------------- addresses
def is_loopback(host: str) -> bool:
    """Whether ``host`` is reached only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """``host`` as it stands in a URL or a gRPC target (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


# ----------------------------------------------------------------------------- REST
class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` (JSON bodies: ``max_json_bytes``) is answered 413, before it is
    read when its Content-Length says so, else as soon as the bytes received pass the limit."""

    def __init__(self, app: Any, max_bytes: int, max_json_bytes: int) -> None:
        self.app, self.max_bytes, self.max_json_bytes = app, max_bytes, min(max_json_bytes, max_bytes)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        binary = INFERENCE_CONTENT_LENGTH_HEADER.encode() in headers
        limit = self.max_bytes if binary else self.max_json_bytes
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _answer(send, 400, "the Content-Length header is not a number")
                return
            if size > limit:
                too_large = BodyTooLarge(size, limit, binary)
                await _answer(send, too_large.status_code, too_large.detail)
                return
        received, started = 0, False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(None, limit, binary)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as e:
            if started:
                raise
            await _answer(send, e.status_code, e.detail)


async def _answer(send: Callable, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    import orjson

    body = orjson.dumps({"error": message})
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return JSONResponse({"error": f"not an inference request: {where}: {first.get('msg', 'invalid')}"},
                        status_code=400)


async def _retry_later(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def _internal(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ServerFault):
        log.error("internal error while serving a request", exc_info=exc)
    return JSONResponse({"error": str(exc) if isinstance(exc, ServerFault) else "internal server error"},
                        status_code=500)


class RouteGuard:
    """ASGI middleware in front of KServe's routes: the model repository (load, unload, index) answers 403; the v1
    protocol and model versions, which this server does not speak, answer 404."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/v2/repository"):
            await _answer(send, 403, NO_REPOSITORY)
        elif path.startswith("/v1/") or "/versions/" in path:
            await _answer(send, 404, f"{path}: no such route (this server speaks the Open Inference Protocol v2 "
                                     "without model versions)")
        else:
            await self.app(scope, receive, send)


class GuardedRESTServer(RESTServer):
    """KServe's REST server on ``host``, with [`BodyLimit`][aticnet.serving.front.BodyLimit] and
    [`RouteGuard`][aticnet.serving.front.RouteGuard], and error answers that carry no internals."""

    def __init__(self, *args: Any, host: str, max_body_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host
        self.max_body_bytes = max_body_bytes

    def _add_middlewares(self, app: FastAPI) -> None:
        super()._add_middlewares(app)
        app.add_middleware(BodyLimit, max_bytes=self.max_body_bytes, max_json_bytes=int(JSON_BODY_MB * 2**20))
        app.add_middleware(RouteGuard)  # the last added runs first: a refused route never has its body read

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        app.add_exception_handler(HTTPException, _http_error)
        app.add_exception_handler(RequestValidationError, _validation_error)
        app.add_exception_handler(Overloaded, _retry_later)
        app.add_exception_handler(ReplicaUnavailable, _retry_later)
        app.add_exception_handler(ServerFault, _internal)
        app.add_exception_handler(Exception, _internal)


# ----------------------------------------------------------------------------- readiness and decoding
class GuardedDataPlane(DataPlane):
    """KServe's data plane whose readiness asks Ray Serve whether every model's deployment runs, and whose
    binary-extension reader is [`request_from_bytes`][aticnet.serving.binary.request_from_bytes]."""

    def __init__(self, model_registry: Any, names: list[str],
                 deployments_running: Callable[[list[str]], Awaitable[bool]]) -> None:
        super().__init__(model_registry=model_registry)
        self.names, self.deployments_running = names, deployments_running
        self._ready_at, self._ready = 0.0, False

    async def _running(self, names: list[str]) -> bool:
        if names != self.names:
            return await self.deployments_running(names)
        if time.monotonic() - self._ready_at > READY_CACHE_S:
            self._ready, self._ready_at = await self.deployments_running(names), time.monotonic()
        return self._ready

    async def ready(self) -> bool:
        """True while every model is registered and its deployment runs."""
        registered = self._model_registry.get_models()
        if any(name not in registered or not registered[name].ready for name in self.names):
            return False
        return await self._running(self.names)

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        """A model's readiness; an inference (``disable_predictor_health_check``) skips the deployment check, so
        it waits in the queue for a restarting replica instead of failing."""
        registered = await super().model_ready(model_name, disable_predictor_health_check)
        if disable_predictor_health_check or not registered:
            return registered
        return await self._running([model_name])

    def decode_inference_request(self, body: Any, headers: dict, model_name: str) -> InferRequest:
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        raw = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
        if raw is None:
            raise InvalidInput(f"a binary request needs the {INFERENCE_CONTENT_LENGTH_HEADER} header")
        try:
            json_length = int(raw)
        except ValueError:
            raise InvalidInput(f"the {INFERENCE_CONTENT_LENGTH_HEADER} header is not a number: {raw[:40]!r}") from None
        if not 0 < json_length <= len(body):
            raise InvalidInput(f"the {INFERENCE_CONTENT_LENGTH_HEADER} header ({json_length}) is not within the "
                               f"body's {len(body)} bytes")
        return request_from_bytes(body, json_length, model_name)


# ----------------------------------------------------------------------------- gRPC
class GuardedServicer(InferenceServicer):
    """KServe's gRPC servicer without model-repository control."""

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        raise PermissionDenied(NO_REPOSITORY)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        raise PermissionDenied(NO_REPOSITORY)


class GuardedInterceptor(ExceptionToStatusInterceptor):
    """KServe's exception mapping, plus UNAVAILABLE for a full queue or a restarting replica."""

    async def handle_exception(self, ex: Exception, request_or_iterator: Any, context: Any, method_name: str) -> None:
        if isinstance(ex, (Overloaded, ReplicaUnavailable)):
            await context.abort(StatusCode.UNAVAILABLE, str(ex))
        elif isinstance(ex, ServerFault):
            await context.abort(StatusCode.INTERNAL, str(ex))
        else:
            await super().handle_exception(ex, request_or_iterator, context, method_name)


class GuardedGRPCServer(GRPCServer):
    """KServe's gRPC server on ``host`` with [`GuardedServicer`][aticnet.serving.front.GuardedServicer]; messages
    up to ``max_message_bytes`` (larger ones: RESOURCE_EXHAUSTED)."""

    def __init__(self, port: int, data_plane: DataPlane, *, host: str, max_message_bytes: int,
                 grace_period: int = 10) -> None:
        super().__init__(port, data_plane, None, kwargs={}, grace_period=grace_period)
        self.address = f"{url_host(host)}:{port}"
        self.max_message_bytes = max_message_bytes

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=(GuardedInterceptor(),),
            options=[("grpc.max_send_message_length", self.max_message_bytes),
                     ("grpc.max_receive_message_length", self.max_message_bytes)])
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            GuardedServicer(self._data_plane, None), self._server)
        if not self._server.add_insecure_port(self.address):
            raise OSError(f"gRPC cannot listen on {self.address}")
        await self._server.start()
        await self._server.wait_for_termination()


# ----------------------------------------------------------------------------- the server
class GuardedModelServer(ModelServer):
    """KServe's ``ModelServer`` with the guarded REST and gRPC servers above, on ``host``.

    Args:
        host: the address both servers listen on.
        max_body_bytes: the largest request body (REST) or message (gRPC).
        deployments_running: async (model names) -> whether their Ray Serve deployments run.
        **kwargs: ``kserve.ModelServer``'s own (http_port, grpc_port, enable_grpc, grace_period...).
    """

    def __init__(self, *, host: str, max_body_bytes: int,
                 deployments_running: Callable[[list[str]], Awaitable[bool]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host, self.max_body_bytes, self.deployments_running = host, max_body_bytes, deployments_running

    def start(self, models: list[Any]) -> None:
        """Register ``models`` and serve until stopped.

        Args:
            models: KServe models (one per served name), each ready.
        """
        self._register_and_check_atleast_one_model_is_ready(models)
        self.dataplane = GuardedDataPlane(self.registered_models, [m.name for m in models], self.deployments_running)
        self._rest_server = GuardedRESTServer(
            "kserve.model_server:app", self.dataplane, self.model_repository_extension, self.http_port,
            host=self.host, max_body_bytes=self.max_body_bytes, access_log_format=self.access_log_format,
            grace_period=self.grace_period, event_loop=self.event_loop, timeout_keep_alive=self.timeout_keep_alive)
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = GuardedGRPCServer(self.grpc_port, self.dataplane, host=self.host,
                                                  max_message_bytes=self.max_body_bytes,
                                                  grace_period=self.grace_period)
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())
