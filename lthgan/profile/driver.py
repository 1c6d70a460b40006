"""The shared dense-vs-masked run behind ``profile_gan`` and ``profile_model``."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .._io import atomic_write
from ..nn import unmasked
from ..prune import global_magnitude, sparsity_report
from .optrace import op_times, profile_steps
from .result import ProfileResult
from .workload import Rewinder, Workload, median_ms, sync, timed_ms

Build = Callable[[], tuple[nn.Module, list[nn.Module]]]
MakeWorkload = Callable[[nn.Module, list[nn.Module]], Workload]


@dataclass
class Options:
    """How to run: the fields of :class:`ProfileResult` that are settings, not measurements."""

    target: str
    device: torch.device
    preset: str | None
    amp: str | None
    layer_types: str
    sparsity: float
    steps: int
    warmup: int
    trace: Path | None


def _pruned(build: Build, opts: Options):
    """A pruned masked model (pruning timed on three fresh copies, since pruning is not
    repeatable on one model): ``(model, groups, prune ms, sparsity reached, prunable count)``."""
    sel = {"types": opts.layer_types}
    prune_ms = []
    for _ in range(3):
        model, groups = build()
        prune_ms.append(timed_ms(lambda: [global_magnitude(g, opts.sparsity, **sel) for g in groups],
                                 opts.device))
    reports = [sparsity_report(g, **sel) for g in groups]
    total = sum(r.prunable_total for r in reports)
    zeros = sum(r.prunable_zeros for r in reports)
    return model, groups, statistics.median(prune_ms), (zeros / total if total else 0.0), total


def _interleaved(dense: Workload, masked: Workload, opts: Options) -> tuple[list[float], list[float]]:
    """Warm-up, then ``steps`` timed steps of each, alternating which goes first."""
    for _ in range(opts.warmup):
        dense.step()
        masked.step()
    sync(opts.device)
    dense_t: list[float] = []
    masked_t: list[float] = []
    order = [(dense, dense_t), (masked, masked_t)]
    for i in range(opts.steps):
        for wl, times in (order if i % 2 == 0 else order[::-1]):
            times.append(timed_ms(wl.step, opts.device))
    return dense_t, masked_t


def _reset_ms(masked: Workload, device: torch.device) -> float:
    """Median time of an optimizer reset, each after a step so there is state to drop; one
    more step at the end, since the first step after a reset builds optimizer state."""
    times = []
    for _ in range(3):
        masked.step()
        times.append(timed_ms(masked.reset, device))
    masked.step()
    return statistics.median(times)


def run(build: Build, make_workload: MakeWorkload, opts: Options) -> ProfileResult:
    """``build()`` returns a fresh masked model (all masks True) and its prune groups; it is
    called more than once and must give the same weights every time."""
    masked_model, masked_groups, prune_ms, reached, total_w = _pruned(build, opts)
    dense_model, dense_groups = build()  # the dense twin, from the same initial weights
    dense_model = unmasked(dense_model)
    masked_w = make_workload(masked_model, masked_groups)
    dense_w = make_workload(dense_model, dense_groups)
    # rewinding to the pruned θ0, so repeats are identical work
    rewind_ms = median_ms(Rewinder(masked_model), opts.device, 5)
    dense_t, masked_t = _interleaved(dense_w, masked_w, opts)
    reset_ms = _reset_ms(masked_w, opts.device)

    prof = profile_steps(masked_w.step, opts.steps, opts.device)
    use_dev = opts.device.type == "cuda"
    fwd, bwd, by_name = op_times(prof, opts.steps, use_dev)
    if opts.trace is not None:
        atomic_write(opts.trace, lambda tmp: prof.export_chrome_trace(tmp))

    return ProfileResult(
        target=opts.target, device=str(opts.device), preset=opts.preset, amp=opts.amp,
        layer_types=opts.layer_types, steps=opts.steps, warmup=opts.warmup,
        sparsity_target=opts.sparsity, sparsity_reached=reached, prunable_weights=total_w,
        dense_step_ms=dense_t, masked_step_ms=masked_t, ops_forward=fwd, ops_backward=bwd,
        ops_by_name=by_name,
        one_off_ms={"prune": prune_ms, "rewind": rewind_ms, "reset_optimizer": reset_ms},
        time_source="cuda" if use_dev else "cpu",
        trace=str(opts.trace) if opts.trace is not None else None)
