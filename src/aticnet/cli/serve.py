"""``aticnet serve``: an Open Inference Protocol v2 (KServe v2) server for one or several models.

KServe's model server answers REST (/v2/health/live, /v2/health/ready, /v2/models/NAME,
/v2/models/NAME/infer, with the binary-tensor extension) and gRPC; each model runs as a Ray Serve
deployment (--replicas) that batches concurrent requests (--max-batch images, waiting up to
--batch-wait-ms for them). Any OIP client calls it (tritonclient.http, tritonclient.grpc, KServe's).

A request sends one input: UINT8 pixels [H, W, 3] or [N, H, W, 3], or BYTES [N] of PNG/JPEG files.
The answer is "labels", UINT8 class ids [N, H, W]; the request parameter format=trainid|labelid|
color|overlay (alpha=...) answers "png", BYTES [N] of PNG files, instead. A model's name is its
shipped name, its run folder's name or its file's stem, unless --name says otherwise.
The server listens on 127.0.0.1 unless --host says otherwise; it has no authentication, so an
address others reach belongs behind a gateway or mesh that authenticates. Each request is checked
before its images are decoded: a body over --max-body-mb is a 413, more images than --max-batch or
more pixels than --max-megapixels a 400; more than --max-queued requests waiting for a model a 503.
Install from a clone: pip install -e ".[serve]".
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_device, add_engine, subcommand


def add_parser(subparsers: Any) -> None:
    p = subcommand(subparsers, "serve", __doc__, "serve models over the Open Inference Protocol (KServe v2)")
    p.add_argument("--weights", required=True, nargs="+", metavar="W",
                   help="shipped names, run folders, .safetensors, .onnx or OpenVINO .xml files")
    p.add_argument("--name", nargs="+", metavar="NAME", help="the models' names on the wire, one per --weights")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on, REST and gRPC (default 127.0.0.1: this machine only; 0.0.0.0: "
                        "every interface, for a server behind an authenticating gateway)")
    p.add_argument("--http-port", type=int, default=8080, help="REST port (default 8080)")
    p.add_argument("--grpc-port", type=int, default=8081, help="gRPC port; 0: no gRPC (default 8081)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="most images a request may carry and a forward pass runs (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its batch (default 5)")
    p.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas per model (default 1)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs Ray reserves per replica (default 1)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run the replicas on this Ray cluster (auto, HOST:6379, ray://HOST:10001); default: "
                        "a local Ray")
    p.add_argument("--max-megapixels", type=float, default=16.0,
                   help="most pixels a request may carry, all its images together; more: a 400 (default 16)")
    p.add_argument("--max-body-mb", type=float, default=64.0,
                   help="largest request body (REST) or message (gRPC) in MiB; larger: a 413 (default 64)")
    p.add_argument("--max-queued", type=int, default=32,
                   help="requests that may wait for a model's replicas; more: a 503 with Retry-After (default 32)")
    add_device(p, default="cpu")
    add_engine(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..utils.errors import UserError

    for flag, value, least in (("--max-batch", args.max_batch, 1), ("--replicas", args.replicas, 1),
                               ("--batch-wait-ms", args.batch_wait_ms, 0), ("--http-port", args.http_port, 1),
                               ("--grpc-port", args.grpc_port, 0), ("--max-megapixels", args.max_megapixels, 1e-6),
                               ("--max-body-mb", args.max_body_mb, 1e-3), ("--max-queued", args.max_queued, 1)):
        if value < least:
            raise UserError(f"{flag} must be at least {least:g}, not {value:g}")
    if args.name and len(args.name) != len(args.weights):
        raise UserError(f"--name gives {len(args.name)} names for {len(args.weights)} --weights")
    try:
        from ..serving.server import ModelSpec, model_name_of, serve_models
    except ImportError as e:
        raise UserError(f"aticnet serve needs KServe and Ray Serve ({e.name} is missing): "
                        'pip install -e ".[serve]" in a clone') from None
    options = {"num_cpus": args.cpus_per_replica, "num_gpus": 1 if args.device == "cuda" else 0}
    specs = [ModelSpec(name=name, weights=weights, device=args.device, backend=args.backend,
                       infer_scale=args.infer_scale, precision=args.precision, max_megapixels=args.max_megapixels,
                       max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, max_queued=args.max_queued,
                       replica_options=options)
             for weights, name in zip(args.weights, args.name or [model_name_of(w) for w in args.weights])]
    serve_models(specs, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port or None,
                 replicas=args.replicas, ray_address=args.ray, max_body_mb=args.max_body_mb)
