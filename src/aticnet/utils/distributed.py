"""Process-group plumbing for ``torchrun``: plain ``torch.distributed``, nothing home-made.

``torchrun --nproc_per_node N -m aticnet train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK and
the rendezvous variables; multi-node runs add ``--nnodes`` and ``--rdzv-endpoint``.
Without those variables everything runs as a single process.

Every collective goes through ``all_reduce`` or ``all_gather_objects``, which put the tensor on the
device the group's backend reduces on (NCCL: the process's GPU; Gloo: the CPU), wherever it was made.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str | torch.device) -> torch.device:
    """"auto" (CUDA when there is one), "cpu", "cuda" or "cuda:N"; CUDA without a GPU is a UserError.

    "auto" on a machine whose torch has no CUDA, or sees no GPU, says so once in the log: the run is on the CPU.
    """
    if str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        log.info("device auto: running on the CPU (%s)", why)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise UserError(f"--device {name}: {why}")
    return device


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (NCCL on CUDA, Gloo on CPU), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def shutdown_distributed() -> None:
    global _host_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _host_group = None


def is_distributed() -> bool:
    """Whether a process group is up (collectives then involve every process)."""
    return dist.is_available() and dist.is_initialized()


def collective_device() -> torch.device:
    """Where the group's collectives run: this process's GPU under NCCL, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` over all processes, in place (a no-op when not distributed), whatever device it is on.

    Args:
        tensor: any shape and device; NCCL reduces a copy on this process's GPU, Gloo one on the CPU.
        op: "sum", "max" or "min".

    Returns:
        ``tensor``, now holding the reduced values.
    """
    if not is_distributed():
        return tensor
    device = collective_device()
    buffer = tensor if tensor.device == device else tensor.to(device)
    dist.all_reduce(buffer, op=_OPS[op])
    if buffer is not tensor:
        tensor.copy_(buffer)
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``all_reduce`` with ``op="sum"``."""
    return all_reduce(tensor, "sum")


_host_group: Any = None  # a Gloo group of every process, for flags the host decides on beside NCCL's


def host_all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce a CPU tensor over all processes, in place, without involving any GPU (a no-op when not distributed).

    Under NCCL, a Gloo group of the same processes reduces it (made at the first call, which every process makes
    at the same point), so the host agrees on its own flags (a stop signal, an empty batch) without waiting for
    the work it has queued on the GPU.

    Args:
        tensor: a CPU tensor.
        op: "sum", "max" or "min".

    Returns:
        ``tensor``, now holding the reduced values.
    """
    global _host_group
    if not is_distributed():
        return tensor
    if dist.get_backend() == "nccl" and _host_group is None:
        _host_group = dist.new_group(backend="gloo")
    dist.all_reduce(tensor, op=_OPS[op], group=_host_group if dist.get_backend() == "nccl" else None)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order: ``[obj]`` when not distributed."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
