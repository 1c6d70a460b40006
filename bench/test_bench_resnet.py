"""Suite 7, a resnet18 training step: ``torchvision.models.resnet18`` (random init, 1000
classes) on 8×3×64×64 images, cross-entropy, Adam; every conv pruned to 74 % by global
magnitude (the fc head stays dense).

* ``dense``: the plain model with ``torch.optim.Adam(fused=True)``, torch's fastest Adam;
* ``lthgan``: lthgan's masked layers with ``lthgan.optim.Adam``;
* ``prune-hook``: ``torch.nn.utils.prune.custom_from_mask`` with the same masks, and
  ``torch.optim.Adam(fused=True)``.

Before timing, the lthgan and prune-hook rows take one step from the same θ0 on the same
batch and check that their effective weights agree.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchutil import adam, pruned_entries_are_zero, pruned_variant, run
from lthgan.nn import raw_weight

SPARSITY = 0.74
SHAPE = (8, 3, 64, 64)
ROWS = [pytest.param("dense", None, id="dense"),
        pytest.param("lthgan", SPARSITY, id=f"lthgan-{SPARSITY:g}"),
        pytest.param("prune-hook", SPARSITY, id=f"prune-hook-{SPARSITY:g}")]


def resnet18(device):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).to(device).train()


def data(device):
    g = torch.Generator().manual_seed(3)
    return torch.randn(SHAPE, generator=g).to(device), torch.randint(1000, (SHAPE[0],), generator=g).to(device)


def trainer(impl, sparsity, device):
    model, masks = pruned_variant(resnet18(device), impl, sparsity)
    opt = adam(impl, model.parameters(), lr=1e-3)
    x, y = data(device)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return model, masks, step


def _effective(model, impl, masks):
    if impl == "lthgan":
        return {n: raw_weight(model.get_submodule(n)).detach() for n in masks}
    return {n: (model.get_submodule(n).weight_orig * m).detach() for n, m in masks.items()}


def _check_lthgan_equals_hook(device) -> None:
    after = {}
    for impl in ("lthgan", "prune-hook"):
        model, masks, step = trainer(impl, SPARSITY, device)
        step()
        after[impl] = _effective(model, impl, masks)
    for name, w in after["lthgan"].items():
        torch.testing.assert_close(w, after["prune-hook"][name], atol=1e-6, rtol=1e-5,
                                   msg=lambda s: f"{name} after one step: {s}")


@pytest.mark.parametrize("impl, sparsity", ROWS)
def test_resnet18_step(benchmark, device, impl, sparsity):
    if impl == "lthgan":
        _check_lthgan_equals_hook(device)
    model, masks, step = trainer(impl, sparsity, device)
    step()  # optimizer state, allocator warm-up
    run(benchmark, step, device=device, suite="resnet", group=f"resnet18 8x3x64x64 {device.type}",
        impl=impl, sparsity=sparsity, case="resnet18 8x3x64x64",
        budget_s=4.0 if device.type == "cpu" else 2.0)
    assert pruned_entries_are_zero(model, impl, masks)
