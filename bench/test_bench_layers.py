"""Suite 1, masked layers: dense torch vs lthgan's masked layers vs torch.nn.utils.prune.

Forward (inference, under no_grad) and forward+backward (training: the input requires grad,
as inside a network) of Conv2d, ConvTranspose2d and Linear at the paper's layer shapes:

* SNGAN (batch 64, 256 channels, 32x32): the 3x3 conv of G's last up-block; a 4x4 stride-2
  transposed conv 16->32 at the same width (SNGAN upsamples by interpolation, so this is the
  DCGAN-style equivalent); G's input Linear 128 -> 256*4*4.
* CycleGAN (256x256 images, batch 1): a residual-block 3x3 conv (256 ch, 64x64, reflect
  padded to 66x66 beforehand) and the first transposed conv 256->128, 64->128. CycleGAN has
  no Linear layer.

``prune-hook`` is ``torch.nn.utils.prune.custom_from_mask``: a forward pre-hook that rebuilds
``weight = weight_orig * weight_mask`` (float mask) on every call. ``dense`` is the plain layer
with no mask (one row per group: a dense layer's speed does not depend on the mask).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from benchutil import impl_rows, layer_mask, run
from lthgan.nn import MaskedConv2d, MaskedConvTranspose2d, MaskedLinear

# name: (torch class, lthgan class, constructor args, constructor kwargs, input shape)
CASES = {
    "sngan-conv3x3": (nn.Conv2d, MaskedConv2d, (256, 256, 3), dict(padding=1), (64, 256, 32, 32)),
    "sngan-convT4x4": (nn.ConvTranspose2d, MaskedConvTranspose2d, (256, 256, 4),
                       dict(stride=2, padding=1), (64, 256, 16, 16)),
    "sngan-linear": (nn.Linear, MaskedLinear, (128, 4096), {}, (64, 128)),
    "cyclegan-conv3x3": (nn.Conv2d, MaskedConv2d, (256, 256, 3), {}, (1, 256, 66, 66)),
    "cyclegan-convT3x3": (nn.ConvTranspose2d, MaskedConvTranspose2d, (256, 128, 3),
                          dict(stride=2, padding=1, output_padding=1), (1, 256, 64, 64)),
}

_inputs: dict = {}


def _input(case: str, device) -> torch.Tensor:
    key = (case, str(device))
    if key not in _inputs:
        _inputs.clear()  # keep one case's tensors alive at a time
        g = torch.Generator().manual_seed(7)
        _inputs[key] = torch.randn(CASES[case][4], generator=g).to(device)
    return _inputs[key]


def _layer(case: str, impl: str, sparsity, device) -> tuple[nn.Module, torch.Tensor | None]:
    plain_cls, masked_cls, args, kwargs, _ = CASES[case]
    torch.manual_seed(3)
    ref = plain_cls(*args, **kwargs).to(device)
    if impl == "dense":
        return ref, None
    mask = layer_mask(ref.weight.shape, sparsity, device)
    if impl == "lthgan":
        layer = masked_cls(*args, **kwargs).to(device)
        layer.load_state_dict(ref.state_dict(), strict=False)
        layer.set_mask(mask)
        return layer, mask
    if impl == "prune-hook":
        prune.custom_from_mask(ref, "weight", mask)
        return ref, mask
    raise ValueError(f"unknown impl {impl!r}")


def _reference(layer: nn.Module, x: torch.Tensor, mask, case: str) -> torch.Tensor:
    """The plain functional op on weight * mask, for a correctness check before timing."""
    w = layer.weight_orig if hasattr(layer, "weight_orig") else layer.weight
    w = w.detach() if mask is None else (w.detach() * mask)
    plain_cls, _, _, kwargs, _ = CASES[case]
    if plain_cls is nn.Linear:
        return F.linear(x, w, layer.bias)
    if plain_cls is nn.Conv2d:
        return F.conv2d(x, w, layer.bias, **kwargs)
    return F.conv_transpose2d(x, w, layer.bias, **kwargs)


def _autocast(precision: str, device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@pytest.mark.parametrize("impl, sparsity", impl_rows())
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case", list(CASES))
def test_layer(benchmark, device, precision, case, mode, impl, sparsity):
    layer, mask = _layer(case, impl, sparsity, device)
    x = _input(case, device)

    # same work: the output equals the plain op on the masked weight (checked on 2 samples)
    with torch.no_grad(), _autocast(precision, device):
        got = layer(x[:2])
        want = _reference(layer, x[:2], mask, case)
    tol = dict(rtol=1e-4, atol=1e-4) if precision == "fp32" else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got.float(), want.float(), **tol)

    params = [p for p in layer.parameters()]
    if mode == "fwd":
        def fn():
            with torch.no_grad(), _autocast(precision, device):
                layer(x)
    else:
        xg = x.detach().clone().requires_grad_(True)
        with torch.no_grad():
            out_shape = (x.shape[0], *layer(x[:1]).shape[1:])
        gout = torch.randn(out_shape, generator=torch.Generator().manual_seed(5)).to(device)

        def fn():
            for p in params:
                p.grad = None
            xg.grad = None
            with _autocast(precision, device):
                out = layer(xg)
            out.backward(gout.to(out.dtype))

    run(benchmark, fn, device=device, suite="layers", group=f"layers {case} {mode} {precision}",
        impl=impl, sparsity=sparsity, case=case, mode=mode, precision=precision, budget_s=2.0,
        min_rounds=3)

    if mode == "fwd+bwd" and mask is not None:
        # the benchmarked backward really masks: pruned gradient entries are exactly zero
        w = layer.weight_orig if impl == "prune-hook" else layer.weight
        assert torch.count_nonzero(w.grad[~mask]) == 0
