"""Shared helpers of lthgan's benchmark suites (see bench/README.md).

Every row records ``extra_info`` with ``suite``, ``impl`` (``dense`` / ``lthgan`` /
``prune-hook`` or the suite's alternatives), ``sparsity`` and the case, and every row of one
comparison shares one ``benchmark.group``, so pytest-benchmark prints them side by side and
``bench/ratios.py`` can pair them up.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Sequence

import torch

SPARSITIES = (0.0, 0.74, 0.9)

#: Shapes of the prunable weights of the paper's models, for the selection and rewinding suites.
#: SNGAN G (paper): 6 conv3x3 256->256, 3 conv1x1 shortcuts, the conv3x3 256->3 output and the
#: Linear 128->4096 input layer: 4,266,752 weights (3,742,464 of them conv).
_SNGAN_G = [(4096, 128)] + [(256, 256, 3, 3)] * 2 + [(256, 256, 1, 1)] \
    + [(256, 256, 3, 3)] * 2 + [(256, 256, 1, 1)] + [(256, 256, 3, 3)] * 2 \
    + [(256, 256, 1, 1)] + [(3, 256, 3, 3)]
#: CycleGAN ResNet-9 generator at 256x256: 11,372,928 conv weights.
_CYCLEGAN_G = [(64, 3, 7, 7), (128, 64, 3, 3), (256, 128, 3, 3)] + [(256, 256, 3, 3)] * 18 \
    + [(256, 128, 3, 3), (128, 64, 3, 3), (3, 64, 7, 7)]
#: 70x70 PatchGAN discriminator: 2,763,776 conv weights.
_CYCLEGAN_D = [(64, 3, 4, 4), (128, 64, 4, 4), (256, 128, 4, 4), (512, 256, 4, 4), (1, 512, 4, 4)]

WEIGHT_SETS: dict[str, list[tuple[int, ...]]] = {
    "4.3M": _SNGAN_G,                              # SNGAN G
    "11.4M": _CYCLEGAN_G,                          # one CycleGAN G
    "28M": _CYCLEGAN_G * 2 + _CYCLEGAN_D * 2,      # both CycleGAN G and both D: 28,273,408
}


def numel(shapes: Sequence[Sequence[int]]) -> int:
    return sum(math.prod(s) for s in shapes)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_weights(shapes, device, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device) for s in shapes]


def random_masks(shapes, sparsity: float, device, seed: int = 1) -> list[torch.Tensor]:
    """Bool masks with exactly ``round(sparsity * N)`` of the ``N`` entries False overall."""
    g = torch.Generator().manual_seed(seed)
    n = numel(shapes)
    flat = torch.ones(n, dtype=torch.bool)
    flat[torch.randperm(n, generator=g)[: int(round(sparsity * n))]] = False
    out, start = [], 0
    for s in shapes:
        k = math.prod(s)
        out.append(flat[start:start + k].view(s).to(device))
        start += k
    return out


def layer_mask(shape, sparsity: float, device, seed: int = 1) -> torch.Tensor:
    return random_masks([tuple(shape)], sparsity, device, seed)[0]


def _scale() -> float:
    raw = os.environ.get("LTHGAN_BENCH_SCALE", "1")
    try:
        v = float(raw)
    except ValueError:
        raise ValueError(f"LTHGAN_BENCH_SCALE={raw!r}: expected a positive number") from None
    if not v > 0:
        raise ValueError(f"LTHGAN_BENCH_SCALE={raw!r}: expected a positive number")
    return v


def run(benchmark, fn: Callable[[], object], *, device: torch.device, suite: str, group: str,
        impl: str, sparsity: float | None = None, budget_s: float = 2.0, min_rounds: int = 5,
        max_rounds: int = 200, setup: Callable[[], None] | None = None, **info) -> None:
    """Time ``fn`` with pytest-benchmark, synchronising CUDA inside the timed call.

    One untimed call calibrates: rounds fill ``budget_s`` (× ``LTHGAN_BENCH_SCALE``) within
    [``min_rounds``, ``max_rounds``]; calls under 1 ms are batched into iterations so each
    round lasts about 1 ms. ``setup`` (untimed) runs before every round."""
    if setup is not None:
        setup()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    t = max(time.perf_counter() - t0, 1e-7)
    rounds = int(min(max(budget_s * _scale() / t, min_rounds), max_rounds))
    iterations = 1 if setup is not None else int(min(max(1e-3 / t, 1), 1000))

    if device.type == "cuda":
        def target():
            fn()
            torch.cuda.synchronize(device)
    else:
        target = fn

    benchmark.group = group
    benchmark.extra_info.update(suite=suite, impl=impl, sparsity=sparsity, device=str(device),
                                load1=round(os.getloadavg()[0], 2), **info)
    kwargs = {"setup": setup} if setup is not None else {}
    benchmark.pedantic(target, rounds=rounds, iterations=iterations,
                       warmup_rounds=1 if t < 0.5 else 0, **kwargs)


def impl_rows(impls: Sequence[str] = ("lthgan", "prune-hook")):
    """pytest params (impl, sparsity): one dense row, then each impl at every sparsity."""
    import pytest

    rows = [pytest.param("dense", None, id="dense")]
    for impl in impls:
        for s in SPARSITIES:
            rows.append(pytest.param(impl, s, id=f"{impl}-{s:g}"))
    return rows


# --------------------------------------------------------------------------------------------
# whole GANs (suites 4 and 5)


def gan_data(gan: str, config, seed: int = 0):
    """Random training images of the config's size (data loading is not benchmarked): two
    batches' worth of the largest batch the config draws."""
    from lthgan.profile import gan_data as random_data

    batch = max(int(getattr(config, a)) for a in ("batch", "g_batch", "d_batch") if hasattr(config, a))
    return random_data(gan, config, seed, n=max(8, 2 * batch))


def build_variant(gan: str, preset: str, impl: str, sparsity: float | None, device, seed: int = 0):
    """``(task, masks)`` for one row of the step suite, all from the same seeded θ0.

    * ``dense``: every model converted to plain torch layers (``lthgan.nn.unmasked``; SNGAN's D
      gets torch's own spectral norm);
    * ``lthgan``: as built (every conv an lthgan masked layer), the generators pruned by global
      magnitude to ``sparsity``, each with its own threshold (IMP_G: D is not pruned);
    * ``prune-hook``: the dense models, with ``torch.nn.utils.prune.custom_from_mask`` on every
      generator conv (the lthgan masks of the same sparsity).
    """
    from torch.nn.utils import prune as tprune

    from lthgan import gans
    from lthgan.nn import unmasked
    from lthgan.prune import global_magnitude

    config = gans.default_config(gan, preset)
    task = gans.build(gan, config, seed=seed, device=device)
    masks: dict[str, dict[str, torch.Tensor]] = {}
    if impl in ("lthgan", "prune-hook"):
        for g in task.generators:
            masks[g] = global_magnitude(task.models[g], sparsity)
    if impl in ("dense", "prune-hook"):
        for name in list(task.models.keys()):
            task.models[name] = unmasked(task.models[name])
    if impl == "prune-hook":
        for g, by_layer in masks.items():
            model = task.models[g]
            for layer_name, m in by_layer.items():
                layer = model.get_submodule(layer_name)
                tprune.custom_from_mask(layer, "weight", m)
                # prune leaves `weight` as a non-leaf tensor that deepcopy refuses (the SNGAN
                # trainer deep-copies G for its EMA); recompute it as a leaf, the hook rebuilds
                # it with autograd on the next forward
                with torch.no_grad():
                    layer.weight = layer.weight_orig * layer.weight_mask
    elif impl not in ("dense", "lthgan"):
        raise ValueError(f"unknown impl {impl!r}; expected dense, lthgan or prune-hook")
    return task, masks


def make_trainer(task, device, amp=None, seed: int = 0):
    from lthgan import gans

    return gans.make_trainer(task, gan_data(task.name, task.config, seed), iterations=10**6,
                             device=device, seed=seed, amp=amp)


# --------------------------------------------------------------------------------------------
# optimizers and pruned plain models (the gradient-penalty and resnet18 suites)


def adam(impl: str, params, **kwargs) -> torch.optim.Optimizer:
    """The Adam of a row: ``lthgan.optim.Adam`` (drop-in for torch's) on the lthgan rows,
    torch's fastest setting, ``Adam(fused=True)``, on the dense and prune-hook rows."""
    if impl == "lthgan":
        from lthgan.optim import Adam

        return Adam(params, **kwargs)
    return torch.optim.Adam(params, fused=True, **kwargs)


def pruned_variant(model: torch.nn.Module, impl: str, sparsity: float | None, types: str = "conv"):
    """``(model, masks)`` for one row, from a plain torch model (its θ0):

    * ``dense``: the model as it is, no masks;
    * ``lthgan``: converted to lthgan's masked layers of ``types`` and pruned by global
      magnitude to ``sparsity``;
    * ``prune-hook``: the same masks put on the plain model with
      ``torch.nn.utils.prune.custom_from_mask``.
    """
    from torch.nn.utils import prune as tprune

    from lthgan.nn import masked, unmasked
    from lthgan.prune import LINEAR_TYPES, CONV_TYPES, global_magnitude

    if impl == "dense":
        return model, {}
    if impl not in ("lthgan", "prune-hook"):
        raise ValueError(f"unknown impl {impl!r}; expected dense, lthgan or prune-hook")
    layer_types = CONV_TYPES + (LINEAR_TYPES if types == "conv+linear" else ())
    model = masked(model, types=layer_types)
    masks = global_magnitude(model, sparsity, types=types)
    if impl == "prune-hook":
        model = unmasked(model)
        for name, m in masks.items():
            tprune.custom_from_mask(model.get_submodule(name), "weight", m)
    return model, masks


def pruned_entries_are_zero(model: torch.nn.Module, impl: str, masks) -> bool:
    """Whether every pruned weight is exactly zero: the raw weight of an lthgan layer, the
    weight the prune hook rebuilt in the last forward."""
    from lthgan.nn import raw_weight

    for name, m in masks.items():
        layer = model.get_submodule(name)
        w = raw_weight(layer) if impl == "lthgan" else layer.weight
        if torch.count_nonzero(w.detach()[~m]) != 0:
            return False
    return True
