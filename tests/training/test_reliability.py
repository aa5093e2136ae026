"""Faults during training and untrusted files: killed runs resume exactly, signals save a
checkpoint, corrupt samples are skipped, non-finite losses and full disks keep the last good checkpoint,
and a checkpoint that would run code is refused without running it.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import aticnet.models.weights
import aticnet.training.recipe
from aticnet.cli import main
from aticnet.training.checkpoint import list_checkpoints, load_checkpoint
from aticnet.training.losses import CascadeLoss
from aticnet.training.run_dir import read_metrics
from tests.helpers import TINY_TRAIN

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

STEPS = 10


def run_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        *TINY_TRAIN,
        "--data-root",
        str(root),
        "--out",
        str(out),
        "--max-steps",
        str(STEPS),
        "--save-every",
        "2",
        *extra,
    ]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"}


def error_line(err: str) -> str:
    return next(line for line in err.splitlines() if ": error: " in line)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, here and in the subprocesses: runs in both are compared bit for bit, and on a
    busy machine OpenMP threads waiting for each other make a tiny run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def baseline(synthetic_root, tmp_path_factory) -> Path:
    """A run of the config below, never interrupted."""
    out = tmp_path_factory.mktemp("baseline") / "run"
    assert main(run_args(synthetic_root, out)) == 0
    return out


def start_training(root: Path, out: Path, workers: str) -> tuple[subprocess.Popen, Path]:
    """``python -m aticnet train`` in its own process group; its stderr goes to a file."""
    log = out.parent / f"{out.name}.stderr"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aticnet", *run_args(root, out, "--workers", workers)],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    return proc, log


def wait_for(proc: subprocess.Popen, log: Path, ready, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"training ended early ({proc.returncode}): {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "training never got there"
        time.sleep(0.02)


def test_sigkill_then_resume_gives_the_losses_of_an_uninterrupted_run(synthetic_root, baseline, tmp_path):
    out = tmp_path / "killed"
    proc, log = start_training(synthetic_root, out, workers="0")
    wait_for(proc, log, lambda: bool(list_checkpoints(out)))
    proc.kill()  # SIGKILL: no handler, no last checkpoint
    assert proc.wait(timeout=30) == -signal.SIGKILL
    resume_step = int(load_checkpoint(list_checkpoints(out)[-1])["step"])
    assert resume_step < STEPS
    assert main(["train", "--out", str(out), "--resume"]) == 0
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))  # the steps the killed run logged twice appear once
    after = {s: v for s, v in resumed.items() if s > resume_step}
    assert after == {s: v for s, v in losses(baseline).items() if s > resume_step}  # exact, not approximate
    assert resumed == losses(baseline)  # the killed process' own steps too: same seed, same losses
    a, b = load_file(str(out / "model.safetensors")), load_file(str(baseline / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_resume_falls_back_past_a_damaged_newest_checkpoint(baseline, tmp_path, caplog):
    out = tmp_path / "damaged"
    shutil.copytree(baseline, out)
    older, newest = list_checkpoints(out)[-2:]
    newest.write_bytes(newest.read_bytes()[:1000])  # a truncated copy, as a disk or a transfer leaves one
    older_step = int(load_checkpoint(older)["step"])
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert f"{newest}: not a readable checkpoint" in caplog.text
    assert losses(out) == losses(baseline)  # the steps after the older checkpoint were trained again, exactly
    assert older_step < STEPS and int(load_checkpoint(list_checkpoints(out)[-1])["step"]) == STEPS


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(synthetic_root, baseline, tmp_path):
    out = tmp_path / "stopped"
    proc, log = start_training(synthetic_root, out, workers="2")
    wait_for(proc, log, lambda: (out / "metrics.jsonl").exists() and bool(losses(out)))
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole group, data-loading workers too
    assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
    err = log.read_text()
    match = re.search(
        rf"stopped by SIGINT at step (\d+); checkpoint in {re.escape(str(out / 'checkpoints'))}; "
        rf"continue with: aticnet train --out {re.escape(str(out))} --resume",
        err,
    )
    assert match and "Traceback" not in err, err[-2000:]
    step = int(match.group(1))
    assert 0 < step < STEPS and list_checkpoints(out)[-1].name == f"step_{step:07d}.pt"
    assert max(losses(out)) == step and not (out / "model.safetensors").exists()
    assert main(["train", "--out", str(out), "--resume", "--workers", "0"]) == 0
    assert losses(out) == losses(baseline)


def test_sigterm_saves_a_checkpoint_and_exits_zero(synthetic_root, baseline, tmp_path, caplog, monkeypatch):
    class TermAtStep3(CascadeLoss):
        calls = 0

        def forward(self, outputs, labels):
            TermAtStep3.calls += 1
            if TermAtStep3.calls == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would; the handler only raises a flag
            return super().forward(outputs, labels)

    monkeypatch.setattr(aticnet.training.recipe, "CascadeLoss", TermAtStep3)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "stopped"
    assert main(run_args(synthetic_root, out, "--save-every", "4")) == 0
    assert f"stopped by SIGTERM at step 3; checkpoint in {out / 'checkpoints'}" in caplog.text
    assert [p.name for p in list_checkpoints(out)] == ["step_0000003.pt"] and max(losses(out)) == 3
    assert signal.getsignal(signal.SIGTERM) is before  # handed back
    monkeypatch.undo()
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert losses(out) == losses(baseline)


def test_corrupt_sample_is_skipped_and_counted_and_strict_stops(synthetic_root, tmp_path, capsys, caplog):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    corrupt = root / "images/train/scene_00003.png"
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])  # a torn copy
    bad_mask = root / "masks/val/scene_00001.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad_mask)
    args = [*TINY_TRAIN, "--dataset", "folder", "--data-root", str(root), "--max-steps", "8", "--save-every", "0"]
    assert main(["train", *args, "--out", str(tmp_path / "run")]) == 0  # 8 steps of 2 = two epochs of 8 samples
    assert f"skipped unreadable sample: {corrupt}: cannot decode image" in caplog.text  # stderr outside pytest
    assert f"skipped unreadable sample: {bad_mask}: label is 8x8" in caplog.text
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert sum(r["skipped"] for r in rows if r["kind"] == "train") == 2  # met once per epoch
    assert [r["skipped"] for r in rows if r["kind"] == "eval"] == [1]
    assert all(r["loss"] is not None for r in rows if r["kind"] == "train")
    assert main(["train", *args, "--out", str(tmp_path / "strict"), "--strict", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert error_line(err).startswith(f"aticnet train: error: {corrupt}: cannot decode image (")
    assert "Traceback" not in err


def test_nonfinite_loss_stops_with_the_last_good_checkpoint(synthetic_root, tmp_path, capsys, monkeypatch):
    class NanAtStep3(CascadeLoss):
        calls = 0

        def forward(self, outputs, labels):
            loss, parts = super().forward(outputs, labels)
            NanAtStep3.calls += 1
            return (loss * float("nan") if NanAtStep3.calls == 3 else loss), parts

    monkeypatch.setattr(aticnet.training.recipe, "CascadeLoss", NanAtStep3)
    args = [
        *TINY_TRAIN,
        "--data-root",
        str(synthetic_root),
        "--max-steps",
        "5",
        "--save-every",
        "1",
        "--keep-checkpoints",
        "5",
    ]
    out = tmp_path / "stops"
    assert main(["train", *args, "--out", str(out)]) == 2
    last = out / "checkpoints/step_0000002.pt"
    assert error_line(capsys.readouterr().err) == (
        f"aticnet train: error: loss is nan at step 3; stopped. The last good checkpoint is {last} "
        "(lower --lr, set --grad-clip, or pass --skip-nonfinite to skip such batches)"
    )
    assert list_checkpoints(out) == [out / "checkpoints/step_0000001.pt", last]
    state = load_checkpoint(last)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())

    NanAtStep3.calls = 0
    out = tmp_path / "skips"
    assert main(["train", *args, "--out", str(out), "--skip-nonfinite"]) == 0
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["nonfinite"] for r in rows] == [0, 0, 1, 0, 0]
    assert rows[2]["loss"] is None and all(r["loss"] is not None for r in rows[:2] + rows[3:])

    monkeypatch.undo()  # the real thing: a learning rate that blows up
    assert main(["train", *args, "--out", str(tmp_path / "lr"), "--lr", "1e30", "--optimizer", "sgd"]) == 2
    assert "loss is nan at step 2; stopped. The last good checkpoint is" in capsys.readouterr().err


def test_full_disk_keeps_the_previous_checkpoint(synthetic_root, tmp_path, capsys, caplog, monkeypatch):
    real_save = torch.save
    calls = []

    def save_until_the_disk_fills(obj, path, *a, **k):
        calls.append(path)
        if len(calls) == 1:
            return real_save(obj, path, *a, **k)
        Path(path).write_bytes(b"half a checkpoint")  # what a full disk leaves: a torn file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    out = tmp_path / "run"
    args = [
        *TINY_TRAIN,
        "--data-root",
        str(synthetic_root),
        "--max-steps",
        "6",
        "--save-every",
        "2",
        "--keep-checkpoints",
        "1",
    ]
    assert main(["train", *args, "--out", str(out)]) == 0  # a full disk does not end the run
    for step in (4, 6):
        assert (
            f"could not save the checkpoint of step {step} ([Errno 28] No space left on device); "
            "the previous one is kept"
        ) in caplog.text
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002.pt"]  # no torn or temporary file
    assert load_checkpoint(out / "checkpoints/step_0000002.pt")["step"] == 2
    assert max(losses(out)) == 6 and (out / "model.safetensors").is_file()

    # The final weights cannot be written: a clear error, the checkpoint still there.
    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(aticnet.models.weights, "save_file", disk_full)
    out = tmp_path / "final"
    assert main(["train", *args, "--out", str(out), "--max-steps", "2"]) == 2
    assert error_line(capsys.readouterr().err) == (
        f"aticnet train: error: {out / 'model.safetensors'}: could not save ([Errno 28] No space left on device); "
        f"the last checkpoint is in {out / 'checkpoints'}"
    )
    assert not (out / "model.safetensors").exists()


class RunsCode:
    """Unpickling this calls exec(): what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(synthetic_root, tmp_path, capsys):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(RunsCode(probe)))  # a plain unpickler runs it: the file is dangerous
    assert probe.read_text() == "pwned"
    marker = tmp_path / "MARKER"
    zipped, raw = tmp_path / "evil.pt", tmp_path / "evil_raw.pt"
    torch.save({"model": RunsCode(marker), "step": 1}, zipped)
    raw.write_bytes(pickle.dumps({"model": RunsCode(marker)}))
    for evil in (zipped, raw):
        argv = [
            "train",
            *TINY_TRAIN,
            "--data-root",
            str(synthetic_root),
            "--out",
            str(tmp_path / "run"),
            "--max-steps",
            "2",
            "--resume",
            str(evil),
        ]
        assert main(argv) == 2
        line = error_line(capsys.readouterr().err)
        assert line.startswith(
            f"aticnet train: error: {evil}: refused to load: the file holds Python objects that "
            "could run code (only tensors and plain values are accepted)"
        )
        assert (
            main(
                [
                    "predict",
                    str(synthetic_root / "images/val/scene_00000.png"),
                    "--weights",
                    str(evil),
                    "--out",
                    str(tmp_path / "p"),
                ]
            )
            == 2
        )
        assert str(evil) in error_line(capsys.readouterr().err)
        assert not marker.exists()
    assert "GLOBAL builtins.exec" in line or "nsupported" in line
    # A torn checkpoint (a copy cut short) is refused too.
    assert (
        main(
            [
                "train",
                *TINY_TRAIN,
                "--data-root",
                str(synthetic_root),
                "--out",
                str(tmp_path / "ok"),
                "--max-steps",
                "1",
            ]
        )
        == 0
    )
    torn = tmp_path / "torn.pt"
    good = list_checkpoints(tmp_path / "ok")[-1]
    torn.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert main(["train", "--out", str(tmp_path / "ok"), "--resume", str(torn)]) == 2
    assert f"{torn}: not a readable checkpoint" in capsys.readouterr().err


def test_same_seed_same_losses_and_weights(synthetic_root, baseline, tmp_path):
    out = tmp_path / "again"
    assert main(run_args(synthetic_root, out, "--save-every", "0")) == 0
    assert losses(out) == losses(baseline)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(baseline / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)
