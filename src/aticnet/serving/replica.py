"""A Ray Serve replica of ``aticnet serve``: a ``kserve.Model`` that checks each request, decodes its images within
a pixel budget, meets other requests in one batch (``@serve.batch``) and answers with class ids or PNGs.

What a replica holds at once is bounded: the decoded images of the requests it serves (at most
``2 x max_megapixels`` pixels, 3 bytes each: a request waits for room before it decodes) and one forward pass of
at most ``max_megapixels`` pixels (same-size images run ``max_batch`` at a time, fewer when they are large).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from . import import_kserve

import_kserve()

from kserve import InferRequest, InferResponse, Model
from ray import serve

from .requests import PNG_FORMATS, bad_request, plan_request

BUDGET_REQUESTS = 2  # a replica decodes up to this many largest requests at once: one runs while the next waits


class PixelBudget:
    """An asyncio budget of pixels: ``hold`` waits until ``pixels`` fit beside what others hold.

    Args:
        capacity: the pixels all holders may hold together; one holder asking for more gets the whole budget.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity, self.used = capacity, 0
        self.changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Hold ``pixels`` of the budget while the block runs (waiting for room first)."""
        pixels = min(pixels, self.capacity)
        async with self.changed:
            await self.changed.wait_for(lambda: self.used + pixels <= self.capacity)
            self.used += pixels
        try:
            yield
        finally:
            async with self.changed:
                self.used -= pixels
                self.changed.notify_all()


def predict_bounded(segmenter: Any, images: list[np.ndarray], max_batch: int, max_pixels: int) -> list[Any]:
    """``segmenter.predict_batch`` with every forward pass at most ``max_batch`` images and ``max_pixels`` pixels.

    Args:
        segmenter: an [`aticnet.load`][aticnet.load] Segmenter.
        images: H x W x 3 uint8 images (sizes may differ).
        max_batch: the most images a forward pass takes.
        max_pixels: the most pixels a forward pass takes (a larger image runs alone).

    Returns:
        One H x W label tensor per image, in order.
    """
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        by_size[image.shape[:2]].append(i)
    labels: list[Any] = [None] * len(images)
    for (height, width), indices in by_size.items():
        per_pass = max(1, min(max_batch, max_pixels // (height * width)))
        for i, lab in zip(indices, segmenter.predict_batch([images[i] for i in indices], batch_size=per_pass)):
            labels[i] = lab
    return labels


def encode_png(array: np.ndarray) -> bytes:
    """H x W (x 3) uint8 -> PNG file bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)  # fast: the network, not the disk, is slow
    return buffer.getvalue()


def output_of(labels: list[Any], images: list[np.ndarray], fmt: str, render: Any, num_classes: int) -> Any:
    """The response tensor for one request.

    Args:
        labels: N tensors of H x W class ids, one per image.
        images: the N H x W x 3 images they came from (overlays draw on them).
        fmt: one of [`OUTPUT_FORMATS`][aticnet.serving.requests.OUTPUT_FORMATS].
        render: for the PNG formats, an `aticnet.inference.predict.Renderer` of that format.
        num_classes: the model's classes (past 256, ids travel as INT64).

    Returns:
        A ``kserve.InferOutput``: "labels" UINT8/INT64 [N, H, W], or "png" BYTES [N].
    """
    if fmt == "ids":
        ids = np.stack([lab.numpy() for lab in labels])
        ids = ids.astype(np.uint8) if num_classes <= 256 else ids.astype(np.int64)
        return _raw_output("labels", ids, "UINT8" if ids.dtype == np.uint8 else "INT64")
    pngs = np.array([encode_png(render(img, lab)) for img, lab in zip(images, labels)], dtype=np.object_)
    return _raw_output("png", pngs, "BYTES")


def _raw_output(name: str, array: np.ndarray, datatype: str) -> Any:
    """An output holding its bytes: KServe sends them as they are (gRPC, binary extension) or as JSON."""
    from kserve import InferOutput

    output = InferOutput(name, list(array.shape), datatype)
    output.set_data_from_numpy(array, binary_data=True)
    return output


class SegmentationModel(Model):
    """A ``kserve.Model`` segmenting the images of each request with an [`aticnet.load`][aticnet.load] Segmenter.

    Runs as a Ray Serve replica; concurrent requests meet in ``segment_batch`` (``@serve.batch``), so one
    forward pass serves several clients. Responses carry ``batch_size`` (images in the pass that served them) and
    ``batch_requests`` (requests in it) as parameters.

    Args:
        spec: the model's `aticnet.serving.server.ModelSpec`.
    """

    def __init__(self, spec: Any) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.segmenter: Any = None
        self.max_pixels = int(spec.max_megapixels * 1e6)
        self.budget = PixelBudget(BUDGET_REQUESTS * self.max_pixels)
        # The batch limits are flags: set them on this replica's batch queue before its first request.
        self.segment_batch.set_max_batch_size(spec.max_batch)
        self.segment_batch.set_batch_wait_timeout_s(spec.batch_wait_ms / 1000)
        self.load()

    def load(self) -> bool:
        """Load the weights once (KServe's RayModel calls this again on every replica's handle)."""
        if self.segmenter is None:
            from ..inference.segmenter import load

            s = self.spec
            self.segmenter = load(s.weights, s.device, backend=s.backend, infer_scale=s.infer_scale,
                                  precision=s.precision)
        self.ready = True
        return True

    def get_input_types(self) -> list[dict]:
        return [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
                {"name": "image", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        ids = "UINT8" if self.segmenter.num_classes <= 256 else "INT64"
        return [{"name": "labels", "datatype": ids, "shape": [-1, -1, -1]},
                {"name": "png", "datatype": "BYTES", "shape": [-1]}]

    def renderer(self, fmt: str, alpha: float) -> Any:
        """The `aticnet.inference.predict.Renderer` of a PNG format (None for ids); a format this model cannot
        draw (labelid without the Cityscapes classes) is a 400."""
        from ..inference.predict import Renderer
        from ..utils.errors import UserError

        if fmt not in PNG_FORMATS:
            return None
        try:
            return Renderer(self.segmenter, fmt, alpha, self.name)
        except UserError as e:
            raise bad_request(str(e)) from None

    async def __call__(self, body: Any, headers: dict[str, str] | None = None, verb: Any = None
                       ) -> tuple[InferResponse, dict[str, str]]:
        """Check, decode, segment (batched with other requests) and answer one request.

        Args:
            body: a ``kserve.InferRequest``.
            headers: the request's headers (unused).
            verb: KServe's inference verb (unused: this model predicts).

        Returns:
            The ``kserve.InferResponse`` and the response's headers (none), as ``kserve.Model`` answers.

        Raises:
            InvalidInput: a request the limits or the protocol refuse.
        """
        if not isinstance(body, InferRequest):
            raise bad_request("this server speaks the Open Inference Protocol v2: POST /v2/models/{name}/infer")
        plan = plan_request(body, max_megapixels=self.spec.max_megapixels, max_images=self.spec.max_batch)
        render = self.renderer(plan.fmt, plan.alpha)
        async with self.budget.hold(plan.pixels):
            # Decoding and encoding run in threads so the replica keeps forming the next batch meanwhile.
            images = await asyncio.to_thread(plan.images)
            labels, batch_size, batch_requests = await self.segment_batch(images)
            output = await asyncio.to_thread(output_of, labels, images, plan.fmt, render, self.segmenter.num_classes)
        response = InferResponse(response_id=body.id or str(uuid.uuid4()), model_name=self.name,
                                 infer_outputs=[output], from_grpc=body.from_grpc,
                                 use_binary_outputs=body.use_binary_outputs is True,
                                 requested_outputs=body.request_outputs,
                                 parameters={"batch_size": batch_size, "batch_requests": batch_requests})
        return response, {}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005,
                 batch_size_fn=lambda requests: sum(len(images) for images in requests))
    async def segment_batch(self, requests: list[list[Any]]) -> list[tuple[list[Any], int, int]]:
        """Several requests' images in forward passes of at most ``max_batch`` images and ``max_megapixels``.

        Args:
            requests: each request's list of H x W x 3 uint8 images.

        Returns:
            Per request: (its H x W label tensors, images in this batch, requests in this batch).
        """
        flat = [image for images in requests for image in images]
        # The network runs in a thread so the replica keeps queueing the requests that form the next batch.
        labels = await asyncio.to_thread(predict_bounded, self.segmenter, flat, self.spec.max_batch, self.max_pixels)
        answers, start = [], 0
        for images in requests:
            answers.append((labels[start:start + len(images)], len(flat), len(requests)))
            start += len(images)
        return answers

