"""Several processes under torchrun (Gloo on the CPU): they stop together, whichever of them is asked to."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aticnet.training.checkpoint import list_checkpoints, load_checkpoint
from aticnet.training.run_dir import read_metrics
from tests.helpers import TINY_TRAIN

pytestmark = pytest.mark.slow


def torchrun(root: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "aticnet",
           "train", *TINY_TRAIN, "--data-root", str(root), "--out", str(out), *extra]
    return subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def worker_of_rank(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the torchrun worker (a child of the launcher) whose RANK is ``rank``."""
    for _ in range(1200):
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if parent == launcher.pid and f"RANK={rank}".encode() in environ:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} under the launcher")


def test_sigterm_to_one_process_stops_both_at_one_step_with_one_checkpoint(synthetic_root, tmp_path):
    out = tmp_path / "ddp"
    launcher = torchrun(synthetic_root, out, "--max-steps", "400", "--save-every", "1000", "--keep-checkpoints", "5")
    try:
        rank1 = worker_of_rank(launcher, 1)
        deadline = time.time() + 240
        while not any(r.get("step", 0) >= 3 for r in read_metrics(out)) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(rank1, signal.SIGTERM)  # only rank 1 hears it, as when a scheduler preempts one process
        _, err = launcher.communicate(timeout=120)  # a hang would end here
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, err[-3000:]
    assert "stopped by SIGTERM" in err and "stopped by a stop signal to another process" in err, err[-3000:]
    (checkpoint,) = list_checkpoints(out)  # one, written by rank 0 for both
    state = load_checkpoint(checkpoint)
    step = state["step"]
    assert 3 <= step < 400 and checkpoint.name == f"step_{step:07d}.pt"
    assert len(state["rng"]) == 2  # each process's own random state
    assert max(r["step"] for r in read_metrics(out)) == step and not (out / "model.safetensors").exists()

    resumed = torchrun(synthetic_root, out, "--max-steps", str(step + 3), "--resume", "auto")
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err[-3000:]
    steps = [r["step"] for r in read_metrics(out) if r["kind"] == "train"]
    assert steps == list(range(1, step + 4))  # every step once: the stopped run's, then the resumed ones
    assert (out / "model.safetensors").is_file()
    shutil.rmtree(out)
