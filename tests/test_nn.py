"""lthgan.nn: masked layers, conversion, pruned weights staying zero, masked spectral norm."""
import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import lthgan.nn as lnn
from lthgan import ops


def _prune_random(module, p=0.5):
    module.set_mask(torch.rand(module.mask.shape, device=module.mask.device) > p)


LAYERS = [
    (lnn.MaskedConv2d, nn.Conv2d, (4, 6, 3), dict(stride=2, padding=1, bias=True), (2, 4, 9, 9)),
    (lnn.MaskedConv2d, nn.Conv2d, (4, 8, 3), dict(padding="same", dilation=2, groups=2), (2, 4, 9, 9)),
    (lnn.MaskedConv2d, nn.Conv2d, (4, 6, 7), dict(padding=3, padding_mode="reflect"), (2, 4, 9, 9)),
    (lnn.MaskedConvTranspose2d, nn.ConvTranspose2d, (4, 6, 3), dict(stride=2, padding=1, output_padding=1), (2, 4, 5, 5)),
    (lnn.MaskedLinear, nn.Linear, (7, 5), dict(), (3, 7)),
]


@pytest.mark.parametrize("mcls,tcls,args,kw,xshape", LAYERS)
def test_layer_matches_torch_layer_on_masked_weight(device, mcls, tcls, args, kw, xshape):
    m = mcls(*args, **kw).to(device)
    assert isinstance(m, tcls)
    assert m.mask.dtype == torch.bool and m.mask.all()
    _prune_random(m)
    ref = tcls(*args, **kw).to(device)
    with torch.no_grad():
        ref.weight.copy_(m.weight * m.mask)
        if m.bias is not None:
            ref.bias.copy_(m.bias)
    x = torch.randn(*xshape, device=device)
    torch.testing.assert_close(m(x), ref(x), atol=1e-5, rtol=1e-5)
    assert set(m.state_dict()) == ({"weight", "mask"} | ({"bias"} if m.bias is not None else set()))


def test_transposed_output_size():
    m = lnn.MaskedConvTranspose2d(3, 2, 3, stride=2, padding=1)
    ref = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    ref.load_state_dict({k: v for k, v in m.state_dict().items() if k != "mask"})
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(m(x, output_size=[10, 10]), ref(x, output_size=[10, 10]))


def test_set_mask_keeps_identity_and_zeroes_weights():
    m = lnn.MaskedConv2d(3, 4, 3)
    buf, w = m.mask, m.weight
    new = torch.rand(m.mask.shape) > 0.5
    m.set_mask(new)
    assert m.mask is buf and m.weight is w
    assert torch.equal(m.mask, new) and torch.all(m.weight[~new] == 0)
    with pytest.raises(ValueError, match=r"mask has shape \(2,\)"):
        m.set_mask(torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor"):
        m.set_mask(torch.ones(m.mask.shape))


def test_deepcopy_and_pickle():
    net = nn.Sequential(lnn.MaskedConv2d(3, 4, 3), nn.ReLU(), lnn.spectral_norm(lnn.MaskedConv2d(4, 2, 3)))
    for layer in (net[0], net[2]):
        _prune_random(layer)
    x = torch.randn(2, 3, 8, 8)
    net.eval()
    y = net(x)
    c = copy.deepcopy(net)
    torch.testing.assert_close(c(x), y)
    assert c[0].mask is not net[0].mask and torch.equal(c[0].mask, net[0].mask)
    buf = io.BytesIO()
    pickle.dump(net, buf)
    p = pickle.loads(buf.getvalue())
    torch.testing.assert_close(p(x), y)


def test_masked_and_unmasked_conversion():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), nn.Flatten(), nn.Linear(4 * 16 * 16, 5))
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    w0 = model[0].weight
    out = lnn.masked(model, exclude=["3"])
    assert out is model
    assert isinstance(model[0], lnn.MaskedConv2d) and model[0].weight is w0
    assert not lnn.is_masked(model[3]) and not lnn.is_masked(model[5])
    torch.testing.assert_close(model(x), before, atol=0, rtol=0)
    lnn.masked(model, types=(nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    assert [n for n, _ in lnn.masked_modules(model)] == ["0", "3", "5"]
    torch.testing.assert_close(model(x), before)
    for _, m in lnn.masked_modules(model):
        _prune_random(m)
    pruned = model(x)
    plain = lnn.unmasked(copy.deepcopy(model))
    assert not any(lnn.is_masked(m) for m in plain.modules())
    assert type(plain[0]) is nn.Conv2d and "mask" not in plain[0].state_dict()
    torch.testing.assert_close(plain(x), pruned, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot mask layers of type 'ReLU'"):
        lnn.masked(model, types=(nn.ReLU,))


@pytest.mark.parametrize("opt_name,wd", [("adam", 0.0), ("adam", 1e-2), ("adamw", 1e-2)])
def test_pruned_weights_stay_exactly_zero_under_adam(device, opt_name, wd):
    net = nn.Sequential(lnn.MaskedConv2d(3, 8, 3, padding=1), nn.ReLU(),
                        lnn.MaskedConvTranspose2d(8, 4, 4, stride=2, padding=1), nn.Flatten(),
                        lnn.MaskedLinear(4 * 16 * 16, 3)).to(device)
    layers = [net[0], net[2], net[4]]
    for layer in layers:
        _prune_random(layer, 0.7)
    cls = torch.optim.Adam if opt_name == "adam" else torch.optim.AdamW
    opt = cls(net.parameters(), lr=1e-2, weight_decay=wd)
    w_before = [layer.weight.detach().clone() for layer in layers]
    for _ in range(50):
        x = torch.randn(4, 3, 8, 8, device=device)
        loss = net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for layer, wb in zip(layers, w_before):
        assert torch.all(layer.weight[~layer.mask] == 0.0)
        assert not torch.equal(layer.weight[layer.mask], wb[layer.mask]), "survivors must train"


class _Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("m", mask)

    def forward(self, w):
        return w * self.m


@pytest.mark.parametrize("kind", ["conv", "convt", "linear"])
def test_spectral_norm_matches_plain_reference(device, kind):
    if kind == "conv":
        ours, ref = lnn.MaskedConv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        xs = (2, 4, 7, 7)
    elif kind == "convt":
        ours, ref = lnn.MaskedConvTranspose2d(4, 6, 4, stride=2, padding=1), nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1)
        xs = (2, 4, 5, 5)
    else:
        ours, ref = lnn.MaskedLinear(9, 5), nn.Linear(9, 5)
        xs = (3, 9)
    ours, ref = ours.to(device), ref.to(device)
    _prune_random(ours)
    ref.load_state_dict({k: v for k, v in ours.state_dict().items() if k != "mask"})
    lnn.spectral_norm(ours)
    parametrize.register_parametrization(ref, "weight", _Mask(ours.mask.clone()))
    torch.nn.utils.parametrizations.spectral_norm(ref)
    sn = ref.parametrizations.weight[1]
    sn._u.copy_(ours.sn_u)
    sn._v.copy_(ours.sn_v)
    opt_a = torch.optim.Adam(ours.parameters(), lr=1e-2, betas=(0.0, 0.9))
    opt_b = torch.optim.Adam(ref.parameters(), lr=1e-2, betas=(0.0, 0.9))
    for step in range(20):
        x = torch.randn(*xs, device=device)
        ya, yb = ours(x), ref(x)
        torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-4)
        opt_a.zero_grad()
        opt_b.zero_grad()
        ya.square().mean().backward()
        yb.square().mean().backward()
        torch.testing.assert_close(ours.weight.grad, ref.parametrizations.weight.original.grad,
                                   atol=1e-5, rtol=1e-4)
        assert torch.all(ours.weight.grad[~ours.mask] == 0)
        opt_a.step()
        opt_b.step()
    assert torch.all(ours.weight[~ours.mask] == 0)
    # σ of the effective weight is 1 (largest singular value of the masked, normalised weight)
    ours.eval()
    w = ours.effective_weight().detach()
    if kind == "convt":
        w = w.transpose(0, 1)
    sigma = torch.linalg.matrix_norm(w.flatten(1).double(), ord=2)
    assert abs(float(sigma) - 1.0) < 0.05
    assert {"sn_u", "sn_v", "weight", "mask"} <= set(ours.state_dict())


def test_spectral_norm_errors():
    with pytest.raises(TypeError, match="needs an lthgan masked layer"):
        lnn.spectral_norm(nn.Conv2d(2, 2, 3))
    m = lnn.spectral_norm(lnn.MaskedConv2d(2, 2, 3))
    with pytest.raises(ValueError, match="already applied"):
        lnn.spectral_norm(m)
    with pytest.raises(ValueError, match="n_power_iterations"):
        lnn.spectral_norm(lnn.MaskedConv2d(2, 2, 3), n_power_iterations=0)


def test_raw_weight():
    m = lnn.MaskedConv2d(2, 3, 3)
    assert lnn.raw_weight(m) is m.weight
    lnn.spectral_norm(m)
    assert lnn.raw_weight(m) is m.weight
    c = nn.Conv2d(2, 3, 3)
    torch.nn.utils.parametrizations.spectral_norm(c)
    assert lnn.raw_weight(c) is c.parametrizations.weight.original
