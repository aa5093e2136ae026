"""The stream's timing statistics in fixed memory: running percentiles within half a percent of the exact ones,
however many values, and a pipeline that keeps no per-frame list."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aticnet.inference.pipeline import Pipeline, RunningPercentiles


def exact(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q, method="inverted_cdf"))  # nearest rank, as RunningPercentiles


@pytest.mark.parametrize("seed", [0, 1])
def test_running_percentiles_are_within_half_a_percent(seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.lognormal(np.log(0.03), 0.4, 20000),  # ~30 ms frames
                             rng.lognormal(np.log(0.3), 0.2, 500)])  # and a few stalls
    stats = RunningPercentiles()
    for v in values:
        stats.add(float(v))
    assert len(stats) == len(values)
    for q in (1, 50, 95, 99, 99.9, 100):
        assert stats.percentile(q) == pytest.approx(exact(values, q), rel=0.005), q
    assert stats.percentile(0) == pytest.approx(values.min(), rel=0.005)


def test_running_percentiles_of_few_and_extreme_values():
    stats = RunningPercentiles()
    assert stats.percentile(50) == 0.0 and len(stats) == 0
    for v in (0.004, 0.002, 0.003):
        stats.add(v)
    assert [stats.percentile(q) for q in (0, 50, 100)] == pytest.approx([0.002, 0.003, 0.004], rel=0.005)
    stats.add(0.0)  # a zero (a frame already waiting) and a value past the last bin are clamped, never lost
    stats.add(1e6)
    assert stats.percentile(0) == 0.0 and stats.percentile(100) == 1e6 and len(stats) == 5


def test_memory_does_not_grow_with_the_stream():
    stats = RunningPercentiles()
    size = stats.counts.nbytes
    for v in np.random.default_rng(0).uniform(0.001, 1.0, 100000):
        stats.add(float(v))
    assert stats.counts.nbytes == size < 64 * 1024 and int(stats.counts.sum()) == 100000


class Echo:
    """A segmenter whose labels are the frame's first channel."""

    def predict_batch(self, images, batch_size=1, infer_scale=None):
        return [torch.from_numpy(im[..., 0].copy()) for im in images]


def test_a_pipeline_keeps_running_percentiles_not_lists():
    frames = (np.full((4, 4, 3), i % 256, np.uint8) for i in range(300))
    pipeline = Pipeline(frames, Echo(), lambda frame, labels: frame.image, None, policy="file")
    stats = pipeline.run()
    assert stats.frames_out == 300
    assert all(isinstance(t, RunningPercentiles) and len(t) == 300 for t in pipeline.times.values())
    assert isinstance(pipeline.latency, RunningPercentiles) and len(pipeline.latency) == 300
    assert stats.latency_ms["p50"] == pytest.approx(1000 * pipeline.latency.percentile(50))
    assert 0 < stats.latency_ms["p50"] <= stats.latency_ms["p95"] <= stats.latency_ms["p99"]
