"""Suite 3, rewinding: write θ0 back into the weights, keeping the masks.

* ``lthgan``: ``lthgan.ops.rewind_(weights, θ0, masks)``: one fused pass,
  ``w = where(mask, θ0, 0)``;
* ``load_state_dict``: ``module.load_state_dict(θ0)``, as with ``torch.nn.utils.prune``
  (whose masks are applied in every forward, so the copy alone is a rewind);
* ``foreach_copy+mul``: ``torch._foreach_copy_(weights, θ0)`` then
  ``torch._foreach_mul_(weights, float_masks)``.

Same weight sets as the selection suite (4.3 M, 11.4 M, 28 M) and masks at 0%, 74%, 90%.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchutil import SPARSITIES, WEIGHT_SETS, random_masks, random_weights, run
from lthgan import ops


class _Holder(nn.Module):
    def __init__(self, tensors):
        super().__init__()
        self.w = nn.ParameterList([nn.Parameter(t) for t in tensors])


_cache: dict = {}


def _data(size: str, sparsity: float, device):
    key = (size, sparsity, str(device))
    if key not in _cache:
        _cache.clear()
        shapes = WEIGHT_SETS[size]
        theta0 = random_weights(shapes, device, seed=0)
        trained = random_weights(shapes, device, seed=1)
        masks = random_masks(shapes, sparsity, device)
        holder = _Holder([t.clone() for t in trained])
        _cache[key] = (holder, theta0, masks, [m.float() for m in masks])
    return _cache[key]


@pytest.mark.parametrize("impl", ["lthgan", "load_state_dict", "foreach_copy+mul"])
@pytest.mark.parametrize("sparsity", SPARSITIES, ids=lambda s: f"sp{s:g}")
@pytest.mark.parametrize("size", list(WEIGHT_SETS))
def test_rewind(benchmark, device, size, sparsity, impl):
    holder, theta0, masks, fmasks = _data(size, sparsity, device)
    weights = list(holder.w)
    state = {f"w.{i}": t for i, t in enumerate(theta0)}

    if impl == "lthgan":
        def fn():
            ops.rewind_(weights, theta0, masks)
    elif impl == "load_state_dict":
        def fn():
            holder.load_state_dict(state)
    else:
        def fn():
            with torch.no_grad():
                torch._foreach_copy_(weights, theta0)
                torch._foreach_mul_(weights, fmasks)

    with torch.no_grad():
        for w in weights:
            w.normal_()  # "trained" weights, different from θ0
    fn()
    with torch.no_grad():
        for w, t, m in zip(weights, theta0, masks):
            want = t if impl == "load_state_dict" else torch.where(m, t, 0.0)
            assert torch.equal(w, want)

    run(benchmark, fn, device=device, suite="rewind", group=f"rewind {size} sp{sparsity:g}",
        impl=impl, sparsity=sparsity, size=size, numel=sum(w.numel() for w in weights),
        budget_s=1.0, min_rounds=5)
