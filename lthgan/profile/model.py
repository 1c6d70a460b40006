"""``lthgan profile --model module:factory``: training steps of any model (Adam, loss = mean
square of the output)."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from .. import optim as _optim
from ..nn import masked, masked_modules
from ..prune import reset_optimizer_state
from .driver import Options, run
from .result import ProfileResult
from .workload import LAYER_TYPES, ProfileError, Workload, check_device


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


def _call_factory(factory, spec: str):
    """``(module, example or None)`` from the factory. The factory may draw from the global
    RNG: it is seeded, so every call gives the same weights, without disturbing the caller's."""
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


def _example_args(factory, module, spec: str, input_shape, dev: torch.device) -> tuple:
    """The positional arguments of the model's forward, on ``dev``."""
    probe, example = _call_factory(factory, spec)
    if example is None:
        if input_shape is not None:
            example = torch.randn(*input_shape)
        elif callable(getattr(module, "example_input", None)):
            example = module.example_input()
        else:
            example = _infer_input(probe)
    example = _to_device(example, dev)
    return example if isinstance(example, tuple) else (example,)


def _adam_workload(model: nn.Module, groups: list[nn.Module], args: tuple, lr: float,
                   amp: str | None, dev: torch.device) -> Workload:
    # each side at its fastest: the masked model with lthgan's fused Adam, the dense twin with
    # torch's fused Adam (torch's fastest setting), so the overhead is against the best dense step
    if masked_modules(model):
        opt = _optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if amp == "bf16" \
        else contextlib.nullcontext

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx():
            out = model(*args)
        loss = _loss_of(out)
        loss.backward()
        opt.step()

    return Workload(step=step, reset=lambda: reset_optimizer_state(opt), models=model,
                    prune_groups=groups)


def profile_model(spec: str, *, device: str | torch.device = "cpu", sparsity: float = 0.74,
                  steps: int = 5, warmup: int = 1, amp: str | None = None,
                  layer_types: str = "conv", input_shape: Sequence[int] | None = None,
                  lr: float = 1e-4, trace: str | Path | None = None) -> ProfileResult:
    """Profile training steps (Adam, loss = mean square of the output) of any model: the dense
    twin steps with torch's fused Adam, the masked model with :class:`lthgan.optim.Adam`.

    ``spec`` is ``module:factory`` (or ``file.py:factory``); the factory takes no arguments and
    returns an ``nn.Module`` or ``(module, example_input)``. Without an example from the factory,
    a random tensor of ``input_shape`` is used, else the module's ``example_input()``, else a
    guess from the first layer (Conv2d: 2×C×32×32, ConvTranspose2d: 2×C×8×8,
    Linear: 2×in_features)."""
    dev = check_device(device)
    factory, module = _load_factory(spec)
    args = _example_args(factory, module, spec, input_shape, dev)
    types = LAYER_TYPES[layer_types]

    def build():
        model, _ = _call_factory(factory, spec)
        model = masked(model.to(dev), types=types)
        if not masked_modules(model):
            raise ProfileError(f"model factory {spec!r}: the model has no layer of the types "
                               f"{layer_types!r} to prune")
        model.train()
        return model, [model]

    opts = Options(target=spec, device=dev, preset=None, amp=amp, layer_types=layer_types,
                   sparsity=sparsity, steps=steps, warmup=warmup,
                   trace=Path(trace) if trace is not None else None)
    return run(build, lambda model, groups: _adam_workload(model, groups, args, lr, amp, dev), opts)
