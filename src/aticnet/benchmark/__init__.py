"""``aticnet benchmark``: latency of our models beside their peers, and training throughput.

Protocol:

* Every model (and every variant: plain, ``--fast``, bf16, ...) is built once, then all are
  measured in one process, **interleaved**: each round times one pass of every model in
  turn, so drift (heat, other processes, frequency changes) hits them alike.
* Warm-up passes first (their times are kept apart; the first includes ``torch.compile``'s
  compilation for compiled variants), then timed passes. The timed region is what a user
  pays: image tensor (float32, NCHW, on the device) -> forward -> the final upsampling to
  H x W -> ``argmax`` -> labels, with the device synchronised on CUDA.
* Median latency and its spread (interquartile range, min and max) over many passes. Slow
  models get fewer passes: a model stops once it has ``--min-runs`` passes and its passes
  have used ``--budget`` seconds; the JSON says how many each got.
* FLOPs from ``torch.utils.flop_counter.FlopCounterMode`` on a meta-device copy: it counts
  2 x multiply-accumulates of convolutions and matrix products (not the resizes, pooling
  or argmax). Effective GFLOP/s = those FLOPs / median latency, also shown as a share of the
  machine's measured fp32 matrix-product rate.
* Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over one pass (weights plus the
  pass's peak). On the CPU the allocator hides it from torch, so each model runs once in a
  fresh subprocess, which reads the kernel's peak resident set (VmHWM, reset just before
  the pass): weights plus the pass's peak growth, first pass (an upper bound: it includes
  one-time oneDNN workspace). ``--no-memory`` skips it (null in the JSON).

``--train`` measures the other side: images/s of the training step (forward, backward and
optimiser step on random data at the crop) and, separately, of the data pipeline (decode +
augment in the loader's workers; again with ``ComposedTrainTransform``, the plain v2
pipeline that gives the same samples for more work), then both together.

Every pass runs under ``torch.inference_mode()``, the plain variant included.
"""

from __future__ import annotations

from ..inference.timing import Entry, quantile, run_interleaved
from .inference import benchmark_inference, format_inference
from .models import DEFAULT_MODELS, Variant, build_benchmark_model, parse_variant
from .training import benchmark_training, format_training

__all__ = [
    "DEFAULT_MODELS", "Entry", "Variant", "benchmark_inference", "benchmark_training",
    "build_benchmark_model", "format_inference", "format_training", "parse_variant", "quantile", "run_interleaved",
]
