"""aticnet: real-time semantic segmentation of street scenes with AtICNet, ICNet and PSPNet.

The public API: everything a script needs is a name of this module.

>>> import aticnet
>>> model = aticnet.build_model("aticnet", num_classes=11)          # an nn.Module, random init
>>> m = aticnet.load("aticnet-camvid")                                # shipped weights, a run, a file, a Hub folder
>>> labels = m.predict("street.png")                                  # H x W class ids at the image's size
>>> summary = aticnet.train(aticnet.load_config("configs/camvid.yaml", out="runs/x"))
>>> scores = aticnet.evaluate("runs/x", "camvid", "data/camvid", "val")

Names that need an optional extra or a heavier import (training, evaluation, export, the Hub) load on
first use, so ``import aticnet`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .inference.overlay import colorize, overlay
from .inference.segmenter import Segmenter, load
from .models import MODEL_NAMES, ModelConfig, build_model
from .models.pretrained import get_weights, list_weights
from .version import __version__

# name -> the module that defines it, imported on first use
_LAZY = {
    "TrainConfig": "training.config",
    "load_config": "training.config",
    "train": "training.trainer",
    "evaluate": "evaluation.evaluate",
    "read_metrics": "training.run_dir",
    "count_parameters": "models.analysis",
    "count_flops": "models.analysis",
    "measure_latency": "inference.timing",
    "time_interleaved": "inference.timing",
    "build_dataset": "data",
    "cpu_info": "utils.cpu",
    "machine_info": "benchmark.machine",
    "compare_models": "visualization.figures",
    "plot_runs": "visualization.figures",
    "export": "deploy.export",
    "quantize": "deploy.quantize",
    "from_pretrained": "deploy.hub",
    "save_pretrained": "deploy.hub",
    "hub": "deploy.hub",
}

__all__ = [
    "MODEL_NAMES", "ModelConfig", "Segmenter", "TrainConfig", "__version__", "build_dataset", "build_model", "colorize",
    "compare_models", "count_flops", "count_parameters", "cpu_info", "evaluate", "export", "from_pretrained",
    "get_weights", "hub", "list_weights", "load", "load_config", "machine_info", "measure_latency", "overlay",
    "plot_runs", "quantize", "read_metrics", "save_pretrained", "time_interleaved", "train",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports these on first use
    from .benchmark.machine import machine_info
    from .data import build_dataset
    from .deploy import hub
    from .deploy.export import export
    from .deploy.hub import from_pretrained, save_pretrained
    from .deploy.quantize import quantize
    from .evaluation.evaluate import evaluate
    from .inference.timing import measure_latency, time_interleaved
    from .models.analysis import count_flops, count_parameters
    from .training.config import TrainConfig, load_config
    from .training.run_dir import read_metrics
    from .training.trainer import train
    from .utils.cpu import cpu_info
    from .visualization.figures import compare_models, plot_runs


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'aticnet' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    return module if name == "hub" else getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
