"""lthgan.nn.masked edge cases: shared modules, torch parametrizations, MultiheadAttention's
out_proj, and load_state_dict at pruned positions; each against a plain PyTorch reference."""
import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import lthgan
import lthgan.nn as lnn
from lthgan import prune

pytestmark = pytest.mark.filterwarnings("error")


def _random_mask(shape, seed, p=0.5):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) > p


# --------------------------------------------------------------------------- shared modules


class SharedNet(nn.Module):
    """One conv registered under three names (two attributes and a Sequential slot)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = self.a
        self.seq = nn.Sequential(self.a, nn.ReLU())
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.seq(self.b(x)))


def _shared_reference(model, x):
    w = model.a.weight * model.a.mask
    y = F.relu(F.conv2d(F.conv2d(x, w, model.a.bias, padding=1), w, model.a.bias, padding=1))
    return F.conv2d(y, model.head.weight * model.head.mask, model.head.bias)


def test_shared_module_is_converted_once_and_stays_shared():
    torch.manual_seed(0)
    model = SharedNet()
    w0 = model.a.weight
    x = torch.randn(2, 4, 6, 6)
    before = model(x)
    out = lnn.masked(model)
    assert out is model
    assert lnn.is_masked(model.a) and model.a is model.b is model.seq[0]
    assert model.a.weight is w0
    assert [n for n, _ in lnn.masked_modules(model)] == ["a", "head"]
    torch.testing.assert_close(model(x), before, atol=0, rtol=0)
    # pruning sees the shared layer once and works
    masks = prune.global_magnitude(model, 0.5)
    assert sorted(masks) == ["a", "head"]
    assert torch.equal(model.b.mask, masks["a"]) and not masks["a"].all()
    torch.testing.assert_close(model(x), _shared_reference(model, x))
    # and back: still one plain module under every name
    y = model(x)
    plain = lnn.unmasked(model)
    assert type(plain.a) is nn.Conv2d and plain.a is plain.b is plain.seq[0]
    torch.testing.assert_close(plain(x), y)


def test_shared_module_excluded_under_any_name_stays_plain_everywhere():
    model = SharedNet()
    lnn.masked(model, exclude=["seq.*"])
    assert type(model.a) is nn.Conv2d and model.a is model.b is model.seq[0]
    assert lnn.is_masked(model.head)


def test_shared_root_and_nested_sharing():
    conv = nn.Conv2d(2, 2, 1)
    assert lnn.is_masked(lnn.masked(conv))
    inner = nn.Sequential(nn.Conv2d(2, 2, 1))
    outer = nn.ModuleDict({"x": inner, "y": inner})
    lnn.masked(outer)
    assert outer["x"] is outer["y"] and lnn.is_masked(outer["x"][0])


# --------------------------------------------------------------------------- parametrizations

LAYERS = [
    (lambda: nn.Conv2d(3, 5, 3, padding=1), (2, 3, 7, 7), lnn.MaskedConv2d),
    (lambda: nn.ConvTranspose2d(3, 5, 4, stride=2, padding=1), (2, 3, 5, 5), lnn.MaskedConvTranspose2d),
    (lambda: nn.Linear(6, 4), (3, 6), lnn.MaskedLinear),
]
PARAMS = {"spectral_norm": parametrizations.spectral_norm, "weight_norm": parametrizations.weight_norm}


def _functional(layer, x, w):
    if isinstance(layer, nn.ConvTranspose2d):
        return F.conv_transpose2d(x, w, layer.bias, layer.stride, layer.padding)
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, w, layer.bias, layer.stride, layer.padding)
    return F.linear(x, w, layer.bias)


@pytest.mark.parametrize("kind", sorted(PARAMS))
@pytest.mark.parametrize("make, xshape, mcls", LAYERS)
def test_parametrized_layer_is_converted_with_its_parametrization(kind, make, xshape, mcls):
    torch.manual_seed(1)
    layer = PARAMS[kind](make())
    ref = copy.deepcopy(layer)  # the dense reference: the same parametrized torch layer
    x = torch.randn(*xshape)
    layer.eval(), ref.eval()
    before = layer(x)
    model = lnn.masked(nn.Sequential(layer), types=lnn.MASKABLE_TYPES)
    m = model[0]
    assert isinstance(m, mcls) and parametrize.is_parametrized(m, "weight")
    assert set(m.state_dict()) == set(ref.state_dict()) | {"mask"}
    torch.testing.assert_close(m(x), before, atol=0, rtol=0)

    # prune, and give the reference the same (zeroed) raw weight
    mask = _random_mask(m.mask.shape, seed=2)
    m.set_mask(mask)
    raw = lnn.raw_weight(m)
    assert torch.count_nonzero(raw.detach()[~mask]) == 0
    ref.load_state_dict({k: v for k, v in m.state_dict().items() if k != "mask"})
    m.train(), ref.train()  # spectral norm: one power iteration per forward, on both
    cot = torch.randn_like(before)
    y = m(x)
    y_ref = _functional(ref, x, ref.weight * mask)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.effective_weight(), ref.weight * mask, atol=1e-6, rtol=1e-6)
    (y * cot).sum().backward()
    (y_ref * cot).sum().backward()
    for (name, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
        if p is raw:
            # no gradient reaches a pruned raw weight; the kept entries match the reference
            assert torch.count_nonzero(p.grad[~mask]) == 0, name
            torch.testing.assert_close(p.grad[mask], q.grad[mask], atol=1e-5, rtol=1e-4)
        else:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4)
    for k, v in ref.state_dict().items():  # spectral norm's u, v advanced alike
        torch.testing.assert_close(m.state_dict()[k], v, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_parametrized_model_prunes_trains_and_unmasks(kind):
    torch.manual_seed(3)
    model = nn.Sequential(PARAMS[kind](nn.Conv2d(3, 8, 3, padding=1)), nn.ReLU(),
                          PARAMS[kind](nn.Conv2d(8, 4, 3, padding=1)))
    lnn.masked(model)
    masks = prune.global_magnitude(model, 0.6)
    assert sorted(masks) == ["0", "2"]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(4, 3, 6, 6)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    for name, mask in masks.items():
        raw = lnn.raw_weight(model.get_submodule(name))
        assert torch.count_nonzero(raw.detach()[~mask]) == 0, name
    c = copy.deepcopy(model)
    model.eval(), c.eval()
    torch.testing.assert_close(c(x), model(x))
    y = model(x)
    plain = lnn.unmasked(model)
    assert type(plain[0]).__bases__[0] is nn.Conv2d and parametrize.is_parametrized(plain[0], "weight")
    assert "mask" not in plain[0].state_dict()
    torch.testing.assert_close(plain(x), y, atol=1e-5, rtol=1e-5)


def test_layers_masked_cannot_keep_are_refused_with_one_clear_error():
    with pytest.raises(ValueError, match=r"layer '0' \(Conv2d\) has torch's hook-based SpectralNorm"):
        lnn.masked(nn.Sequential(torch.nn.utils.spectral_norm(nn.Conv2d(2, 2, 3))))

    class Scale(nn.Module):  # changes the shape: no original of the weight's shape
        def forward(self, w):
            return w.repeat(2, 1)

    lin = nn.Linear(3, 2)
    parametrize.register_parametrization(lin, "weight", Scale(), unsafe=True)
    lin.bias = nn.Parameter(torch.zeros(4))
    with pytest.raises(ValueError, match=r"layer '0' .*no single original of the weight's shape \[4, 3\]"):
        lnn.masked(nn.Sequential(lin), types=(nn.Linear,))
    with pytest.raises(ValueError, match="torch parametrization"):
        lnn.spectral_norm(lnn.masked(parametrizations.weight_norm(nn.Conv2d(2, 2, 3))))


# --------------------------------------------------------------------------- MultiheadAttention


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = self.conv(x).flatten(2).transpose(1, 2)
        h, _ = self.attn(h, h, h, need_weights=False)
        return self.fc(h.mean(1))


def _run_suggestion(message, model):
    code = re.search(r"`([^`]+)`", message).group(1)
    return eval(code, {"lthgan": lthgan, "nn": nn, "model": model})


def test_mha_out_proj_types_are_handled_consistently():
    torch.manual_seed(4)
    model = Attn()
    x = torch.randn(2, 3, 4, 4)
    lnn.masked(model)  # convs only
    # the error for the plain Linear suggests a conversion, and that conversion works
    with pytest.raises(TypeError, match=r"'fc' \(Linear\)") as err:
        prune.global_magnitude(model, 0.5, types="conv+linear")
    _run_suggestion(str(err.value), model)
    assert lnn.is_masked(model.fc)
    # out_proj (a Linear subclass MHA reads directly) is neither converted nor selected
    assert type(model.attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    ref = copy.deepcopy(model)
    masks = prune.global_magnitude(model, 0.5, types="conv+linear")
    assert sorted(masks) == ["conv", "fc"]
    assert torch.equal(model.attn.out_proj.weight, ref.attn.out_proj.weight)
    # the masked model equals the dense reference on weight * mask
    with torch.no_grad():
        ref.conv.weight.mul_(masks["conv"])
        ref.fc.weight.mul_(masks["fc"])
    torch.testing.assert_close(model(x), lnn.unmasked(ref)(x), atol=1e-5, rtol=1e-5)
    # asking for out_proj's class explicitly: one clear ValueError, and its advice works
    odd = nn.modules.linear.NonDynamicallyQuantizableLinear
    with pytest.raises(ValueError, match="subclasses of these, such as MultiheadAttention's out_proj"):
        lnn.masked(model, types=(odd,))
    with pytest.raises(ValueError, match=r"'attn.out_proj' \(NonDynamicallyQuantizableLinear\).*exclude"):
        prune.prunable(model, types=(nn.Linear, odd))
    assert [w.name for w in prune.prunable(model, types=(nn.Linear, odd), exclude=["attn.*"])] == ["fc"]


def test_conv_plain_layer_suggestion_works():
    model = nn.Sequential(nn.Conv2d(3, 3, 3), parametrizations.spectral_norm(nn.Conv2d(3, 3, 3)))
    with pytest.raises(TypeError, match=r"'0' \(Conv2d\)") as err:
        prune.global_magnitude(model, 0.5)
    model = _run_suggestion(str(err.value), model)
    assert sorted(prune.global_magnitude(model, 0.5)) == ["0", "1"]


# --------------------------------------------------------------------------- load_state_dict


def _layers():
    torch.manual_seed(5)
    sn = lnn.spectral_norm(lnn.MaskedConv2d(3, 4, 3))
    tp = lnn.masked(parametrizations.spectral_norm(nn.Conv2d(3, 4, 3)))
    wn = lnn.masked(parametrizations.weight_norm(nn.Linear(5, 4)), types=(nn.Linear,))
    return {"plain": lnn.MaskedConv2d(3, 4, 3), "lthgan-sn": sn, "torch-sn": tp, "torch-wn": wn}


@pytest.mark.parametrize("name", ["plain", "lthgan-sn", "torch-sn", "torch-wn"])
def test_load_state_dict_rezeroes_pruned_entries(name):
    layer = _layers()[name]
    layer.set_mask(_random_mask(layer.mask.shape, seed=6))
    raw = lnn.raw_weight(layer)
    key = next(k for k, v in layer.state_dict(keep_vars=True).items() if v is raw)
    sd = {k: v.clone() for k, v in layer.state_dict().items()}
    dense = torch.randn(raw.shape)
    assert torch.count_nonzero(dense) == dense.numel()
    sd[key] = dense
    layer.load_state_dict(sd)
    assert lnn.raw_weight(layer) is raw
    torch.testing.assert_close(raw.detach(), dense * layer.mask, atol=0, rtol=0)
    assert torch.equal(raw * layer.mask, raw)
    # a loaded mask is the one applied; a partial load (no mask) uses the current mask
    new_mask = _random_mask(layer.mask.shape, seed=7)
    sd = {**sd, "mask": new_mask}
    layer.load_state_dict(sd)
    assert torch.equal(layer.mask, new_mask)
    torch.testing.assert_close(raw.detach(), dense * new_mask, atol=0, rtol=0)
    layer.load_state_dict({key: dense}, strict=False)
    torch.testing.assert_close(raw.detach(), dense * new_mask, atol=0, rtol=0)


def test_model_load_state_dict_and_unmasked_drop_the_hook():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    dense_sd = {k: v.clone() for k, v in model.state_dict().items()}
    lnn.masked(model)
    prune.global_magnitude(model, 0.7)
    masks = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("mask")}
    model.load_state_dict({**dense_sd, **masks})
    for i in (0, 2):
        w = model[i].weight
        assert torch.equal(w * model[i].mask, w)
        torch.testing.assert_close(w.detach(), dense_sd[f"{i}.weight"] * model[i].mask, atol=0, rtol=0)
    plain = lnn.unmasked(model)
    assert not plain[0]._load_state_dict_post_hooks
    plain.load_state_dict(dense_sd)  # plain layers take any weight
    assert torch.equal(plain[0].weight, dense_sd["0.weight"])
