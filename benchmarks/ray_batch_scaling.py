"""Images/s of ``aticnet predict --ray`` on one and on two Ray worker nodes of 1 CPU each, made on this machine.

For each node count N: a head node with no CPUs for work (``ray start --head --num-cpus 0``), N worker nodes of
1 CPU (``ray start --address ... --num-cpus 1``), then ``aticnet predict --ray ADDRESS --workers N
--cpus-per-worker 1`` over the same generated images into a fresh folder. It reports the steady images/s (from the first
finished batch to the last, from the index's times), the driver's images/s (Ray connection and model loading
included), the actors' own images/s (images over the busiest node's summed per-image seconds, from the index) and the
two-node/one-node ratio:

    python benchmarks/ray_batch_scaling.py --weights RUN --images 96 --size 960x720 --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_nodes(address: str, count: int, env: dict, timeout: float = 300) -> None:
    """Wait until ``count`` nodes of the cluster at ``address`` are alive (a node joins seconds after its start; on
    2 busy cores a head and two workers can take minutes)."""
    probe = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        last = (done.stdout.strip().splitlines() or [""])[-1] if done.returncode == 0 else done.stderr.strip()[-500:]
        time.sleep(2)
    raise RuntimeError(f"the Ray cluster at {address} has not {count} nodes alive after {timeout:.0f} s "
                       f"(last probe: {last or 'no output'})")


def start_cluster(workers: int, env: dict, logs: Path) -> tuple[str, list[subprocess.Popen]]:
    """A head with no CPUs for work and ``workers`` nodes of 1 CPU on this machine; each node's output in ``logs``."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)

    def node(name: str, *args: str) -> subprocess.Popen:
        # Nodes sharing one address each need their own agent and metrics ports (the defaults are fixed numbers).
        own = ["--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
        with open(logs / f"{name}.log", "w") as log:
            return subprocess.Popen([ray_cli, "start", *args, "--block", "--disable-usage-stats", "--node-ip-address",
                                     "127.0.0.1", *own], env=env, stdout=log, stderr=subprocess.STDOUT)

    nodes = [node("head", "--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false")]
    time.sleep(8)
    try:
        # One at a time: nodes started together on one machine take the same socket names and the later one's
        # raylet dies on "bind: Address already in use".
        for i in range(workers):
            nodes.append(node(f"worker{i}", "--address", f"127.0.0.1:{port}", "--num-cpus", "1"))
            wait_for_nodes(f"127.0.0.1:{port}", i + 2, env)
    except RuntimeError as e:
        stop_cluster(nodes)
        tails = "\n".join(f"--- {p.name}:\n" + "\n".join(p.read_text().splitlines()[-15:]) for p in sorted(logs.iterdir()))
        raise SystemExit(f"{e}\n{tails}") from None
    return f"127.0.0.1:{port}", nodes


def stop_cluster(nodes: list[subprocess.Popen]) -> None:
    for node in nodes:
        node.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.wait(60)
        except subprocess.TimeoutExpired:
            node.kill()


def run_once(args, images: Path, workers: int, work: Path, env: dict) -> dict:
    address, nodes = start_cluster(workers, env, work / f"logs{workers}")
    out = work / f"out{workers}"
    try:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "aticnet", "predict", str(images), "--weights", args.weights,
                               "--out", str(out), "--format", args.format, "--backend", args.backend,
                               "--batch-size", str(args.batch_size), "--workers", str(workers),
                               "--cpus-per-worker", "1", "--ray", address],
                              env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
    finally:
        stop_cluster(nodes)
    if done.returncode:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    summary = re.search(r"(\d+) images in ([\d.]+) s \(([\d.]+) images/s", done.stdout + done.stderr)
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    busy: dict[str, float] = {}
    for r in rows:  # each node's actors' busy time; the busiest one sets the pace
        busy[r["node"]] = busy.get(r["node"], 0.0) + r["seconds"]
    # Steady state: from the first batch's end to the last one's (Ray start-up and model loading left out).
    times = sorted(r["finished"] for r in rows)
    first = sum(t == times[0] for t in times)
    steady = (len(times) - first) / (times[-1] - times[0]) if times[-1] > times[0] else float("nan")
    return {"worker_nodes": workers, "steady_images_per_s": round(steady, 3), "images": len(rows), "driver_images_per_s": float(summary.group(3)),
            "driver_seconds": float(summary.group(2)), "command_seconds": round(wall, 2),
            "actor_images_per_s": round(len(rows) / max(busy.values()), 3), "images_per_node": {
                node[:8]: sum(r["node"] == node for r in rows) for node in busy}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", default="960x720", help="WIDTHxHEIGHT of the generated images")
    parser.add_argument("--format", default="trainid")
    parser.add_argument("--backend", default="torch", help="torch keeps each actor to its 1 CPU's thread")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    # The nodes and the drivers share one authentication token (Ray's token auth), and one thread per process.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(work / f"im{i:04d}.png")
        images = work / "images"
        images.mkdir()
        for p in work.glob("im*.png"):
            p.rename(images / p.name)
        runs = [run_once(args, images, n, work, env) for n in (1, 2)]
    import shlex

    import aticnet

    report = {"mode": "ray_scaling", "command": "python " + shlex.join(sys.argv), **aticnet.machine_info("cpu"),
              "size": args.size, "runs": runs,
              "two_over_one_steady": round(runs[1]["steady_images_per_s"] / runs[0]["steady_images_per_s"], 3),
              "two_over_one_driver": round(runs[1]["driver_images_per_s"] / runs[0]["driver_images_per_s"], 3),
              "two_over_one_actors": round(runs[1]["actor_images_per_s"] / runs[0]["actor_images_per_s"], 3)}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
