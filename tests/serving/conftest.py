"""The served models: ``aticnet serve`` in a subprocess (a local Ray, a tiny model each), started once for the
serving tests (a start costs about 20 s), with no --host flag, so it listens where the default says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.serving.oip import free_port, tiny_weights


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The server on free ports serving a run folder ("street") and a .safetensors file ("other"): at most 8
    images and 1 megapixel a request, 12 requests waiting per model, the default 64 MiB body limit."""
    pytest.importorskip("kserve")
    pytest.importorskip("ray.serve")
    root = tmp_path_factory.mktemp("serve")
    tiny_weights(root / "street" / "model.safetensors", 0)
    tiny_weights(root / "other.safetensors", 1)
    http, grpc = free_port(), free_port()
    log_path = root / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "aticnet", "serve", "--weights", str(root / "street"), str(root / "other.safetensors"),
         "--http-port", str(http), "--grpc-port", str(grpc), "--backend", "torch", "--max-batch", "8",
         "--batch-wait-ms", "100", "--max-megapixels", "1", "--max-queued", "12"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{http}"
    deadline = time.time() + 180
    while time.time() < deadline:
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the server was not ready in 180 s:\n" + log_path.read_text()[-3000:])
    yield {"url": url, "http": http, "grpc": grpc, "root": root, "process": process, "log": log_path}
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="session")
def street(server):
    import aticnet

    return aticnet.load(server["root"] / "street", backend="torch")
