"""Load an ``aticnet serve`` server with concurrent Open Inference Protocol clients, bad requests mixed in.

Prints (and with --json writes) requests/s, images/s, latency percentiles, the batch sizes the server formed, the
valid requests that failed, the bad requests answered with 4xx, and the same weights' offline batched ``predict``
images/s in this process (--weights) for the serve/offline ratio:

    aticnet serve --weights W --max-batch 8 --batch-wait-ms 5 &
    python benchmarks/serve_load.py --url 127.0.0.1:8080 --model NAME --weights W --clients 16 --size 960x720
"""

from __future__ import annotations

import argparse
import json
import struct
import threading
import time

import httpx
import numpy as np


def valid_request(client, model: str, pixels: np.ndarray) -> dict:
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("image", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    out = httpclient.InferRequestedOutput("labels", binary_data=True)
    return client.infer(model, [tensor], outputs=[out]).get_response()["parameters"]


def bad_request(url: str, model: str) -> int:
    garbage = b"\x00not an image" * 8
    header = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(garbage) + 4}}]}).encode()
    answer = httpx.post(f"http://{url}/v2/models/{model}/infer", content=header + struct.pack("<I", len(garbage)) +
                        garbage, headers={"Inference-Header-Content-Length": str(len(header))}, timeout=60)
    return answer.status_code


def client_loop(args, pixels, stop_at, results, lock) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(args.url, network_timeout=120, connection_timeout=120)
    count = 0
    while time.perf_counter() < stop_at:
        count += 1
        if args.bad_every and count % args.bad_every == 0:
            status = bad_request(args.url, args.model)
            with lock:
                results["bad"].append(status)
            continue
        start = time.perf_counter()
        try:
            parameters = valid_request(client, args.model, pixels)
        except Exception as e:  # noqa: BLE001 (a failed valid request, whatever its kind, is what this counts)
            with lock:
                results["failed"].append(repr(e)[:200])
            continue
        with lock:
            results["latency"].append(time.perf_counter() - start)
            results["batch"].append(parameters.get("batch_size", 1))


def offline_images_per_s(weights: str, pixels: np.ndarray, batch: int, seconds: float) -> float:
    import aticnet

    segmenter = aticnet.load(weights)
    images = [pixels[0]] * batch
    segmenter.predict_batch(images, batch_size=batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        segmenter.predict_batch(images, batch_size=batch)
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8080")
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", help="the served weights, for offline predict images/s in this process")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--size", default="960x720", help="WIDTHxHEIGHT")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--bad-every", type=int, default=10, help="every Nth request of a client is bad (0: none)")
    parser.add_argument("--offline-batch", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    pixels = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    valid_request(__import__("tritonclient.http").http.InferenceServerClient(args.url), args.model, pixels)  # warm
    results: dict[str, list] = {"latency": [], "batch": [], "failed": [], "bad": []}
    lock = threading.Lock()
    stop_at = time.perf_counter() + args.seconds
    threads = [threading.Thread(target=client_loop, args=(args, pixels, stop_at, results, lock))
               for _ in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latency = np.array(results["latency"]) * 1000
    import shlex
    import sys

    import aticnet

    report = {
        "mode": "serve_load", "command": "python " + shlex.join(sys.argv), **aticnet.machine_info("cpu"),
        "model": args.model, "clients": args.clients, "size": args.size, "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latency) / elapsed, 3),
        "latency_ms": {p: round(float(np.percentile(latency, q)), 1) for p, q in
                       (("p50", 50), ("p95", 95), ("p99", 99))} if len(latency) else {},
        "mean_batch": round(float(np.mean(results["batch"])), 2) if results["batch"] else 0,
        "max_batch": int(max(results["batch"], default=0)),
        "failed_valid": len(results["failed"]), "failures": results["failed"][:3],
        "bad_sent": len(results["bad"]), "bad_answered_4xx": sum(400 <= s < 500 for s in results["bad"]),
    }
    if args.weights:
        offline = offline_images_per_s(args.weights, pixels, args.offline_batch, min(args.seconds, 15))
        report["offline_images_per_s"] = round(offline, 3)
        report["serve_over_offline"] = round(report["requests_per_s"] / offline, 3)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
