"""Load an ``aticnet serve`` server with concurrent Open Inference Protocol clients, bad requests and large images
mixed in, and measure what that costs it.

Prints (and with --json writes) requests/s, images/s, latency percentiles, the batch sizes the server formed, the
valid requests that failed, the bad requests (several kinds, rotating) answered with 4xx, the large images sent
every --big-every seconds and their answers, the slowest /v2/health/live answer while all this ran, the peak
memory (VmHWM) of the model's replica and of the front process (--server-pid), and the same weights' offline
batched ``predict`` images/s in this process (--weights) for the serve/offline ratio:

    aticnet serve --weights W --max-batch 8 --batch-wait-ms 5 --max-megapixels 40 & SERVER=$!
    python benchmarks/serve_load.py --url 127.0.0.1:8080 --model NAME --weights W --clients 16 --size 960x720 \\
        --bad-every 5 --big-every 5 --big-size 7300x5480 --server-pid $SERVER

``--request-memory MP [MP ...]`` measures instead what one request of MP megapixels adds to a fresh process's peak
memory, per engine (``--backend torch openvino``): the figure behind ``--max-megapixels``.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import struct
import sys
import threading
import time
from typing import Self

import httpx
import numpy as np


def valid_request(client, model: str, pixels: np.ndarray) -> dict:
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("image", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    out = httpclient.InferRequestedOutput("labels", binary_data=True)
    return client.infer(model, [tensor], outputs=[out]).get_response()["parameters"]


def binary_post(url: str, header: dict, raw: bytes) -> httpx.Response:
    text = json.dumps(header).encode()
    return httpx.post(url, content=text + raw, timeout=300,
                      headers={"Inference-Header-Content-Length": str(len(text)),
                               "Content-Type": "application/octet-stream"})


def bytes_input(count: int, raw: bytes) -> dict:
    return {"inputs": [{"name": "image", "shape": [count], "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(raw)}}]}


def files(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(f)) + f for f in items)


def bad_requests(url: str, max_batch: int) -> list[tuple[str, callable]]:
    """Kinds of malformed request, each a (name, send) pair; every one must be answered with a 4xx."""
    garbage = files(b"\x00not an image" * 8)
    tiny_png = png_of(np.zeros((8, 8, 3), np.uint8))
    too_many = files(*[tiny_png] * (max_batch + 1))
    return [
        ("not an image", lambda: binary_post(url, bytes_input(1, garbage), garbage)),
        ("too many images", lambda: binary_post(url, bytes_input(max_batch + 1, too_many), too_many)),
        ("UINT8 out of range", lambda: httpx.post(url, timeout=60, json={"inputs": [
            {"name": "image", "shape": [1, 1, 3], "datatype": "UINT8", "data": [300, -5, 0]}]})),
        ("length prefix past the end", lambda: binary_post(url, bytes_input(1, b"\xff\xff\0\0abc"), b"\xff\xff\0\0abc")),
        ("unknown output", lambda: httpx.post(url, timeout=60, json={"outputs": [{"name": "x"}], "inputs": [
            {"name": "image", "shape": [1, 1, 3], "datatype": "UINT8", "data": [0, 0, 0]}]})),
        ("unload", lambda: httpx.post(url.replace("/v2/models/", "/v2/repository/models/").replace("/infer", "/unload"),
                                      timeout=60)),
    ]


def png_of(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def client_loop(args, pixels, stop_at, results, lock, bad) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(args.url, network_timeout=300, connection_timeout=300)
    count = 0
    while time.perf_counter() < stop_at:
        count += 1
        if args.bad_every and count % args.bad_every == 0:
            name, send = bad[(count // args.bad_every) % len(bad)]
            status = send().status_code
            with lock:
                results["bad"].append((name, status))
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


def big_loop(args, stop_at, results) -> None:
    """One large image (a black PNG: a small request that decodes to --big-size) every --big-every seconds."""
    width, height = (int(v) for v in args.big_size.lower().split("x"))
    data = files(png_of(np.zeros((height, width, 3), np.uint8)))
    header = {**bytes_input(1, data), "parameters": {"binary_data_output": True}}
    url = f"http://{args.url}/v2/models/{args.model}/infer"
    while time.perf_counter() + args.big_every < stop_at:
        time.sleep(args.big_every)
        start = time.perf_counter()
        try:
            status = binary_post(url, header, data).status_code
        except httpx.HTTPError as e:
            status = type(e).__name__
        results["big"].append({"status": status, "seconds": round(time.perf_counter() - start, 2)})


def live_loop(args, stop_at, results) -> None:
    """/v2/health/live every half second: the slowest answer, and the probes that failed (timeout 10 s)."""
    while time.perf_counter() < stop_at:
        start = time.perf_counter()
        try:
            ok = httpx.get(f"http://{args.url}/v2/health/live", timeout=10).status_code == 200
        except httpx.HTTPError:
            ok = False
        results["live"].append((time.perf_counter() - start, ok))
        time.sleep(0.5)


class PeakMemory:
    """The peak resident memory of the server's front process and of the model's replica: the larger of the
    kernel's high-water mark (VmHWM) and RSS sampled every 0.2 s, so a replica Ray restarts is still counted."""

    def __init__(self, server_pid: int | None, model: str) -> None:
        import psutil

        self.psutil, self.model = psutil, model
        self.front = psutil.Process(server_pid) if server_pid else None
        self.peaks = {"front": 0, "replica": 0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _replicas(self) -> list:
        marker = f"ServeReplica:{self.model}"
        candidates = self.front.children(recursive=True) if self.front else self.psutil.process_iter()
        found = []
        for p in candidates:
            try:
                if marker in " ".join(p.cmdline()):
                    found.append(p)
            except self.psutil.Error:
                continue
        return found

    @staticmethod
    def _hwm(process) -> int:
        try:
            with open(f"/proc/{process.pid}/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return 0

    def _sample(self) -> None:
        while not self.stop.is_set():
            for name, processes in (("front", [self.front] if self.front else []), ("replica", self._replicas())):
                for p in processes:
                    try:
                        self.peaks[name] = max(self.peaks[name], p.memory_info().rss, self._hwm(p))
                    except self.psutil.Error:
                        continue
            self.stop.wait(0.2)

    def __enter__(self) -> Self:
        if not self._replicas():
            raise SystemExit(f"no replica of model {self.model!r} found (ServeReplica:{self.model}); "
                             "give --server-pid or run this on the server's machine")
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    def report(self) -> dict:
        return {f"{name}_peak_mb": round(b / 2**20) for name, b in self.peaks.items() if name == "replica" or self.front}


REQUEST_MEMORY = """
import sys
import numpy as np
import aticnet


def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


weights, megapixels, backend = sys.argv[1], float(sys.argv[2]), sys.argv[3] or None
segmenter = aticnet.load(weights, backend=backend)
height = int((megapixels * 1e6 * 3 / 4) ** 0.5)
width = int(megapixels * 1e6 / height)
segmenter.predict_batch([np.zeros((64, 96, 3), np.uint8)])
before = hwm()
segmenter.predict_batch([np.zeros((height, width, 3), np.uint8)], batch_size=1)
print(before, hwm(), height * width, segmenter.backend)
"""


def request_memory(weights: str, megapixels: float, backend: str | None) -> dict:
    """What one forward pass of a ``megapixels`` image adds to a fresh process's peak memory (VmHWM)."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", REQUEST_MEMORY, weights, str(megapixels), backend or ""],
                          capture_output=True, text=True, check=True)
    before, after, pixels, engine = done.stdout.split()[-4:]
    growth = int(after) - int(before)
    return {"backend": engine, "megapixels": round(int(pixels) / 1e6, 2), "model_mb": round(int(before) / 2**20),
            "request_mb": round(growth / 2**20), "bytes_per_pixel": round(growth / int(pixels))}


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


def run_load(args, pixels: np.ndarray) -> tuple[dict, float]:
    results: dict[str, list] = {"latency": [], "batch": [], "failed": [], "bad": [], "big": [], "live": []}
    lock = threading.Lock()
    bad = bad_requests(f"http://{args.url}/v2/models/{args.model}/infer", args.max_batch)
    stop_at = time.perf_counter() + args.seconds
    threads = [threading.Thread(target=client_loop, args=(args, pixels, stop_at, results, lock, bad))
               for _ in range(args.clients)]
    threads.append(threading.Thread(target=live_loop, args=(args, stop_at, results)))
    if args.big_every:
        threads.append(threading.Thread(target=big_loop, args=(args, stop_at, results)))
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8080")
    parser.add_argument("--model", help="the served model's name")
    parser.add_argument("--weights", help="the served weights, for offline predict images/s in this process")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--size", default="960x720", help="WIDTHxHEIGHT of the valid requests' images")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--bad-every", type=int, default=10, help="every Nth request of a client is bad (0: none)")
    parser.add_argument("--big-every", type=float, default=0, help="seconds between large images (0: none)")
    parser.add_argument("--big-size", default="7300x5480", help="WIDTHxHEIGHT of the large images (40 MP)")
    parser.add_argument("--max-batch", type=int, default=8, help="the server's --max-batch (a bad request sends more)")
    parser.add_argument("--server-pid", type=int, help="the aticnet serve process: its and its replica's memory")
    parser.add_argument("--offline-batch", type=int, default=8)
    parser.add_argument("--request-memory", type=float, nargs="+", metavar="MP",
                        help="instead of a load: the memory one request of MP megapixels costs (--weights, each "
                             "--backend), in a fresh process each; no server needed")
    parser.add_argument("--backend", nargs="+", default=[None], help="engines for --request-memory")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.request_memory:
        rows = [request_memory(args.weights, mp, b) for b in args.backend for mp in args.request_memory]
        report = {"mode": "request_memory", "command": "python " + shlex.join(sys.argv), "weights": args.weights,
                  "rows": rows}
        print(json.dumps(report, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        return
    if not args.model:
        parser.error("--model is required for a load")
    import tritonclient.http as httpclient

    import aticnet

    width, height = (int(v) for v in args.size.lower().split("x"))
    pixels = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    valid_request(httpclient.InferenceServerClient(args.url), args.model, pixels)  # warm
    with PeakMemory(args.server_pid, args.model) as memory:
        results, elapsed = run_load(args, pixels)
    latency = np.array(results["latency"]) * 1000
    live = results["live"]
    report = {
        "mode": "serve_load", "command": "python " + shlex.join(sys.argv), **aticnet.machine_info("cpu"),
        "model": args.model, "clients": args.clients, "size": args.size, "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latency) / elapsed, 3),
        "latency_ms": {p: round(float(np.percentile(latency, q)), 1) for p, q in
                       (("p50", 50), ("p95", 95), ("p99", 99))} if len(latency) else {},
        "mean_batch": round(float(np.mean(results["batch"])), 2) if results["batch"] else 0,
        "max_batch": int(max(results["batch"], default=0)),
        "failed_valid": len(results["failed"]), "failures": results["failed"][:3],
        "bad_sent": len(results["bad"]), "bad_answered_4xx": sum(400 <= s < 500 for _, s in results["bad"]),
        "bad_not_4xx": sorted({f"{name}: {s}" for name, s in results["bad"] if not 400 <= s < 500}),
        "big_size": args.big_size if args.big_every else None, "big": results["big"],
        "live_probes": len(live), "live_failed": sum(not ok for _, ok in live),
        "live_max_ms": round(1000 * max((s for s, _ in live), default=0), 1),
        **memory.report(),
    }
    valid_mp = width * height / 1e6
    big_mp = np.prod([int(v) for v in args.big_size.lower().split("x")]) / 1e6 if args.big_every else 0.0
    big_served = sum(b["status"] == 200 for b in results["big"])
    # the work done: every valid request's pixels and every large image answered, per second
    report["served_megapixels_per_s"] = round((len(latency) * valid_mp + big_served * big_mp) / elapsed, 3)
    if args.weights:
        offline = offline_images_per_s(args.weights, pixels, args.offline_batch, min(args.seconds, 15))
        report["offline_images_per_s"] = round(offline, 3)
        report["serve_over_offline"] = round(report["requests_per_s"] / offline, 3)
        report["work_over_offline"] = round(report["served_megapixels_per_s"] / (offline * valid_mp), 3)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
