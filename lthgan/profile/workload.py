"""A trainable setup (dense or masked), wall-clock timing, and rewinding to a snapshot."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .. import ops
from ..nn import masked_modules, raw_weight

LAYER_TYPES = {"conv": (nn.Conv2d, nn.ConvTranspose2d),
               "conv+linear": (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)}


class ProfileError(ValueError):
    """A model, factory or example input that ``lthgan profile`` cannot use."""


@dataclass
class Workload:
    """A training setup: ``step()`` runs one training step; ``models`` are what gets pruned
    and rewound (each entry of ``prune_groups`` pruned with its own global threshold)."""

    step: Callable[[], Any]
    reset: Callable[[], None]
    models: nn.Module
    prune_groups: list[nn.Module] = field(default_factory=list)


def check_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ProfileError(f"unknown device {device!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProfileError(f"device {device!r} asked for, but torch.cuda.is_available() is False")
    if dev.type not in ("cpu", "cuda"):
        raise ProfileError(f"device {device!r}: expected cpu or cuda")
    return dev


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock milliseconds of one call, the device synchronised on both sides."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return 1e3 * (time.perf_counter() - t0)


def median_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    return statistics.median(timed_ms(fn, device) for _ in range(repeats))


class Rewinder:
    """Rewinds ``model`` in place to a snapshot of its current state, keeping the masks:
    parameters in one ``lthgan.ops.rewind_`` call (masked weights to ``where(mask, θ0, 0)``),
    buffers (norm statistics, spectral-norm vectors) by ``copy_``."""

    def __init__(self, model: nn.Module):
        masks = {}
        mask_ids = set()
        for _, m in masked_modules(model):
            masks[id(raw_weight(m))] = m.mask
            mask_ids.add(id(m.mask))
        self.params, self.sources, self.masks = [], [], []
        self.buffers, self.buffer_sources = [], []
        seen: set[int] = set()
        for t in list(model.parameters()) + list(model.buffers()):
            if id(t) in seen or id(t) in mask_ids:
                continue
            seen.add(id(t))
            src = t.detach().clone()
            if isinstance(t, nn.Parameter):
                self.params.append(t)
                self.sources.append(src)
                self.masks.append(masks.get(id(t)))
            else:
                self.buffers.append(t)
                self.buffer_sources.append(src)

    @torch.no_grad()
    def __call__(self) -> None:
        if self.params:
            ops.rewind_(self.params, self.sources, self.masks)
        for t, src in zip(self.buffers, self.buffer_sources):
            t.copy_(src)
