"""Helpers of the serving tests: tiny weights, images, and hand-made Open Inference Protocol requests (REST with the
binary-tensor extension, raw HTTP, gRPC messages) that a client library would not send."""

from __future__ import annotations

import io
import json
import socket
import struct
import zlib

import httpx
import numpy as np
import torch
from PIL import Image

from aticnet import build_model
from aticnet.data.cityscapes_labels import CLASS_COLORS, CLASS_NAMES
from aticnet.models.weights import save_weights


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_weights(path, seed: int) -> None:
    torch.manual_seed(seed)
    model = build_model("aticnet", num_classes=19, width=0.125).eval()
    save_weights(model, path, {"classes": CLASS_NAMES, "colors": [list(c) for c in CLASS_COLORS],
                               "dataset": "synthetic"})


def image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG claiming width x height whose pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def files_tensor(*files: bytes) -> bytes:
    """A BYTES tensor's raw data: each element's 4-byte length, then its bytes."""
    return b"".join(struct.pack("<I", len(f)) + f for f in files)


def binary_body(header_input: dict, raw: bytes, **header: object) -> tuple[bytes, int]:
    """(body, JSON header length) of a binary-extension request with one input holding ``raw``."""
    item = {**header_input, "parameters": {"binary_data_size": len(raw), **header_input.get("parameters", {})}}
    text = json.dumps({"inputs": [item], **header}).encode()
    return text + raw, len(text)


def binary_request(url: str, header_input: dict, raw: bytes, **header: object) -> httpx.Response:
    body, length = binary_body(header_input, raw, **header)
    return httpx.post(url, content=body, timeout=60, headers={"Inference-Header-Content-Length": str(length),
                                                              "Content-Type": "application/octet-stream"})


def raw_http(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> tuple[int, bytes]:
    """Send a hand-written HTTP request (``head`` without its blank line) and read the answer's status and body;
    the server may answer (and close) before the body is all sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(head + b"\r\n\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30
