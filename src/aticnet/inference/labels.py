"""The labels step: 1/4-size logits -> full-size labels, as the models' own bilinear upsample + argmax gives them.

Upsampling 19 channels to 1024x2048 and taking the argmax over them costs more than half the network
on a CPU. ``labels_from_logits`` gets the same labels with far less work: where the four low-res
pixels around an output pixel agree on their class, bilinear interpolation cannot change it (each
class's score difference at the output pixel is a weighted average, with non-negative weights, of
the differences at the four corners, all >= 0 for the class that wins at every corner). So the labels
are the low-res argmax looked up at each output pixel, and the interpolation is computed only where
the corners disagree (object boundaries), with PyTorch's own formula. Equal to the reference up to
exact ties (``tests/deploy/test_deploy.py``; CamVid val: BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MOSTLY_BOUNDARY = 0.3  # beyond this share of unsettled cells the plain upsample is faster


def upsample_argmax(logits: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
    """The reference: N x K x h x w logits -> bilinear to ``size`` -> argmax: N x H x W int64."""
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits.contiguous(memory_format=torch.channels_last), size=tuple(size),
                               mode="bilinear", align_corners=align_corners)
    return logits.argmax(1)


def source_index(out_size: int, in_size: int, align_corners: bool, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For each output position: (lower source index, upper source index, weight of the upper), as
    ATen's ``upsample_bilinear2d`` computes them in float32."""
    dst = torch.arange(out_size, device=device, dtype=torch.float32)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * torch.tensor(scale, dtype=torch.float32)
    else:
        scale = torch.tensor(in_size / out_size, dtype=torch.float32)
        src = ((dst + 0.5) * scale - 0.5).clamp(min=0)
    low = src.to(torch.int64).clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    return low, high, src - low.to(torch.float32)


def _spans(index: Tensor, in_size: int) -> tuple[Tensor, Tensor]:
    """For each low-res position i: (first output position whose lower source index is i, how many there are)."""
    count = torch.bincount(index, minlength=in_size)
    return torch.cumsum(count, 0) - count, count


def labels_from_logits(logits: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
    """Labels at ``size`` from low-resolution logits, equal to a bilinear upsample of every class score followed by
    the argmax, up to exact ties, and several times faster on a CPU.

    Where the four low-resolution pixels around an output pixel agree on their class, interpolation cannot change
    it, so their class is looked up; the interpolation is computed only where they disagree (object boundaries),
    with PyTorch's own formula.

    Args:
        logits: N x K x h x w class scores (the ICNet family's are at 1/4 of the image).
        size: (H, W) of the labels.
        align_corners: the model's bilinear convention (``model.config.align_corners``).

    Returns:
        N x H x W class ids (uint8 for up to 256 classes, int64 beyond).
    """
    n, k, h, w = logits.shape
    height, width = size
    dtype = torch.uint8 if k <= 256 else torch.int64
    low = logits.argmax(1).to(dtype)  # N x h x w
    if (h, w) == (height, width):
        return low
    y0, y1, wy = source_index(height, h, align_corners, logits.device)
    x0, x1, wx = source_index(width, w, align_corners, logits.device)
    below = torch.arange(1, h + 1, device=low.device).clamp(max=h - 1)
    right = torch.arange(1, w + 1, device=low.device).clamp(max=w - 1)
    below_row = low[:, below]
    settled = (low == below_row) & (low == low[:, :, right]) & (low == below_row[:, :, right])  # 4 corners agree
    labels = low.index_select(1, y0).index_select(2, x0)  # N x H x W: the corners' class where they agree
    cb, ci, cj = (~settled).nonzero(as_tuple=True)  # the cells around object boundaries
    if cb.numel() == 0:
        return labels
    if cb.numel() > MOSTLY_BOUNDARY * n * h * w:  # noise, not a segmentation (an untrained model): upsample all
        return upsample_argmax(logits, size, align_corners).to(dtype)
    # every output pixel of those cells: cell (i, j) covers output rows whose y0 is i, columns whose x0 is j
    row_start, row_count = _spans(y0, h)
    col_start, col_count = _spans(x0, w)
    ny, nx = row_count[ci], col_count[cj]
    per_cell = ny * nx
    cell = torch.repeat_interleave(torch.arange(cb.numel(), device=low.device), per_cell)
    offset = torch.arange(cell.numel(), device=low.device) - torch.repeat_interleave(torch.cumsum(per_cell, 0) - per_cell, per_cell)
    yy = row_start[ci][cell] + torch.div(offset, nx[cell], rounding_mode="floor")
    xx = col_start[cj][cell] + offset % nx[cell]
    b = cb[cell]
    # bilinear at those pixels only, in ATen's order: h0 * (w0 * a + w1 * b) + h1 * (w0 * c + w1 * d)
    flat = logits.permute(0, 2, 3, 1).reshape(-1, k)  # one contiguous K-vector per low-res pixel
    top, bottom = (b * h + y0[yy]) * w, (b * h + y1[yy]) * w
    h1, w1 = wy[yy, None], wx[xx, None]
    h0, w0 = 1 - h1, 1 - w1
    value = h0 * (w0 * flat[top + x0[xx]] + w1 * flat[top + x1[xx]]) + h1 * (
        w0 * flat[bottom + x0[xx]] + w1 * flat[bottom + x1[xx]])
    labels[b, yy, xx] = value.argmax(1).to(dtype)
    return labels
