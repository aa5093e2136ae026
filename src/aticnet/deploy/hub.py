"""Saving and loading the way the Hugging Face Hub does: one folder per model.

>>> import aticnet
>>> aticnet.save_pretrained("runs/aticnet_r1", "hub/aticnet-cityscapes")   # a run, weights file or module
>>> m = aticnet.from_pretrained("hub/aticnet-cityscapes")                  # a folder, or a Hub repo id
>>> aticnet.hub.pretrained("runs/aticnet_r1").push_to_hub("me/aticnet-cityscapes")

A folder holds ``model.safetensors`` (the state dict; its safetensors metadata also carries the
model config, classes and colours, so ``aticnet.load(folder)`` works too), ``config.json``
(``model_config`` = ``ModelConfig``, ``classes``, ``colors``, ``mean``, ``std``, ``num_classes``)
and ``README.md``, a model card built from the run (``aticnet.deploy.model_card``).

How the mixin fits: ``PretrainedSegmentation`` is a thin container (model + metadata + what the
card needs) that subclasses ``huggingface_hub.ModelHubMixin``; our ``nn.Module`` classes are left
alone. ``PyTorchModelHubMixin`` on ``ICNet``/``PSPNet`` was the other way; it was not taken because
(1) its config.json holds only ``__init__`` arguments (a ``ModelConfig``), not the classes, colours and
normalisation a user needs, (2) loading must pick the class (ICNet or PSPNet) from the config before
building, which a per-class ``from_pretrained`` cannot, (3) it loads with ``strict=False`` (a
mismatched checkpoint loads silently half-way; we load strictly with a clear message), and (4) it would
make ``huggingface_hub`` a dependency of every model construction. The container keeps the Hub's
conventions (file names, ``from_pretrained``/``save_pretrained``/``push_to_hub`` with download,
cache, revision and token handling) with none of that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin, hf_hub_download
from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, HFValidationError
from torch import nn

from ..inference.images import default_palette
from ..inference.segmenter import Segmenter, segmenter_of_module
from ..models import ModelConfig
from ..models.pretrained import get_weights, is_weights_name
from ..models.weights import load_model, model_for_tensors, read_weights, resolve_weights, save_weights
from ..training.run_dir import run_dir_of
from ..utils.distributed import pick_device
from ..utils.errors import UserError
from ..utils.io import write_json
from ..version import __version__

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 1  # config.json's "aticnet_format"
TAGS = ["aticnet", "semantic-segmentation", "image-segmentation", "pytorch", "street-scenes"]


class PretrainedSegmentation(ModelHubMixin, library_name="aticnet", pipeline_tag="image-segmentation", tags=TAGS):
    """A model with its classes, colours and (optionally) its run, savable as a Hub folder.

    ``model`` is an aticnet ``nn.Module`` (it has ``.config``); ``meta`` holds ``classes``,
    ``colors`` and anything else JSON-able (``dataset``, ``step``, ``miou``); ``run_dir`` and
    ``latency`` feed the model card.
    """

    def __init__(self, model: nn.Module, meta: dict[str, Any] | None = None, run_dir: str | None = None,
                 latency: dict[str, Any] | None = None, license: str | None = None,
                 card_sections: dict[str, list[str]] | None = None, dtype: torch.dtype | None = None) -> None:
        self.model = getattr(model, "module", model)  # unwrap DDP
        k = self.model.config.num_classes
        meta = dict(meta or {})
        meta.setdefault("classes", [f"class {i}" for i in range(k)])
        meta.setdefault("colors", default_palette(k))
        self.meta = meta
        self.run_dir = run_dir
        self.latency = latency
        self.license = license
        self.card_sections = card_sections
        self.dtype = dtype  # e.g. torch.float16: the file stores that; it loads as float32
        self._hub_mixin_config = None  # config.json is written by _save_pretrained, not from __init__ arguments

    # ------------------------------------------------------------------ writing
    def hub_config(self) -> dict[str, Any]:
        """The content of config.json."""
        cfg = self.model.config
        extra = {k: v for k, v in sorted(self.meta.items()) if k not in ("classes", "colors", "model_config")}
        return {"library_name": "aticnet", "aticnet_format": FORMAT_VERSION, "aticnet_version": __version__,
                "model_type": cfg.name, "model_config": cfg.to_dict(), "num_classes": cfg.num_classes,
                "classes": list(self.meta["classes"]), "colors": [list(map(int, c)) for c in self.meta["colors"]],
                "mean": list(cfg.mean), "std": list(cfg.std), **extra}

    def _save_pretrained(self, save_directory: Path) -> None:
        meta = {k: v for k, v in self.meta.items() if k != "model_config"}
        save_weights(self.model, save_directory / WEIGHTS_NAME, meta, sidecar=False,  # config.json is the sidecar
                     dtype=self.dtype)
        write_json(save_directory / CONFIG_NAME, self.hub_config())

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card (README.md): YAML metadata and sections built from the run."""
        from ..training.run_dir import read_run
        from .model_card import build_model_card

        run = read_run(self.run_dir) if self.run_dir else None
        return build_model_card(self.model, self.meta, run=run, latency=self.latency, license=self.license,
                                sections=self.card_sections,
                                repo_id=kwargs.get("repo_id"))

    def segmenter(self, device: str | torch.device = "cpu", fast: bool = True, source: str = "",
                  backend: str | None = None) -> Segmenter:
        """A ``Segmenter`` running this model on ``backend``, as ``aticnet.load`` runs a run (default:
        OpenVINO on a CPU where it is installed; PyTorch with ``fast`` BatchNorms folded)."""
        device = pick_device(device)
        return segmenter_of_module(self.model.to(device).eval(), self.meta, device, backend=backend, fast=fast,
                                   source=source)

    # ------------------------------------------------------------------ reading
    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         config: dict[str, Any] | None = None, map_location: str = "cpu",
                         **kwargs: Any) -> PretrainedSegmentation:
        if os.path.isdir(model_id):
            weights = resolve_weights(model_id)  # model.safetensors (or a run's best.safetensors)
        else:
            weights = Path(hf_hub_download(repo_id=model_id, filename=WEIGHTS_NAME, revision=revision,
                                           cache_dir=cache_dir, force_download=force_download, token=token,
                                           local_files_only=local_files_only))
        tensors, meta = read_weights(weights)
        config = dict(config or {})
        raw = config.get("model_config") or meta.get("model_config")
        if raw is None:
            raise UserError(f"{model_id}: neither config.json nor the weights' metadata holds an aticnet model config")
        try:
            model_config = ModelConfig.from_dict(raw)
        except (TypeError, ValueError) as e:
            raise UserError(f"{model_id}: bad model config ({e})") from None
        model = model_for_tensors(model_config, tensors, str(weights))  # checked to fit before allocating
        meta.pop("model_config", None)
        for key in ("classes", "colors"):  # config.json wins over the weights' copy
            if key in config:
                meta[key] = config[key]
        return cls(model.to(map_location).eval(), meta)


# ----------------------------------------------------------------------------- functions
def pretrained(source: Any, *, meta: dict[str, Any] | None = None, latency: dict[str, Any] | None = None,
               license: str | None = None) -> PretrainedSegmentation:
    """A ``PretrainedSegmentation`` from a run directory, a ``.safetensors`` file, a Segmenter or a module.

    A module needs ``meta`` for its class names and colours (generated otherwise)."""
    run_dir = None
    if isinstance(source, PretrainedSegmentation):
        return source
    if isinstance(source, Segmenter):
        if not isinstance(source.model, nn.Module) or not hasattr(source.model, "config"):
            raise UserError(f"{source.source}: only PyTorch models can be saved as a Hub folder, not {source.backend}")
        model, found = source.model, {**source.meta, "classes": source.classes, "colors": source.colors}
        run_dir = run_dir_of(Path(source.source)) if source.source else None
    elif isinstance(source, nn.Module):
        model, found = source, {}
    else:
        path = Path(source)
        model, found = load_model(path, "cpu")
        run_dir = run_dir_of(path)
    return PretrainedSegmentation(model, {**found, **(meta or {})}, run_dir=str(run_dir) if run_dir else None,
                                  latency=latency, license=license)


def save_pretrained(source: Any, save_directory: str | Path, *, meta: dict[str, Any] | None = None,
                    latency: dict[str, Any] | None = None, license: str | None = None,
                    overwrite_card: bool = True, dtype: torch.dtype | None = None,
                    card_sections: dict[str, list[str]] | None = None) -> Path:
    """Write ``source`` as a Hub folder: model.safetensors, config.json, README.md (the model card).

    Args:
        source: a run directory, a ``.safetensors`` file, a shipped name, a Segmenter or an aticnet module.
        save_directory: the folder to write.
        meta: JSON-able facts for config.json and the card (``classes``, ``colors``, ``dataset``...).
        latency: a measured latency for the card (``aticnet.deploy.hub.measure_latency`` gives one).
        license: the card's licence field.
        overwrite_card: replace an existing README.md (else it is kept, as huggingface_hub's mixin does).
        dtype: store the weights in this type (``torch.float16``: half the size; they load as float32).
        card_sections: markdown lines per card section: a section of the generated card with that title
            ("Evaluation", "Speed", "Intended use and limits"...) is replaced, any other title is added.

    Returns:
        The folder.
    """
    folder = Path(save_directory)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a directory")
    item = pretrained(source, meta=meta, latency=latency, license=license)
    item.card_sections, item.dtype = card_sections, dtype
    if overwrite_card:
        (folder / CARD_NAME).unlink(missing_ok=True)
    item.save_pretrained(folder)
    return folder


def from_pretrained(name_or_path: str | Path, *, device: str | torch.device = "cpu", fast: bool = True,
                    backend: str | None = None, revision: str | None = None, cache_dir: str | Path | None = None,
                    local_files_only: bool = False, token: str | bool | None = None) -> Segmenter:
    """A [`Segmenter`][aticnet.Segmenter] from a shipped name, a Hub folder (or run directory), or a Hub repo id.

    Repo ids go through ``huggingface_hub``'s download and cache (``HF_HUB_OFFLINE=1`` reads the
    cache only); shipped names and folders read nothing from the network.

    Examples:
        >>> import aticnet
        >>> m = aticnet.from_pretrained("aticnet-camvid")      # the same as aticnet.load("aticnet-camvid")
        >>> m = aticnet.from_pretrained("hub/mine")            # a folder written by save_pretrained

    Args:
        name_or_path: a shipped name (``"aticnet-camvid"``), a folder, or a Hub repo id (``"user/name"``).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``, as [`aticnet.load`][aticnet.load] takes it.
        fast: PyTorch runs the model with its BatchNorms folded, as in [`aticnet.load`][aticnet.load].
        backend: the engine, as in [`aticnet.load`][aticnet.load] (default: OpenVINO on a CPU where it is
            installed, else PyTorch).
        revision: a Hub repo's branch, tag or commit.
        cache_dir: where huggingface_hub caches downloads.
        local_files_only: read the cache only, never the network.
        token: a Hub token, for private repos.

    Returns:
        The segmenter; its ``predict(image)`` gives H x W class ids.

    Raises:
        UserError: the path is not a model folder, or the Hub or its cache cannot give the model.
    """
    text = str(name_or_path)
    if not os.path.exists(text) and is_weights_name(text):
        text = str(get_weights(text).folder)  # a shipped model is a Hub folder inside the package
    if not os.path.isdir(text) and (os.path.exists(text) or text.startswith((".", "/", "~")) or text.count("/") > 1):
        raise UserError(f"{text}: not a model folder (a directory with config.json and model.safetensors)")
    device = pick_device(device)
    if os.path.isdir(text) and not (Path(text) / CONFIG_NAME).is_file():
        from ..inference.segmenter import load  # a run directory or a folder with only weights: aticnet's own loader

        return load(text, device, fast=fast, backend=backend)
    try:
        item = PretrainedSegmentation.from_pretrained(text, revision=revision, cache_dir=cache_dir,
                                                      local_files_only=local_files_only, token=token)
    except (EntryNotFoundError, HfHubHTTPError, HFValidationError, OSError) as e:
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
        raise UserError(f"{text}: cannot load it from the Hub or its cache ({e.__class__.__name__}: {first[:200]})") from None
    return item.segmenter(device, fast, source=text, backend=backend)


def measure_latency(segmenter: Segmenter, size: tuple[int, int] = (1024, 2048), runs: int = 5) -> dict[str, Any]:
    """Median milliseconds of one pass at H x W (network, upsample, argmax: the benchmark's timed region,
    ``aticnet.inference.timing.measure_latency``), with the size, device, threads and torch version, for the card."""
    from ..inference.timing import measure_latency as median_ms

    ms = median_ms(segmenter.run.module, size, runs=max(1, runs), device=segmenter.device)
    return {"ms": ms, "size": list(size), "runs": max(1, runs), "device": str(segmenter.device),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": "float32"}


def export_pretrained(weights: str | Path, out: str | Path, *, size: tuple[int, int] = (1024, 2048),
                      latency_runs: int = 0, license: str | None = None) -> dict[str, Any]:
    """``aticnet export --format pretrained``: ``weights`` (a run, a .safetensors file) as a Hub folder at ``out``,
    its card with a latency at ``size`` when ``latency_runs``; returns {"out", "files", "config", "latency"}."""
    import json

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory (--format pretrained writes a folder)")
    if latency_runs < 0:
        raise UserError(f"--latency-runs must be 0 or more, not {latency_runs}")
    item = pretrained(weights, license=license)
    if latency_runs:
        item.latency = measure_latency(item.segmenter(backend="torch"), tuple(size), runs=latency_runs)
    (out / CARD_NAME).unlink(missing_ok=True)
    item.save_pretrained(out)
    return {"out": str(out), "format": "pretrained", "files": sorted(p.name for p in out.iterdir() if p.is_file()),
            "config": json.loads((out / CONFIG_NAME).read_text()), "latency": item.latency}
