"""lthgan's ops in a ``torch.profiler`` trace: time per step, forward / backward, and how much
of it is the convolution / matmul itself against masking and casting."""
from __future__ import annotations

import os
from typing import Any, Callable

import torch

from .workload import sync

#: child ops of an lthgan op that count as its convolution / matmul, not as masking overhead
_COMPUTE_WORDS = ("conv", "mm", "linear", "matmul", "gemm", "mkldnn", "cudnn", "onednn")


def _is_compute(name: str) -> bool:
    low = name.lower()
    return not low.startswith("lthgan::") and any(w in low for w in _COMPUTE_WORDS)


def _inside_lthgan(ev) -> bool:
    p = ev.cpu_parent
    while p is not None:
        if p.name.startswith("lthgan::"):
            return True
        p = p.cpu_parent
    return False


def _zero_row() -> dict[str, float]:
    return {"total": 0.0, "compute": 0.0, "mask": 0.0, "calls": 0.0}


def op_times(prof, steps: int, use_device_time: bool):
    """Per-step times (ms) inside lthgan's ops: the masked layers' split forward / backward, and
    every op (the optimizer's too) by name.

    For each outermost ``lthgan::*`` event, ``total`` is its inclusive time and ``compute``
    the inclusive time of its convolution / matmul children; ``mask`` = total − compute is
    what masking (and casting) cost on top of the plain op."""

    def t(ev) -> float:
        return float(ev.device_time_total if use_device_time else ev.cpu_time_total)

    phases = {"forward": _zero_row(), "backward": _zero_row()}
    by_name: dict[str, dict[str, float]] = {}
    for ev in prof.events():
        if not ev.name.startswith("lthgan::") or _inside_lthgan(ev):
            continue
        total = t(ev)
        compute = min(sum(t(c) for c in ev.cpu_children if _is_compute(c.name)), total)
        # forward / backward are the masked layers' ops; the rest (lthgan.optim's adam_step_,
        # selection, rewinding) is listed by name only
        rows = [by_name.setdefault(ev.name, _zero_row())]
        if ev.name.startswith("lthgan::masked_"):
            rows.append(phases["backward" if "backward" in ev.name else "forward"])
        for d in rows:
            d["total"] += total
            d["compute"] += compute
            d["mask"] += total - compute
            d["calls"] += 1
    # microseconds per profile → milliseconds per step
    for d in list(phases.values()) + list(by_name.values()):
        for k in ("total", "compute", "mask"):
            d[k] = d[k] / 1e3 / steps
        d["calls"] = d["calls"] / steps
    return phases["forward"], phases["backward"], by_name


def profile_steps(step: Callable[[], Any], steps: int, device: torch.device):
    """``steps`` calls of ``step`` under ``torch.profiler`` (CPU, plus CUDA on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    # libkineto logs its stages (USDT lines, and on a machine without a GPU a failed GPU
    # device count) to stderr unless told otherwise; it reads this when the profiler starts
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    return prof
