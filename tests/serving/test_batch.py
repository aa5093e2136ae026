"""``aticnet predict --ray``: Ray Data prediction equals single-process ``predict`` image for image, reruns skip
finished outputs, and a two-node Ray cluster made on this machine runs it and resumes after a kill."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aticnet
from aticnet import build_model
from aticnet.data.cityscapes_labels import CLASS_COLORS, CLASS_NAMES
from aticnet.inference.predict import predict_files
from aticnet.models.weights import save_weights
from aticnet.serving.batch import expand_inputs, plan_outputs
from aticnet.utils.errors import UserError

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    save_weights(build_model("aticnet", num_classes=19, width=0.125).eval(), run / "model.safetensors",
                 {"classes": CLASS_NAMES, "colors": [list(c) for c in CLASS_COLORS], "dataset": "synthetic"})
    return run


def write_images(root: Path, count: int) -> Path:
    """``count`` random images of two sizes, half of them in a sub-folder."""
    rng = np.random.default_rng(0)
    for i in range(count):
        path = root / ("sub" if i % 2 else "") / f"im{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 56, 3) if i % 3 else (32, 64, 3), dtype=np.uint8)).save(path)
    return root


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


def index_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one costs seconds)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def test_inputs_from_globs_and_list_files(tmp_path):
    root = write_images(tmp_path / "images", 4)
    (tmp_path / "list.txt").write_text("# two of them\nimages/im000.png\n\nimages/sub/im001.png\n")
    assert expand_inputs([str(root / "*.png")]) == [str(root / "im000.png"), str(root / "im002.png")]
    assert expand_inputs([tmp_path / "list.txt"]) == [str(tmp_path / "images/im000.png"),
                                                       str(tmp_path / "images/sub/im001.png")]
    rows = plan_outputs([root], tmp_path / "out", "color")
    assert [r["output"] for r in rows] == [str(tmp_path / "out" / n) for n in
                                           ("im000.png", "im002.png", "sub/im001.png", "sub/im003.png")]
    for bad in ([str(root / "*.jpg")], ["s3://bucket/images"]):
        with pytest.raises(UserError):
            expand_inputs(bad)


@pytest.mark.slow
def test_ray_data_equals_single_process_and_resumes(weights, tmp_path, local_ray, one_thread):
    from aticnet.serving.batch import predict_on_ray

    images = write_images(tmp_path / "images", 8)
    segmenter = aticnet.load(weights, backend="torch")
    predict_files(segmenter, [images], tmp_path / "plain", fmt="overlay", progress=False, log=lambda _: None)
    ray_out = tmp_path / "ray"
    first = predict_on_ray(str(weights), [images], ray_out, fmt="overlay", batch_size=2, workers=2,
                           backend="torch", log_line=lambda _: None)
    assert (first["images"], first["skipped"]) == (8, 0)
    got, want = pngs(ray_out), pngs(tmp_path / "plain")
    assert got.keys() == want.keys() and len(got) == 8
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    rows = index_rows(ray_out / "index.jsonl")
    assert sorted(r["output"] for r in rows) == sorted(str(ray_out / n) for n in want)
    assert all(r["seconds"] > 0 for r in rows)

    # a rerun after losing two outputs makes just those two
    for name in ("im000.png", "sub/im003.png"):
        (ray_out / name).unlink()
    kept = {n: (ray_out / n).stat().st_mtime_ns for n in want if n not in ("im000.png", "sub/im003.png")}
    again = predict_on_ray(str(weights), [images], ray_out, fmt="overlay", batch_size=2, workers=1,
                           backend="torch", log_line=lambda _: None)
    assert (again["images"], again["skipped"]) == (2, 6)
    assert {n: (ray_out / n).stat().st_mtime_ns for n in kept} == kept
    assert all(np.array_equal(a, want[n]) for n, a in pngs(ray_out).items())
    assert len(index_rows(ray_out / "index.jsonl")) == 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_nodes(address: str, count: int, timeout: float = 120) -> None:
    """Wait until ``count`` nodes of the cluster at ``address`` are alive (a node joins seconds after its start)."""
    probe = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster at {address} has not {count} nodes alive after {timeout:.0f} s")


@pytest.fixture
def two_node_cluster(tmp_path, monkeypatch):
    """A head and a worker node of 1 CPU each, made with ``ray start --block`` and stopped by their pids; the
    nodes and the drivers share an authentication token through the environment."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    head = subprocess.Popen([ray_cli, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                             "--node-ip-address", "127.0.0.1", *common],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    time.sleep(8)
    worker = subprocess.Popen([ray_cli, "start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_nodes(address, 2)
    yield address
    for process in (worker, head):
        process.send_signal(signal.SIGTERM)
    for process in (worker, head):
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def predict_cli(weights: Path, images: Path, out: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aticnet", "predict", str(images), "--weights", str(weights),
                             "--out", str(out), "--format", "trainid", "--backend", "torch", "--batch-size", "2",
                             "--workers", "2", "--ray", address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_node_cluster_runs_and_resumes_after_a_kill(weights, tmp_path, two_node_cluster):
    images = write_images(tmp_path / "images", 40)
    out = tmp_path / "ray"
    killed = predict_cli(weights, images, out, two_node_cluster)
    index = out / "index.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and killed.poll() is None:
        if index.is_file() and len(index.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    killed.kill()  # the driver dies mid-run; its actors go with it
    killed.wait()
    done_before = {r["output"] for r in index_rows(index)}
    assert 4 <= len(done_before) < 40, "the kill came after the run finished: give it more images"

    resumed = predict_cli(weights, images, out, two_node_cluster)
    text, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, text
    assert len(list(out.rglob("im*.png"))) == 40
    rows = index_rows(index)
    assert len({r["output"] for r in rows}) == 40
    resumed_rows = [r for r in rows if r["output"] not in done_before and r["seconds"] is not None]
    assert len({r["node"] for r in resumed_rows}) == 2, "both nodes' actors should have worked"
    skipped = int(text.split(" already done")[0].rsplit(", ", 1)[-1])
    assert skipped >= len(done_before)

    segmenter = aticnet.load(weights, backend="torch")
    predict_files(segmenter, [images], tmp_path / "plain", fmt="trainid", progress=False, log=lambda _: None)
    got, want = pngs(out), pngs(tmp_path / "plain")
    assert got.keys() == want.keys()
    for name in want:
        assert np.array_equal(got[name], want[name]), name
