"""``lthgan profile``: what pruning costs in a training step, measured with ``torch.profiler``.

The same model is trained twice side by side, from the same initial weights:

* **dense**: plain torch layers (``lthgan.nn.unmasked``), no masks anywhere;
* **masked**: lthgan's masked layers, pruned by ``lthgan.prune.global_magnitude`` to
  ``--sparsity`` (each generator of a GAN with its own global threshold, as in the paper).

Step times are wall-clock medians over ``--steps`` steps, dense and masked interleaved so that
both see the same machine load. One more pass over the masked model runs under
``torch.profiler`` to split the time spent inside lthgan's ops (``lthgan::masked_conv2d``,
``lthgan::masked_convolution_backward``, ...) into forward and backward, and within those into
the convolution / matmul itself and the rest (masking, casting). The one-off costs of an IMP
round (pruning, rewinding with ``lthgan.ops.rewind_``, resetting the optimizers) are timed too.

Training data are random images: data loading is not what this command measures.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from . import ops
from ._io import atomic_write
from .nn import masked, masked_modules, raw_weight, unmasked
from .prune import global_magnitude, reset_optimizer_state, sparsity_report

__all__ = ["ProfileError", "ProfileResult", "Rewinder", "format_table", "gan_data", "profile_gan",
           "profile_model", "LAYER_TYPES"]

LAYER_TYPES = {"conv": (nn.Conv2d, nn.ConvTranspose2d),
               "conv+linear": (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)}
#: child ops of an lthgan op that count as its convolution / matmul, not as masking overhead
_COMPUTE_WORDS = ("conv", "mm", "linear", "matmul", "gemm", "mkldnn", "cudnn", "onednn")


class ProfileError(ValueError):
    """A model, factory or example input that ``lthgan profile`` cannot use."""


# --------------------------------------------------------------------------------------------
# workloads: one trainable setup, dense or masked


@dataclass
class _Workload:
    """A training setup: ``step()`` runs one training step; ``models`` are what gets pruned
    and rewound (each entry of ``prune_groups`` pruned with its own global threshold)."""

    step: Callable[[], Any]
    reset: Callable[[], None]
    models: nn.Module
    prune_groups: list[nn.Module] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


# --------------------------------------------------------------------------------------------
# rewinding: every parameter by one rewind_ call, buffers copied


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


# --------------------------------------------------------------------------------------------
# the profiled run


@dataclass
class ProfileResult:
    """Everything ``lthgan profile`` measured; :meth:`to_dict` is what ``--json`` prints."""

    target: str
    device: str
    preset: str | None
    amp: str | None
    layer_types: str
    steps: int
    warmup: int
    sparsity_target: float
    sparsity_reached: float
    prunable_weights: int
    dense_step_ms: list[float]
    masked_step_ms: list[float]
    ops_forward: dict[str, float]
    ops_backward: dict[str, float]
    ops_by_name: dict[str, dict[str, float]]
    one_off_ms: dict[str, float]
    time_source: str
    trace: str | None = None

    @property
    def dense_ms(self) -> float:
        return statistics.median(self.dense_step_ms)

    @property
    def masked_ms(self) -> float:
        return statistics.median(self.masked_step_ms)

    @property
    def overhead_pct(self) -> float:
        return 100.0 * (self.masked_ms / self.dense_ms - 1.0)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "device": self.device,
            "preset": self.preset,
            "amp": self.amp,
            "layer_types": self.layer_types,
            "torch": torch.__version__,
            "steps": self.steps,
            "warmup": self.warmup,
            "sparsity": {"target": self.sparsity_target, "reached": self.sparsity_reached,
                         "prunable_weights": self.prunable_weights},
            "step_ms": {
                "dense": {"median": self.dense_ms, "min": min(self.dense_step_ms),
                          "all": self.dense_step_ms},
                "masked": {"median": self.masked_ms, "min": min(self.masked_step_ms),
                           "all": self.masked_step_ms},
            },
            "overhead_pct": self.overhead_pct,
            "lthgan_ops_ms_per_step": {"forward": self.ops_forward, "backward": self.ops_backward,
                                       "time_source": self.time_source},
            "lthgan_ops_by_name": self.ops_by_name,
            "one_off_ms": self.one_off_ms,
            "trace": self.trace,
        }


def _is_compute(name: str) -> bool:
    low = name.lower()
    return not low.startswith("lthgan::") and any(w in low for w in _COMPUTE_WORDS)


def _op_times(prof, steps: int, use_device_time: bool):
    """Per-step times (ms) inside lthgan's ops, split forward / backward, and per op name.

    For each outermost ``lthgan::*`` event, ``total`` is its inclusive time and ``compute``
    the inclusive time of its convolution / matmul children; ``mask`` = total − compute is
    what masking (and casting) cost on top of the plain op."""

    def t(ev) -> float:
        return float(ev.device_time_total if use_device_time else ev.cpu_time_total)

    def inside_lthgan(ev) -> bool:
        p = ev.cpu_parent
        while p is not None:
            if p.name.startswith("lthgan::"):
                return True
            p = p.cpu_parent
        return False

    phases = {"forward": {"total": 0.0, "compute": 0.0, "mask": 0.0, "calls": 0.0},
              "backward": {"total": 0.0, "compute": 0.0, "mask": 0.0, "calls": 0.0}}
    by_name: dict[str, dict[str, float]] = {}
    for ev in prof.events():
        if not ev.name.startswith("lthgan::") or inside_lthgan(ev):
            continue
        total = t(ev)
        compute = sum(t(c) for c in ev.cpu_children if _is_compute(c.name))
        compute = min(compute, total)
        phase = phases["backward" if "backward" in ev.name else "forward"]
        row = by_name.setdefault(ev.name, {"total": 0.0, "compute": 0.0, "mask": 0.0, "calls": 0.0})
        for d in (phase, row):
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


def _profile(step: Callable[[], Any], steps: int, device: torch.device):
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
        _sync(device)
    return prof


def _run(target: str, build: Callable[[], tuple[nn.Module, list[nn.Module]]],
         make_workload: Callable[[nn.Module, list[nn.Module]], _Workload], *,
         device: torch.device, preset: str | None, amp: str | None, layer_types: str,
         sparsity: float, steps: int, warmup: int, trace: Path | None) -> ProfileResult:
    """Shared driver. ``build()`` returns a fresh masked model (all masks True) and its prune
    groups; it is called more than once and must give the same weights every time."""
    sel = {"types": layer_types}

    def prune(groups: list[nn.Module]) -> None:
        for g in groups:
            global_magnitude(g, sparsity, **sel)

    # ---- one-off: pruning, timed on fresh copies (pruning is not repeatable on one model)
    prune_ms = []
    for _ in range(3):
        model, groups = build()
        _sync(device)
        t0 = time.perf_counter()
        prune(groups)
        _sync(device)
        prune_ms.append(1e3 * (time.perf_counter() - t0))
    masked_model, masked_groups = model, groups
    total_w = 0
    zeros = 0
    for g in masked_groups:
        rep = sparsity_report(g, **sel)
        total_w += rep.prunable_total
        zeros += rep.prunable_zeros
    reached = zeros / total_w if total_w else 0.0

    # ---- dense twin from the same initial weights
    dense_model, dense_groups = build()
    dense_model = unmasked(dense_model)

    masked_w = make_workload(masked_model, masked_groups)
    dense_w = make_workload(dense_model, dense_groups)

    # ---- one-off: rewinding (to the pruned θ0, so repeats are identical work)
    rewinder = Rewinder(masked_model)
    rewind_ms = _median_ms(rewinder, device, 5)

    # ---- warm-up, then interleaved timed steps
    for _ in range(warmup):
        dense_w.step()
        masked_w.step()
    _sync(device)
    dense_t: list[float] = []
    masked_t: list[float] = []
    order = [(dense_w, dense_t), (masked_w, masked_t)]
    for i in range(steps):
        for wl, times in (order if i % 2 == 0 else order[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            wl.step()
            _sync(device)
            times.append(1e3 * (time.perf_counter() - t0))

    # ---- one-off: resetting optimizers (after a step, so there is state to drop)
    reset_ms = []
    for _ in range(3):
        masked_w.step()
        _sync(device)
        t0 = time.perf_counter()
        masked_w.reset()
        _sync(device)
        reset_ms.append(1e3 * (time.perf_counter() - t0))
    masked_w.step()  # the first step after a reset builds optimizer state: keep it out

    # ---- profiled masked steps
    prof = _profile(masked_w.step, steps, device)
    use_dev = device.type == "cuda"
    fwd, bwd, by_name = _op_times(prof, steps, use_dev)
    trace_str = None
    if trace is not None:
        atomic_write(trace, lambda tmp: prof.export_chrome_trace(tmp))
        trace_str = str(trace)

    return ProfileResult(
        target=target, device=str(device), preset=preset, amp=amp, layer_types=layer_types,
        steps=steps, warmup=warmup, sparsity_target=sparsity, sparsity_reached=reached,
        prunable_weights=total_w, dense_step_ms=dense_t, masked_step_ms=masked_t,
        ops_forward=fwd, ops_backward=bwd, ops_by_name=by_name,
        one_off_ms={"prune": statistics.median(prune_ms), "rewind": rewind_ms,
                    "reset_optimizer": statistics.median(reset_ms)},
        time_source="cuda" if use_dev else "cpu", trace=trace_str)


# --------------------------------------------------------------------------------------------
# GANs


def gan_data(gan: str, config, seed: int = 0, n: int = 64):
    """Random training images of ``gan``'s config (one set, or a pair for two domains): data
    loading is not what ``lthgan profile`` and the benchmarks measure."""
    from . import gans

    return gans.family(gan).data.random(config, seed, n)


def profile_gan(gan: str, *, preset: str = "quick", device: str | torch.device = "cpu",
                sparsity: float = 0.74, steps: int = 5, warmup: int = 1, amp: str | None = None,
                layer_types: str = "conv", prune_d: bool = False, seed: int = 0,
                trace: str | Path | None = None) -> ProfileResult:
    """Profile training steps of the registered GAN family ``gan`` at ``preset``.

    The generators (and with ``prune_d`` the discriminators) are pruned to ``sparsity``, each
    with its own global threshold; the dense twin has plain torch layers everywhere."""
    from . import gans

    try:
        config = gans.default_config(gan, preset)
    except ValueError as e:
        raise ProfileError(str(e)) from None
    dev = _check_device(device)
    data = gan_data(gan, config, seed)

    def build():
        task = gans.build(gan, config, seed=seed, device=dev)
        names = list(task.generators) + (list(task.discriminators) if prune_d else [])
        return task, [task.models[n] for n in names]

    # _run works on modules; carry the task alongside the model
    tasks: dict[int, Any] = {}

    def build_model():
        task, groups = build()
        tasks[id(task.models)] = task
        return task.models, groups

    def make_workload(models: nn.Module, groups: list[nn.Module]) -> _Workload:
        task = tasks[id(models)]  # the dense twin's ModuleDict is the task's, unmasked in place
        trainer = gans.make_trainer(task, data, iterations=10**6, device=dev, seed=seed, amp=amp)
        return _Workload(step=trainer.step, reset=trainer.reset, models=models, prune_groups=groups)

    return _run(gan, build_model, make_workload, device=dev, preset=preset, amp=amp,
                layer_types=layer_types, sparsity=sparsity, steps=steps, warmup=warmup,
                trace=Path(trace) if trace is not None else None)


# --------------------------------------------------------------------------------------------
# any model: --model module:factory


def _load_factory(spec: str):
    """``module:attr`` or ``path/to/file.py:attr`` → (callable, module)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ProfileError(f"a model factory must look like 'module:factory' or 'path/file.py:factory', "
                           f"got {spec!r}")
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise ProfileError(f"a model factory must look like 'module:factory', got {spec!r}")
    if mod_name.endswith(".py") or "/" in mod_name:
        path = Path(mod_name)
        if not path.is_file():
            raise ProfileError(f"model factory {spec!r}: no such file {str(path)!r}")
        name = f"_lthgan_profile_{abs(hash(str(path.resolve())))}"
        mspec = importlib.util.spec_from_file_location(name, path)
        if mspec is None or mspec.loader is None:
            raise ProfileError(f"model factory {spec!r}: cannot import {str(path)!r}")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module
        mspec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise ProfileError(f"model factory {spec!r}: cannot import module {mod_name!r}: {e}") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ProfileError(f"model factory {spec!r}: {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ProfileError(f"model factory {spec!r}: {attr!r} is a {type(obj).__name__}, not a callable "
                           "factory")
    return obj, module


def _infer_input(model: nn.Module) -> Tensor:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return torch.randn(2, m.in_channels, 32, 32)
        if isinstance(m, nn.ConvTranspose2d):
            return torch.randn(2, m.in_channels, 8, 8)
        if isinstance(m, nn.Linear):
            return torch.randn(2, m.in_features)
    raise ProfileError(
        "cannot guess an input for this model (no Conv2d, ConvTranspose2d or Linear layer); "
        "return (model, example_input) from the factory, define example_input() in its module, "
        "or pass --input-shape")


def _to_device(x, device: torch.device):
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _loss_of(out) -> Tensor:
    """A scalar to backpropagate from any output: the sum of mean squares of its float tensors."""
    parts: list[Tensor] = []

    def walk(o):
        if isinstance(o, Tensor):
            if o.is_floating_point() and o.requires_grad:
                parts.append(o.float().square().mean())
        elif isinstance(o, (tuple, list)):
            for v in o:
                walk(v)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)

    walk(out)
    if not parts:
        raise ProfileError("the model's output holds no floating-point tensor that requires grad, "
                           "so there is nothing to train; return a tensor (or tuple/dict of them)")
    return torch.stack(parts).sum()


def profile_model(spec: str, *, device: str | torch.device = "cpu", sparsity: float = 0.74,
                  steps: int = 5, warmup: int = 1, amp: str | None = None,
                  layer_types: str = "conv", input_shape: Sequence[int] | None = None,
                  lr: float = 1e-4, trace: str | Path | None = None) -> ProfileResult:
    """Profile training steps (Adam, loss = mean square of the output) of any model.

    ``spec`` is ``module:factory`` (or ``file.py:factory``); the factory takes no arguments and
    returns an ``nn.Module`` or ``(module, example_input)``. Without an example from the factory,
    a random tensor of ``input_shape`` is used, else the module's ``example_input()``, else a
    guess from the first layer (Conv2d: 2×C×32×32, ConvTranspose2d: 2×C×8×8,
    Linear: 2×in_features)."""
    dev = _check_device(device)
    factory, module = _load_factory(spec)

    def call_factory():
        # the factory may draw from the global RNG: seed it so every call gives the same
        # weights, without disturbing the caller's RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            out = factory()
        example = None
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module):
            out, example = out
        if not isinstance(out, nn.Module):
            raise ProfileError(f"model factory {spec!r}: the factory returned a {type(out).__name__}; "
                               "expected an nn.Module or (nn.Module, example_input)")
        return out, example

    probe, example = call_factory()
    if example is None:
        if input_shape is not None:
            example = torch.randn(*input_shape)
        elif callable(getattr(module, "example_input", None)):
            example = module.example_input()
        else:
            example = _infer_input(probe)
    example = _to_device(example, dev)
    args = example if isinstance(example, tuple) else (example,)
    types = LAYER_TYPES[layer_types]
    del probe

    def build():
        model, _ = call_factory()
        model = masked(model.to(dev), types=types)
        if not masked_modules(model):
            raise ProfileError(f"model factory {spec!r}: the model has no layer of the types "
                               f"{layer_types!r} to prune")
        model.train()
        return model, [model]

    def make_workload(model: nn.Module, groups: list[nn.Module]) -> _Workload:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if amp == "bf16" \
            else contextlib.nullcontext

        def step():
            opt.zero_grad(set_to_none=True)
            with ctx():
                out = model(*args)
            loss = _loss_of(out)
            loss.backward()
            opt.step()

        return _Workload(step=step, reset=lambda: reset_optimizer_state(opt), models=model,
                         prune_groups=groups)

    return _run(spec, build, make_workload, device=dev, preset=None, amp=amp,
                layer_types=layer_types, sparsity=sparsity, steps=steps, warmup=warmup,
                trace=Path(trace) if trace is not None else None)


# --------------------------------------------------------------------------------------------
# output


def _check_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ProfileError(f"unknown device {device!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProfileError(f"device {device!r} asked for, but torch.cuda.is_available() is False")
    if dev.type not in ("cpu", "cuda"):
        raise ProfileError(f"device {device!r}: expected cpu or cuda")
    return dev


def _fmt_ms(v: float) -> str:
    if v >= 100:
        return f"{v:.1f} ms"
    if v >= 1:
        return f"{v:.2f} ms"
    return f"{v * 1e3:.1f} µs"


def format_table(r: ProfileResult) -> str:
    """The human-readable table ``lthgan profile`` prints."""
    head = (f"lthgan profile: {r.target}" + (f" (preset {r.preset})" if r.preset else "")
            + f" on {r.device}" + (f", amp {r.amp}" if r.amp else "")
            + f"; sparsity {r.sparsity_reached:.4f} of {r.prunable_weights:,} prunable "
            f"{r.layer_types} weights (target {r.sparsity_target:g}); "
            f"{r.steps} timed steps after {r.warmup} warm-up")
    fwd, bwd = r.ops_forward, r.ops_backward
    src = "GPU" if r.time_source == "cuda" else "CPU"
    rows = [
        ("time per step, dense (median)", _fmt_ms(r.dense_ms)),
        ("time per step, masked (median)", _fmt_ms(r.masked_ms)),
        ("overhead, masked vs dense", f"{r.overhead_pct:+.2f} %"),
        (f"lthgan ops, forward ({src} time/step)",
         f"{_fmt_ms(fwd['total'])} in {fwd['calls']:.0f} calls; masking {_fmt_ms(fwd['mask'])}"),
        (f"lthgan ops, backward ({src} time/step)",
         f"{_fmt_ms(bwd['total'])} in {bwd['calls']:.0f} calls; masking {_fmt_ms(bwd['mask'])}"),
        ("one-off: prune (global magnitude)", _fmt_ms(r.one_off_ms["prune"])),
        ("one-off: rewind (rewind_)", _fmt_ms(r.one_off_ms["rewind"])),
        ("one-off: reset optimizer", _fmt_ms(r.one_off_ms["reset_optimizer"])),
    ]
    if r.trace:
        rows.append(("Chrome trace (masked steps)", r.trace))
    w = max(len(k) for k, _ in rows)
    lines = [head, "-" * min(len(head), 100)]
    lines += [f"{k.ljust(w)}  {v}" for k, v in rows]
    if r.ops_by_name:
        lines.append("")
        lines.append("per op (per step)".ljust(w) + "  calls      total    masking")
        for name, d in sorted(r.ops_by_name.items()):
            lines.append(f"{('  ' + name).ljust(w)}  {d['calls']:5.0f} {_fmt_ms(d['total']):>10} "
                         f"{_fmt_ms(d['mask']):>10}")
    return "\n".join(lines)
