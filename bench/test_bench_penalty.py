"""Suite 6, a gradient-penalty step: one WGAN-GP critic update (Gulrajani et al. 2017: the
Wasserstein loss plus λ·(‖∇ₓD(x̂)‖₂ − 1)² at random interpolates x̂, with ``create_graph=True``,
so the step differentiates through the layers' backward), dense vs lthgan vs prune-hook.

The critic is a DCGAN-style conv stack (32 to 256 channels) on 32×32 images (batch 32) with a Linear head, no
normalisation (as WGAN-GP asks), DCGAN's N(0, 0.02) init; every conv and the head are pruned
(``types="conv+linear"``).

* ``dense``: the plain critic (its speed does not depend on the values of its weights);
* ``lthgan``: lthgan's masked layers at ``sparsity``, ``lthgan.optim.Adam``;
* ``prune-hook``: ``torch.nn.utils.prune.custom_from_mask`` with the same masks.

Dense and prune-hook use ``torch.optim.Adam(fused=True)``. Before timing, the lthgan row checks
that its gradients equal those of the plain critic on ``weight * mask`` (the second-order terms
included) and the prune-hook row that its effective weights are ``weight * mask``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchutil import adam, impl_rows, pruned_entries_are_zero, pruned_variant, run
from lthgan.nn import raw_weight, unmasked

BATCH, RES, LAMBDA = 32, 32, 10.0


def critic() -> nn.Module:
    torch.manual_seed(0)
    D = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(128, 256, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(256 * 4 * 4, 1))
    # DCGAN's N(0, 0.02) initialisation: one scale for every layer, so a global magnitude
    # threshold prunes every layer (torch's default init would empty the widest ones at 90 %)
    for m in D:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
    return D


def batch(device):
    g = torch.Generator().manual_seed(5)
    real, fake = (torch.randn(BATCH, 3, RES, RES, generator=g).to(device) for _ in range(2))
    alpha = torch.rand(BATCH, 1, 1, 1, generator=g).to(device)
    return real, fake, alpha


def gradient_penalty(D: nn.Module, real, fake, alpha) -> torch.Tensor:
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).square().mean()


def critic_loss(D: nn.Module, real, fake, alpha) -> torch.Tensor:
    return D(fake).mean() - D(real).mean() + LAMBDA * gradient_penalty(D, real, fake, alpha)


def _grad(t: torch.Tensor) -> torch.Tensor:
    return t.grad if t.grad is not None else torch.zeros_like(t)


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Equal up to float32 rounding, relative to the largest entry."""
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()),
                               msg=lambda s: f"{what}: gradient {s}")


def _check_against_dense(D: nn.Module, impl: str, sparsity: float, masks, data) -> None:
    """The gradient of the penalty alone (its second-order terms) and of the whole loss, for
    the row's critic and for the plain critic on ``weight * mask`` (same θ0, same masks)."""
    ref, _ = pruned_variant(critic().to(data[0].device), "lthgan", sparsity, types="conv+linear")
    ref = unmasked(ref)
    for loss in (gradient_penalty, critic_loss):
        loss(D, *data).backward()
        loss(ref, *data).backward()
        for name, m in masks.items():
            layer, plain = D.get_submodule(name), ref.get_submodule(name)
            got = _grad(raw_weight(layer) if impl == "lthgan" else layer.weight_orig)
            want = _grad(plain.weight) * m
            assert want.abs().max() > 0, f"the penalty does not reach {name}.weight"
            _close(got, want, f"{impl}, {loss.__name__}, {name}.weight")
            _close(_grad(layer.bias), _grad(plain.bias), f"{impl}, {loss.__name__}, {name}.bias")
        D.zero_grad(set_to_none=True)
        ref.zero_grad(set_to_none=True)


@pytest.mark.parametrize("impl, sparsity", impl_rows())
def test_penalty_step(benchmark, device, impl, sparsity):
    D, masks = pruned_variant(critic().to(device), impl, sparsity, types="conv+linear")
    data = batch(device)
    if impl != "dense":
        _check_against_dense(D, impl, sparsity, masks, data)
    opt = adam(impl, D.parameters(), lr=1e-4, betas=(0.0, 0.9))

    def step():
        opt.zero_grad(set_to_none=True)
        critic_loss(D, *data).backward()
        opt.step()

    step()  # optimizer state, allocator warm-up
    run(benchmark, step, device=device, suite="penalty", group=f"penalty wgan-gp {device.type}",
        impl=impl, sparsity=sparsity, case="wgan-gp critic 32x3x32x32",
        budget_s=3.0 if device.type == "cpu" else 2.0)
    assert pruned_entries_are_zero(D, impl, masks)
