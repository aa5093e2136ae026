"""A window of an enlarged image, computed alone: the training crop without enlarging the whole frame.

Training rescales a frame by up to 2x and keeps a 720x720 crop of it: enlarging a 1024x2048 frame whole costs a
CPU core tens of milliseconds, most of them on pixels the crop throws away. When a frame is enlarged (never
when shrunk: then the whole frame is the cheaper side, and torchvision resizes it), only the window's pixels are
computed, each from the two source rows and columns torch's bilinear resize (align_corners False; antialiasing
changes nothing when enlarging) reads for it, with its weights. So a window equals the same window of the whole frame
enlarged by ``F.interpolate`` in float32, and torchvision's uint8 resize to within one grey level of its
fixed-point rounding. Labels take torch's ``nearest-exact`` indices: they equal the whole label map enlarged
and cut, exactly.
"""

from __future__ import annotations

import torch


def bilinear_source(in_size: int, out_size: int, first: int, count: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where output pixels ``first .. first + count - 1`` of a bilinear resize read along one axis.

    Args:
        in_size: the axis's length in the source; out_size: in the resized image.
        first, count: the output pixels wanted.

    Returns:
        (lower source index, upper source index, weight of the upper one), each of ``count`` values: the output
        is ``(1 - w) * source[lower] + w * source[upper]``.
    """
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size  # the scale as torch computes it, in float32
    position = ((torch.arange(first, first + count, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    lower = position.floor().long().clamp(max=in_size - 1)
    return lower, (lower + 1).clamp(max=in_size - 1), position - lower


def enlarge_window(image: torch.Tensor, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]
                   ) -> torch.Tensor:
    """Rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]`` of ``image`` enlarged to ``size``, rounded to bytes.

    Args:
        image: C x H x W uint8 (or float) source, at most ``size`` on both axes.
        size: (height, width) of the whole enlarged image.
        rows, cols: the window's bounds in the enlarged image (start inclusive, end exclusive; not empty).

    Returns:
        C x (rows[1] - rows[0]) x (cols[1] - cols[0]) float32 holding whole numbers 0..255.
    """
    (height, width), (out_h, out_w) = image.shape[-2:], size
    top, bottom, row_weight = bilinear_source(height, out_h, rows[0], rows[1] - rows[0])
    left, right, col_weight = bilinear_source(width, out_w, cols[0], cols[1] - cols[0])
    c0, c1 = int(left[0]), int(right[-1]) + 1  # the source columns the window reads
    block = image[:, :, c0:c1]
    upper = block.index_select(1, top).to(torch.float32)
    vertical = upper.lerp_(block.index_select(1, bottom).to(torch.float32), row_weight[:, None])
    # columns as rows: index_select along the last dim is several times slower than along a middle one
    across = vertical.transpose(1, 2).contiguous()
    window = across.index_select(1, left - c0).lerp_(across.index_select(1, right - c0), col_weight[:, None])
    return window.transpose(1, 2).round_().clamp_(0, 255)


def nearest_exact_index(in_size: int, out_size: int, first: int, count: int) -> torch.Tensor:
    """The source index of output pixels ``first .. first + count - 1`` under torch's ``nearest-exact`` resize:
    floor((i + 0.5) * in / out), in float32 as torch computes it, clamped to the last pixel."""
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    position = (torch.arange(first, first + count, dtype=torch.float32) + 0.5) * scale
    return position.floor().long().clamp(max=in_size - 1)


def resize_label_window(label: torch.Tensor, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]
                        ) -> torch.Tensor:
    """The window of an H x W label map resized (nearest-exact) to ``size``: equal to resizing it whole and cutting."""
    (height, width), (out_h, out_w) = label.shape[-2:], size
    row_index = nearest_exact_index(height, out_h, rows[0], rows[1] - rows[0])
    col_index = nearest_exact_index(width, out_w, cols[0], cols[1] - cols[0])
    return label.index_select(0, row_index).index_select(1, col_index)
