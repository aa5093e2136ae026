"""Batch prediction on Ray Data (``aticnet predict --ray [ADDRESS]``): the images of folders, globs and list files
segmented by a pool of Ray actors, each holding a model, on one machine or a Ray cluster.

The outputs have the layout and file names of plain ``aticnet predict`` (the same
``aticnet.inference.predict.collect_inputs``, ``aticnet.inference.predict.output_path`` and
``aticnet.inference.predict.Renderer``); each is written to a temporary name and renamed into place, so an
output that exists is whole and a rerun skips it (resuming after a kill). An index, one JSON line per image
(``input``, ``output``, ``seconds``: the actor's time for the image, ``null`` for one found finished; ``node``: the
Ray node that made it; ``finished``: when, in Unix seconds), lists every finished output. Every node of a cluster must see the input and output paths (a shared file system).
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.predict import FORMATS, Renderer, collect_inputs, output_path, write_png
from ..utils.errors import UserError

log = logging.getLogger(__name__)
LIST_SUFFIXES = (".txt", ".lst")
ACTOR_START_TIMEOUT_S = 300


def expand_inputs(inputs: Sequence[str | Path]) -> list[str]:
    """Files and folders named by ``inputs``: globs expanded, list files (.txt, .lst: one path a line, relative to
    the list's folder) read; anything else kept as it is."""
    expanded: list[str] = []
    for raw in map(str, inputs):
        if "://" in raw:
            raise UserError(f"{raw}: --ray reads paths every Ray node sees (a shared or mounted file system), "
                            "not URLs")
        if glob.has_magic(raw):
            found = sorted(glob.glob(raw, recursive=True))
            if not found:
                raise UserError(f"{raw}: no file matches this pattern")
            expanded += found
        elif raw.lower().endswith(LIST_SUFFIXES) and Path(raw).is_file():
            base = Path(raw).parent
            lines = [line.strip() for line in Path(raw).read_text().splitlines()]
            expanded += [str(base / line) for line in lines if line and not line.startswith("#")]
        else:
            expanded.append(raw)
    return expanded


def plan_outputs(inputs: Sequence[str | Path], out: Path, fmt: str) -> list[dict[str, str]]:
    """One {"input", "output"} row per image, named as plain ``predict`` names them.

    Args:
        inputs: files, folders, globs and list files.
        out: the output folder.
        fmt: one of ``aticnet.inference.predict.FORMATS``.

    Returns:
        Rows in input order; two inputs meeting at one output are a ``UserError``.
    """
    images, videos = collect_inputs(expand_inputs(inputs))
    if videos:
        raise UserError(f"{videos[0].source}: --ray segments images; segment videos without --ray")
    rows: list[dict[str, str]] = []
    seen: dict[Path, Path] = {}
    for item in images:
        target = output_path(out, item.rel, fmt)
        if target in seen:
            raise UserError(f"{item.source} and {seen[target]} would both be written to {target}; "
                            "give their folders separately or rename one")
        seen[target] = item.source
        rows.append({"input": str(item.source), "output": str(target)})
    return rows


class ImagePredictor:
    """A Ray Data actor: loads the model once, then segments, renders and writes each batch of rows."""

    def __init__(self, weights: str, device: str, backend: str | None, infer_scale: float, precision: str,
                 fmt: str, alpha: float, threads: int) -> None:
        import ray
        import torch

        from ..inference.segmenter import load

        torch.set_num_threads(threads)  # the CPUs Ray reserved for this actor, not the whole node
        self.node = ray.get_runtime_context().get_node_id()
        self.segmenter = load(weights, device, backend=backend, infer_scale=infer_scale, precision=precision)
        self.render = Renderer(self.segmenter, fmt, alpha, str(weights))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows {"input", "output"} -> rows {"input", "output", "seconds"} (the batch's time shared among its
        images), the outputs written; same-size images share forward passes."""
        from ..utils.io import read_image

        start = time.perf_counter()
        images = [read_image(source).permute(1, 2, 0).numpy() for source in batch["input"]]
        labels = self.segmenter.predict_batch(images, batch_size=len(images))
        for target, image, label in zip(batch["output"], images, labels):
            write_whole(Path(target), self.render(image, label))
        share = (time.perf_counter() - start) / max(len(images), 1)
        return {"input": batch["input"], "output": batch["output"], "seconds": np.full(len(images), share),
                "node": np.full(len(images), self.node), "finished": np.full(len(images), time.time())}


def write_whole(target: Path, picture: np.ndarray) -> None:
    """Write a PNG under a temporary name, then rename it into place: an existing output is a finished one."""
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    write_png(partial, picture)
    os.replace(partial, target)


def _index_outputs(index: Path) -> set[str]:
    if not index.is_file():
        return set()
    outputs = set()
    for line in index.read_text().splitlines():
        try:
            outputs.add(json.loads(line)["output"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    return outputs


def predict_on_ray(weights: str, inputs: Sequence[str | Path], out: str | Path, *, fmt: str = "trainid",
                   alpha: float = 0.5, batch_size: int = 4, workers: int = 1, cpus_per_worker: float = 1.0,
                   device: str = "cpu", backend: str | None = None, infer_scale: float | None = None,
                   precision: str = "32", ray_address: str | None = None, index: str | Path | None = None,
                   log_line: Any = print) -> dict[str, Any]:
    """Segment every image of ``inputs`` into ``out`` with ``workers`` Ray actors, skipping finished outputs.

    Args:
        weights: what ``aticnet.load`` loads (every node must reach it).
        inputs: image files, folders (recursive), globs and list files.
        out: the output folder (plain ``predict``'s layout).
        fmt: trainid, labelid, color, overlay or cityscapes.
        alpha: overlay opacity.
        batch_size: images per actor call.
        workers: actors in the pool.
        cpus_per_worker: CPUs Ray reserves per actor (and its PyTorch threads).
        device: "cpu" or "cuda" (one GPU per actor).
        backend, infer_scale, precision: as ``aticnet.load`` takes them.
        ray_address: a Ray cluster's address ("auto": the one `ray start` made here); None starts a local Ray.
        index: the JSON-lines index (default ``out/index.jsonl``), appended to.
        log_line: where the summary line goes.

    Returns:
        {"images": segmented now, "skipped": found finished, "seconds", "images_per_s", "index"}.
    """
    import ray

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if workers < 1 or batch_size < 1:
        raise UserError(f"--workers and --batch-size must be at least 1, not {workers} and {batch_size}")
    out = Path(out)
    index = Path(index) if index else out / "index.jsonl"
    rows = plan_outputs(inputs, out, fmt)
    todo = [row for row in rows if not Path(row["output"]).is_file()]
    listed = _index_outputs(index)
    index.parent.mkdir(parents=True, exist_ok=True)
    with index.open("a") as lines:
        for row in rows:  # finished before (a kill can fall between an output's rename and its index line)
            if row not in todo and row["output"] not in listed:
                lines.write(json.dumps({**row, "seconds": None, "node": None, "finished": None}) + "\n")
    start = time.perf_counter()
    if todo:
        ray.init(address=ray_address or "local", include_dashboard=False, logging_level=logging.WARNING,
                 ignore_reinit_error=True)
        _run_pool(todo, index, weights=weights, fmt=fmt, alpha=alpha, batch_size=batch_size, workers=workers,
                  cpus_per_worker=cpus_per_worker, device=device, backend=backend, infer_scale=infer_scale,
                  precision=precision)
    seconds = time.perf_counter() - start
    rate = len(todo) / seconds if todo else 0.0
    log_line(f"{len(todo)} images in {seconds:.1f} s ({rate:.2f} images/s, {workers} Ray actors), "
             f"{len(rows) - len(todo)} already done -> {out}/ (index {index})")
    return {"images": len(todo), "skipped": len(rows) - len(todo), "seconds": seconds, "images_per_s": rate,
            "index": str(index)}


def _run_pool(todo: list[dict[str, str]], index: Path, *, weights: str, fmt: str, alpha: float, batch_size: int,
              workers: int, cpus_per_worker: float, device: str, backend: str | None, infer_scale: float,
              precision: str) -> None:
    """Stream ``todo`` through an actor pool, appending each finished image to ``index`` as it arrives."""
    import ray

    # Every actor is up before the first batch goes out, so all share the work from the start (the first one
    # ready would otherwise take the whole of a short run), and a cluster short of resources fails, saying so.
    ray.data.DataContext.get_current().wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    blocks = max(1, -(-len(todo) // batch_size))  # one block per batch: every actor gets work from the start
    dataset = ray.data.from_items(todo, override_num_blocks=blocks).map_batches(
        ImagePredictor, batch_size=batch_size, concurrency=workers, num_cpus=cpus_per_worker,
        num_gpus=1 if device == "cuda" else 0,
        fn_constructor_kwargs={"weights": str(weights), "device": device, "backend": backend,
                               "infer_scale": infer_scale, "precision": precision, "fmt": fmt, "alpha": alpha,
                               "threads": max(1, int(cpus_per_worker))})
    rows = iter(dataset.iter_rows())
    try:
        first = next(rows, None)
    except ray.exceptions.GetTimeoutError:
        gpus = " and 1 GPU" if device == "cuda" else ""
        raise UserError(f"the Ray cluster did not start {workers} actors of {cpus_per_worker:g} CPUs{gpus} in "
                        f"{ACTOR_START_TIMEOUT_S} s: fewer --workers, or more nodes") from None
    with index.open("a") as lines:
        for row in itertools.chain([first] if first is not None else [], rows):
            lines.write(_index_line(row))
            lines.flush()


def _index_line(row: dict[str, Any]) -> str:
    return json.dumps({"input": str(row["input"]), "output": str(row["output"]),
                       "seconds": round(float(row["seconds"]), 6), "node": str(row["node"]),
                       "finished": round(float(row["finished"]), 3)}) + "\n"
