"""``aticnet stream``: a generated video through the command, its stats, bad input, and Ctrl-C in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction

import pytest

from aticnet.cli import main
from tests.helpers import ROOT, fails
from tests.inference.test_pipeline import H, W, read_video, run_dir, write_video  # noqa: F401 (run_dir: fixture)

pytest.importorskip("av", reason="PyAV is not installed (pip install av)")
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest


def test_stream_a_file_writes_every_frame_and_its_stats(run_dir, tmp_path, capsys):  # noqa: F811
    clip = write_video(tmp_path / "clip.mp4", frames=20, rate=10)
    out, report = tmp_path / "out" / "seg.mkv", tmp_path / "stats.json"
    assert main(["stream", str(clip), "--weights", str(run_dir), "--out", str(out), "--device", "cpu",
                 "--backend", "torch", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "(file, file: every frame)" in printed and "20 of 20 frames written, 0 dropped" in printed
    assert "decode" in printed and "infer" in printed and "render" in printed and "p99" in printed
    stats = json.loads(report.read_text())
    assert (stats["frames_in"], stats["frames_out"], stats["dropped"], stats["policy"]) == (20, 20, 0, "file")
    assert stats["fps"] == pytest.approx(20 / stats["seconds"]) and stats["backend"] == "torch"
    assert set(stats["stage_ms"]) == {"decode", "infer", "render"} and set(stats["latency_ms"]) == {"p50", "p95", "p99"}
    assert read_video(out) == (20, Fraction(10), (H, W))


def test_stream_color_max_frames_and_infer_scale(run_dir, tmp_path, capsys):  # noqa: F811
    clip = write_video(tmp_path / "clip.mp4", frames=12, rate=8)
    out, report = tmp_path / "color.avi", tmp_path / "stats.json"
    assert main(["stream", str(clip), "--weights", str(run_dir), "--out", str(out), "--format", "color",
                 "--max-frames", "5", "--infer-scale", "0.5", "--backend", "torch", "--json", str(report)]) == 0
    stats = json.loads(report.read_text())
    assert (stats["frames_in"], stats["frames_out"], stats["infer_scale"]) == (5, 5, 0.5)
    assert read_video(out) == (5, Fraction(8), (H, W))


def test_stream_a_file_as_live_source(run_dir, tmp_path, capsys):  # noqa: F811
    """--live on a file: read at its frame rate, newest frame wins; nothing to drop when inference keeps up."""
    clip = write_video(tmp_path / "clip.mp4", frames=8, rate=20)
    report = tmp_path / "stats.json"
    assert main(["stream", str(clip), "--weights", str(run_dir), "--live", "--backend", "torch",
                 "--json", str(report)]) == 0
    stats = json.loads(report.read_text())
    assert stats["policy"] == "live" and stats["out"] is None
    assert stats["frames_in"] == 8 == stats["frames_out"] + stats["dropped"]
    assert stats["seconds"] >= 7 / 20 - 0.01


def test_stream_bad_input(run_dir, tmp_path, capsys):  # noqa: F811
    clip = write_video(tmp_path / "clip.mp4", frames=2)
    base = ["stream", str(clip), "--weights", str(run_dir), "--backend", "torch"]
    fails(capsys, base + ["--out", str(tmp_path / "out.txt")], "out.txt", "a video file")
    fails(capsys, base + ["--alpha", "1.5"], "--alpha must be between 0 and 1")
    fails(capsys, base + ["--max-frames", "0"], "--max-frames must be at least 1")
    fails(capsys, ["stream", str(tmp_path / "none.mp4"), "--weights", str(run_dir)], "none.mp4: no such video file")
    fails(capsys, ["stream", "/dev/video97", "--weights", str(run_dir)], "/dev/video97: no such camera")
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 300)
    fails(capsys, ["stream", str(tmp_path / "junk.mp4"), "--weights", str(run_dir)], "junk.mp4", "not a readable video")
    with pytest.raises(SystemExit):
        main(base + ["--input-option", "novalue"])
    assert "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_closes_the_output(run_dir, tmp_path):  # noqa: F811
    """SIGINT to ``aticnet stream`` mid-stream: exit 0, stats printed, the file plays with the frames written."""
    clip = write_video(tmp_path / "long.mp4", frames=200, rate=20)  # 10 s, read live at its rate
    out, report = tmp_path / "cut.mp4", tmp_path / "stats.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "aticnet", "stream", str(clip), "--weights", str(run_dir),
                             "--live", "--out", str(out), "--backend", "torch", "--json", str(report)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = [proc.stdout.readline()]
        while lines[-1] and "Ctrl-C stops" not in lines[-1]:  # a line may say which device runs first
            lines.append(proc.stdout.readline())
        assert "Ctrl-C stops" in lines[-1], lines
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "(stopped by Ctrl-C)" in output and "Traceback" not in output
    stats = json.loads(report.read_text())
    assert stats["interrupted"] and 5 <= stats["frames_out"] < 200
    assert stats["frames_in"] == stats["frames_out"] + stats["dropped"]
    frames, rate, size = read_video(out)
    assert (frames, rate, size) == (stats["frames_out"], Fraction(20), (H, W))
