"""What a generator costs (parameters, MACs, latency) and how it leaves lthgan (export)."""
from __future__ import annotations

import copy
import math
import statistics
import time
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .. import nn as lnn

__all__ = ["count", "latency_ms", "export", "load_exported", "exported_format", "FORMATS"]

#: what :func:`export` can write
FORMATS = ("torch.export", "torchscript")


def _check_model(model, fn: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn} expects an nn.Module, not {type(model).__name__}")


def _check_input(x, fn: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"{fn} expects example_input to be a tensor with a batch dimension, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    return x


class _EvalMode:
    """Eval mode and no autograd for the duration; the training flag is restored after. A
    loaded torch.export program (which refuses ``eval()``) or a plain callable runs as is."""

    def __init__(self, model):
        self.model = model
        self.was = None

    def __enter__(self):
        self.grad = torch.no_grad()
        self.grad.__enter__()
        if isinstance(self.model, nn.Module):
            try:
                was = self.model.training
                self.model.eval()
                self.was = was
            except NotImplementedError:  # torch.export's module(): its mode is fixed at export
                pass
        return self.model

    def __exit__(self, *exc):
        if self.was is not None:
            self.model.train(self.was)
        self.grad.__exit__(*exc)


def _macs(m: nn.Module, out: Tensor) -> int:
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)


def count(model: nn.Module, example_input: Tensor) -> tuple[int, int]:
    """``(parameters, MACs per image)`` of ``model``.

    Parameters: every element of ``model.parameters()`` (masked zeros included: they are
    stored). MACs: one forward of ``example_input`` (eval mode, no grad; any device,
    ``meta`` included, which costs nothing) with hooks on every Conv2d, ConvTranspose2d and
    Linear, each adding output elements × input channels per group × kernel area (× in
    features for a Linear), divided by the batch size. Masked zeros are counted: a dense
    kernel multiplies them. For a transposed conv this is the convention of the compression
    literature (GAN Compression's 56.8 GMAC for CycleGAN, reproduced by this count): it
    counts the products with the zeros a stride-s transposed conv inserts, about s² times the
    products a scatter implementation needs. Norms, activations and adds are not counted."""
    _check_model(model, "count")
    x = _check_input(example_input, "count")
    params = sum(p.numel() for p in model.parameters())
    total = [0]

    def hook(m, _inp, out):
        total[0] += _macs(m, out)

    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    if not handles:
        raise ValueError(f"count found no Conv2d, ConvTranspose2d or Linear in the "
                         f"{type(model).__name__}: count the model, not an exported program")
    try:
        with _EvalMode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return params, total[0] // x.shape[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_ms(model: Callable[[Tensor], Tensor], example_input: Tensor, *, repeats: int = 20,
               warmup: int = 3) -> float:
    """The median wall-clock time, in milliseconds, of ``model(example_input)`` over ``repeats``
    timed calls after ``warmup`` untimed ones: eval mode, no grad, on the input's device
    (CUDA calls are synchronised). Threads are whatever torch is set to use. ``model`` is a
    module or what :func:`load_exported` returns."""
    if not callable(model):
        raise TypeError(f"latency_ms expects a model to call, not {type(model).__name__}")
    x = _check_input(example_input, "latency_ms")
    for name, v, lo in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    times = []
    with _EvalMode(model):
        for i in range(warmup + repeats):
            _sync(x.device)
            t = time.perf_counter()
            model(x)
            _sync(x.device)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


# --------------------------------------------------------------------------- export


def _plain_copy(model: nn.Module) -> nn.Module:
    """A CPU copy in eval mode with lthgan's masked layers as plain torch layers (masks baked in)."""
    m = lnn.unmasked(copy.deepcopy(model).cpu())
    leftover = [n for n, mod in m.named_modules() if lnn.is_masked(mod)]
    if leftover:  # unmasked converts every masked layer; a guard against future layer kinds
        raise RuntimeError(f"layers still masked after unmasked(): {leftover}")
    return m.eval().requires_grad_(False)


def _export_program(m: nn.Module, x: Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    dyn = ({0: batch},)
    ep = torch.export.export(m, (x,), dynamic_shapes=dyn, strict=False)
    with open(path, "wb") as f:  # a file object: torch warns about a path not ending in .pt2
        torch.export.save(ep, f)


class _QuietJit(warnings.catch_warnings):
    """torch 2.14 deprecates TorchScript (a FutureWarning on every ``torch.jit`` call) but
    still supports it. It is the fallback for models torch.export cannot capture (and what
    older runtimes load), so lthgan's own calls silence exactly those warnings."""

    def __enter__(self):
        out = super().__enter__()
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        return out


def _export_script(m: nn.Module, x: Tensor, path: Path) -> None:
    with _QuietJit():
        torch.jit.trace(m, (x,), check_trace=False).save(str(path))


def export(model: nn.Module, example_input: Tensor, path, *, format: str = "auto") -> str:
    """Write ``model`` (e.g. a sliced generator) to ``path`` as a standalone file that runs
    where lthgan is not installed; returns the format written, "torch.export" or
    "torchscript". Load it with :func:`load_exported`, or without lthgan as it describes.

    A CPU copy in eval mode is exported, with lthgan's masked layers turned into plain torch
    layers whose pruned weights are baked in as zeros (:func:`lthgan.nn.unmasked`); ``model``
    is not changed. ``format="auto"`` writes a ``torch.export`` program (a ``.pt2`` archive,
    batch dimension dynamic) and falls back, with a warning saying why, to TorchScript
    (``torch.jit.trace``) where export fails; "torch.export" or "torchscript" asks for one.
    ``example_input`` is a batch of the model's input (a batch of one is repeated to two,
    since export specialises a size-1 dimension). The file is read back and checked against
    the model on ``example_input`` before this returns."""
    _check_model(model, "export")
    x = _check_input(example_input, "export").detach().cpu()
    if format not in FORMATS + ("auto",):
        raise ValueError(f"format must be auto, {' or '.join(FORMATS)}; got {format!r}")
    path = Path(path)
    if x.shape[0] == 1:
        x = x.repeat(2, *([1] * (x.dim() - 1)))
    m = _plain_copy(model)
    written = format
    if format == "torchscript":
        _export_script(m, x, path)
    else:
        try:
            _export_program(m, x, path)
            written = "torch.export"
        except Exception as e:  # torch.export raises many kinds; auto falls back and says why
            if format == "torch.export":
                raise
            warnings.warn(f"torch.export could not export the model ({type(e).__name__}: {e}); "
                          "wrote TorchScript instead", RuntimeWarning, stacklevel=2)
            _export_script(m, x, path)
            written = "torchscript"
    _verify(path, m, x)
    return written


def _verify(path: Path, m: nn.Module, x: Tensor) -> None:
    with torch.no_grad():
        want = m(x)
        got = load_exported(path)(x)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"the exported file {path} does not reproduce the model's output "
                           f"(max abs difference {float((got - want).abs().max()):.3g})")


def exported_format(path) -> str:
    """"torch.export" or "torchscript": what :func:`export` wrote at ``path``."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path} is not a file written by lthgan.channels.export ({e})") from None
    if any(n.endswith("/archive_format") for n in names):  # a torch.export .pt2 archive
        return "torch.export"
    if any(n.endswith("/constants.pkl") for n in names):  # a TorchScript archive
        return "torchscript"
    raise ValueError(f"{path} is a zip archive but neither a torch.export nor a TorchScript file")


def load_exported(path) -> Callable[[Tensor], Tensor]:
    """The model :func:`export` wrote to ``path``, as a callable on a batch of inputs (CPU).

    Without lthgan (only torch, the same or a newer version) a user loads it so::

        import torch
        G = torch.export.load("G.pt2").module()  # a torch.export file (the usual case)
        G = torch.jit.load("G.pt")               # a TorchScript file (the fallback)
        with torch.no_grad():
            images = G(z)                        # the batch size is free

    (``lthgan.channels.exported_format(path)`` tells which one a file is.) The model runs in
    eval mode, on the CPU."""
    fmt = exported_format(path)
    if fmt == "torchscript":
        with _QuietJit():
            return torch.jit.load(str(path), map_location="cpu")
    with open(path, "rb") as f:
        return torch.export.load(f).module()
