"""Process-group helpers for ``torchrun`` runs.

Outside ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) everything here is a cheap
no-op: rank 0 of a world of 1. Under ``torchrun --nproc_per_node N`` the default process
group is started from the environment, with NCCL for CUDA devices and gloo on the CPU.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor, nn

__all__ = [
    "env_world_size",
    "init_from_env",
    "is_distributed",
    "rank",
    "local_rank",
    "world_size",
    "is_main_process",
    "barrier",
    "device_for_rank",
    "broadcast_module_",
    "broadcast_object",
    "all_gather_object",
    "all_reduce_mean",
]


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={raw!r} in the environment is not an integer") from None
    if n < 1:
        raise ValueError(f"WORLD_SIZE={n} in the environment must be >= 1")
    return n


def is_distributed() -> bool:
    """True when a default process group with more than one process is running."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def init_from_env(device: str | torch.device | None = None) -> bool:
    """Start the default process group when launched by ``torchrun`` with ``WORLD_SIZE`` > 1.

    The backend is NCCL when ``device`` is a CUDA device (each process then uses
    ``cuda:LOCAL_RANK``) and gloo otherwise. Idempotent; returns :func:`is_distributed`."""
    if tdist.is_available() and tdist.is_initialized():
        return is_distributed()
    if env_world_size() <= 1:
        return False
    if not tdist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set; launch with torchrun")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {dev} requested but CUDA is not available")
        torch.cuda.set_device(local_rank())
        backend = "nccl"
    else:
        backend = "gloo"
    tdist.init_process_group(backend=backend)
    return is_distributed()


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """``LOCAL_RANK`` from the environment (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0 (and outside distributed runs): the process that writes files."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def device_for_rank(device: str | torch.device | None) -> torch.device:
    """``device`` with the local rank's index filled in for CUDA under torchrun."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {dev} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank() if is_distributed() else torch.cuda.current_device())
    return dev


def _comm_view(t: Tensor) -> Tensor:
    # gloo and NCCL both move bytes; bool buffers (masks) travel as uint8 views
    return t.view(torch.uint8) if t.dtype == torch.bool else t


@torch.no_grad()
def broadcast_module_(module: nn.Module, src: int = 0) -> nn.Module:
    """Overwrite every parameter and buffer of ``module`` (masks, running stats and
    spectral-norm vectors included) with rank ``src``'s values, in place. A no-op outside
    distributed runs."""
    if not is_distributed():
        return module
    for t in list(module.parameters()) + list(module.buffers()):
        data = t.data
        if data.is_contiguous():
            tdist.broadcast(_comm_view(data), src)
        else:
            tmp = data.contiguous()
            tdist.broadcast(_comm_view(tmp), src)
            data.copy_(tmp)
    return module


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    tdist.broadcast_object_list(box, src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (keep tensors on the CPU)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def all_reduce_mean(t: Tensor) -> Tensor:
    """The mean of ``t`` over all processes (a new tensor)."""
    if not is_distributed():
        return t
    t = t.clone()
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t / world_size()
