"""lthgan.gans: architectures, init, losses, training objects, resume, evaluation pairs."""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _gan_data import TinyImageSet
from lthgan import gans
from lthgan import nn as lnn
from lthgan.gans import cyclegan as cg
from lthgan.gans.base import _LRFactor, _Sampler

RES = 16


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: one intra-op thread is faster than two and immune to oversubscribed CI cores
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(gan, **kw):
    cfg = gans.default_config(gan, "tiny")
    return dataclasses.replace(cfg, **kw) if kw else cfg


def data_for(gan, n=24, res=RES):
    if gan == "sngan":
        return TinyImageSet(n, res, seed=11)
    return (TinyImageSet(n, res, seed=12, name="A"), TinyImageSet(n + 5, res, seed=13, name="B"))


def prune_randomly(model: nn.Module, share: float, seed: int) -> None:
    """Random masks on every masked layer, applied to the raw weights."""
    g = torch.Generator().manual_seed(seed)
    for _, m in lnn.masked_modules(model):
        keep = torch.rand(m.mask.shape, generator=g) >= share
        m.set_mask(keep)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_state_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# --------------------------------------------------------------------------- architectures


def test_sngan_paper_parameter_counts():
    task = gans.build("sngan", "paper")
    G, D = task.models["G"], task.models["D"]
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in D.parameters())
    conv_g = sum(lnn.raw_weight(m).numel() for m in G.modules() if isinstance(m, nn.Conv2d))
    assert abs(n_g / 4.28e6 - 1) < 0.01, n_g
    assert abs(conv_g / 3.74e6 - 1) < 0.01, conv_g
    assert abs(n_d / 1.05e6 - 1) < 0.01, n_d
    assert (n_g, conv_g, n_d) == (4_276_739, 3_742_464, 1_053_824)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _n_prunable(model: nn.Module) -> int:
    return sum(lnn.raw_weight(m).numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def test_cyclegan_paper_parameter_counts():
    # the official counts (GAN-LTH CycleGAN/models.py, default --upsample transconv)
    task = gans.build("cyclegan", "paper")
    assert task.config.norm_affine == "official"
    for name in ("G_AB", "G_BA"):
        n = _n_params(task.models[name])
        assert abs(n / 11.38e6 - 1) < 0.01, n
        assert n == 11_383_555
        assert _n_prunable(task.models[name]) == 11_372_928
    for name in ("D_A", "D_B"):
        assert _n_params(task.models[name]) == 2_766_529
    # without affine norms (lthgan before issue 12): the same prunable weights
    G, D = cg.ResnetGenerator(norm_affine="none"), cg.PatchDiscriminator(norm_affine="none")
    assert (_n_params(G), _n_params(D), _n_prunable(G)) == (11_378_179, 2_764_737, 11_372_928)
    assert cg.patch_output_size(256, 3) == 30  # the 70x70 PatchGAN's 30x30 map at 256x256


def _affine_flags(model: nn.Module) -> list[bool]:
    return [m.affine for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]


@pytest.mark.parametrize("preset", ["tiny", "quick", "paper"])
def test_cyclegan_affine_norms_are_where_the_official_models_have_them(preset):
    cfg = gans.default_config("cyclegan", preset)
    assert cfg.norm_affine == "official"
    G = cg.ResnetGenerator(3, 3, cfg.g_filters, cfg.n_blocks, cfg.norm_affine)
    D = cg.PatchDiscriminator(3, cfg.d_filters, cfg.d_layers, cfg.norm_affine)
    # G: first conv, first down conv, each block's first conv, both up convs; D: every norm
    assert _affine_flags(G) == [True, True, False] + [True, False] * cfg.n_blocks + [True, True]
    assert _affine_flags(D) == [True] * cfg.d_layers
    # every conv has a bias, as officially
    assert all(m.bias is not None for m in list(G.modules()) + list(D.modules()) if lnn.is_masked(m))
    G0 = cg.ResnetGenerator(3, 3, cfg.g_filters, cfg.n_blocks, "none")
    D0 = cg.PatchDiscriminator(3, cfg.d_filters, cfg.d_layers, "none")
    assert _affine_flags(G0) == [False] * len(_affine_flags(G)) and not any(_affine_flags(D0))


@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_every_conv_is_masked(gan):
    task = gans.build(gan, tiny(gan))
    assert task.generators == (("G",) if gan == "sngan" else ("G_AB", "G_BA"))
    assert task.discriminators == (("D",) if gan == "sngan" else ("D_A", "D_B"))
    convs = [m for m in task.models.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    assert convs and all(lnn.is_masked(m) for m in convs)
    assert all(m.mask.dtype == torch.bool and bool(m.mask.all()) for m in convs)
    if gan == "cyclegan":
        assert any(isinstance(m, lnn.MaskedConvTranspose2d) for m in task.models["G_AB"].modules())
        assert not any(getattr(m, "sn_eps", None) is not None for m in task.models.modules())
    else:
        assert isinstance(task.models["G"].linear, lnn.MaskedLinear)
        d_layers = [m for m in task.models["D"].modules() if lnn.is_masked(m)]
        assert all(m.sn_eps is not None for m in d_layers)  # spectral norm on every D layer
        assert isinstance(task.models["D"].linear, lnn.MaskedLinear) and task.models["D"].linear.bias is None
        assert not any(getattr(m, "sn_eps", None) is not None for m in task.models["G"].modules())


def _bn(x, bn):
    return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)


def _conv(x, m):
    return F.conv2d(x, m.effective_weight(), m.bias, m.stride, m.padding)


def test_sngan_forward_matches_plain_pytorch():
    cfg = tiny("sngan")
    task = gans.build("sngan", cfg, seed=3)
    prune_randomly(task.models, 0.3, seed=4)
    G, D = task.models["G"], task.models["D"]
    G.train()
    D.eval()  # fixed spectral-norm estimate, so the reference sees the same weights
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
        z = torch.randn(5, cfg.z_dim)
        out = G(z)
        # plain reference
        h = F.linear(z, G.linear.weight * G.linear.mask, G.linear.bias).view(5, cfg.g_channels, 4, 4)
        for blk in G.blocks:
            a = F.interpolate(F.relu(_bn(h, blk.b1)), scale_factor=2)
            a = _conv(F.relu(_bn(_conv(a, blk.c1), blk.b2)), blk.c2)
            h = a + _conv(F.interpolate(h, scale_factor=2), blk.c_sc)
        ref = torch.tanh(_conv(F.relu(_bn(h, G.bn)), G.conv_out))
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        assert out.shape == (5, 3, RES, RES) and out.abs().max() <= 1

        x = torch.rand(6, 3, RES, RES) * 2 - 1
        b0, b1, b2, b3 = D.blocks
        h = _conv(F.relu(_conv(x, b0.c1)), b0.c2)
        h = F.avg_pool2d(h, 2) + _conv(F.avg_pool2d(x, 2), b0.c_sc)
        h = F.avg_pool2d(_conv(F.relu(_conv(F.relu(h), b1.c1)), b1.c2), 2) + F.avg_pool2d(_conv(h, b1.c_sc), 2)
        for b in (b2, b3):
            h = _conv(F.relu(_conv(F.relu(h), b.c1)), b.c2) + h
        ref = F.linear(F.relu(h).sum((2, 3)), D.linear.effective_weight())
        torch.testing.assert_close(D(x), ref, rtol=1e-4, atol=1e-4)


def _sn_ratio(m):
    """Power-iteration estimate of σ over the true top singular value of the masked weight."""
    with torch.no_grad():
        mat = (m.weight * m.mask).flatten(1)
        return float(m.sn_u @ (mat @ m.sn_v)) / float(torch.linalg.matrix_norm(mat, 2))


@torch.no_grad()
def test_spectral_norm_estimate_is_the_top_singular_value_after_init():
    task = gans.build("sngan", tiny("sngan"), seed=5)
    for m in task.models["D"].modules():
        if lnn.is_masked(m):
            assert 0.9 < _sn_ratio(m) <= 1 + 1e-5


def test_cyclegan_forward_matches_plain_pytorch():
    cfg = tiny("cyclegan")
    task = gans.build("cyclegan", cfg, seed=3)
    prune_randomly(task.models, 0.4, seed=8)
    G, D = task.models["G_AB"], task.models["D_B"]
    x = torch.rand(3, 3, RES, RES) * 2 - 1
    layers = list(G.model)
    with torch.no_grad():  # affine norms away from their γ = 1, β = 0 init
        for m in task.models.modules():
            if isinstance(m, nn.InstanceNorm2d) and m.affine:
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
    assert any(isinstance(m, nn.InstanceNorm2d) and m.affine for m in G.modules())

    def run(h, mods):
        for m in mods:
            if isinstance(m, lnn.MaskedConvTranspose2d):
                h = F.conv_transpose2d(h, m.weight * m.mask, m.bias, m.stride, m.padding, m.output_padding)
            elif lnn.is_masked(m):
                h = F.conv2d(h, m.weight * m.mask, m.bias, m.stride, m.padding)
            elif isinstance(m, cg.ResnetBlock):
                h = h + run(h, list(m.body))
            elif isinstance(m, nn.ReflectionPad2d):
                h = F.pad(h, m.padding, mode="reflect")
            elif isinstance(m, nn.InstanceNorm2d):
                h = F.instance_norm(h, weight=m.weight, bias=m.bias, eps=m.eps)
            elif isinstance(m, nn.ReLU):
                h = F.relu(h)
            elif isinstance(m, nn.LeakyReLU):
                h = F.leaky_relu(h, 0.2)
            elif isinstance(m, nn.Tanh):
                h = torch.tanh(h)
            else:
                raise AssertionError(type(m))
        return h

    with torch.no_grad():
        out = G(x)
        torch.testing.assert_close(out, run(x, layers), rtol=1e-4, atol=1e-5)
        assert out.shape == x.shape
        d = D(x)
        s = cg.patch_output_size(RES, cfg.d_layers)
        assert d.shape == (3, 1, s, s)
        torch.testing.assert_close(d, run(x, list(D.model)), rtol=1e-4, atol=1e-5)
        D64 = cg.PatchDiscriminator(3, 4, 3)
        assert D64(torch.randn(1, 3, 64, 64)).shape[-1] == cg.patch_output_size(64, 3) == 6


# --------------------------------------------------------------------------- init


def test_init_is_seeded_device_free_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = gans.build("sngan", tiny("sngan"), seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)
    b = gans.build("sngan", tiny("sngan"), seed=7)
    c = gans.build("sngan", tiny("sngan"), seed=8)
    assert_state_equal(snapshot(a.models), snapshot(b.models))
    w_a = a.models["G"].blocks[0].c1.weight
    assert not torch.equal(w_a, c.models["G"].blocks[0].c1.weight)


def _assert_uniform(t: torch.Tensor, bound: float, tol: float = 0.02):
    t = t.detach().double()
    assert float(t.abs().max()) <= bound
    assert abs(float(t.std()) / (bound / math.sqrt(3)) - 1) < tol
    assert abs(float(t.mean())) < 4 * bound / math.sqrt(3 * t.numel())  # 4 standard errors


@torch.no_grad()
def test_sngan_init_distribution():
    # the official init: Xavier-uniform on conv weights only; conv biases and Linear weights
    # and biases at PyTorch's defaults; BN γ ~ N(1, 0.02), β = 0
    task = gans.build("sngan", "paper", seed=1)
    G, D = task.models["G"], task.models["D"]
    for m in (G.blocks[1].c1, G.blocks[0].c_sc, D.blocks[1].c1, D.blocks[0].c1):
        w = lnn.raw_weight(m)
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        _assert_uniform(w, math.sqrt(6 / (fan_in + fan_out)), tol=0.02 if w.numel() > 1e4 else 0.2)
    # PyTorch's own layers are the reference for the default bounds, 1/sqrt(fan_in)
    ref = nn.Linear(128, 256 * 16)
    assert float(ref.weight.abs().max()) == pytest.approx(1 / math.sqrt(128), rel=1e-3)  # ≈ 0.088
    _assert_uniform(G.linear.weight, 1 / math.sqrt(128))
    assert abs(float(G.linear.weight.std()) / float(ref.weight.std()) - 1) < 0.02
    _assert_uniform(G.linear.bias, 1 / math.sqrt(128), tol=0.1)
    _assert_uniform(lnn.raw_weight(D.linear), 1 / math.sqrt(128), tol=0.3)  # 128 values
    ref_conv = nn.Conv2d(256, 256, 3)
    c1_biases = torch.cat([blk.c1.bias for blk in G.blocks] + [blk.c2.bias for blk in G.blocks])
    _assert_uniform(c1_biases, 1 / math.sqrt(256 * 9), tol=0.1)
    assert abs(float(c1_biases.std()) / float(ref_conv.bias.std()) - 1) < 0.15
    for m in (m for m in task.models.modules() if isinstance(m, nn.Conv2d)):
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(lnn.raw_weight(m))
        assert 0 < float(m.bias.abs().max()) <= 1 / math.sqrt(fan_in)
    gammas = torch.cat([m.weight.detach() for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    betas = torch.cat([m.bias.detach() for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(float(gammas.mean()) - 1) < 0.003 and abs(float(gammas.std()) / 0.02 - 1) < 0.1
    assert float(betas.abs().max()) == 0


def test_cyclegan_init_distribution():
    task = gans.build("cyclegan", "paper", seed=2)
    w = task.models["G_AB"].model[10].body[1].weight.detach()
    assert w.shape == (256, 256, 3, 3)
    assert abs(float(w.std()) / 0.02 - 1) < 0.01 and abs(float(w.mean())) < 2e-4
    assert all(float(m.bias.detach().abs().max()) == 0 for m in task.models.modules() if lnn.is_masked(m))
    # affine InstanceNorms: PyTorch's γ = 1, β = 0 (the official weights_init_normal skips them)
    norms = [m for m in task.models.modules() if isinstance(m, nn.InstanceNorm2d) and m.affine]
    assert len(norms) == 2 * (2 + 9 + 2) + 2 * 3
    assert all(bool((m.weight == 1).all()) and bool((m.bias == 0).all()) for m in norms)


@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_initial_state_save_and_reuse(gan, tmp_path):
    task = gans.build(gan, tiny(gan), seed=4)
    theta0 = task.initial_state()
    path = tmp_path / "init.pt"
    torch.save(theta0, path)
    other = gans.build(gan, tiny(gan), seed=5)
    assert not torch.equal(next(iter(other.models.parameters())), next(iter(task.models.parameters())))
    other.models.load_state_dict(torch.load(path, weights_only=True))
    assert_state_equal(snapshot(other.models), theta0)
    # the copy is detached from the live weights
    with torch.no_grad():
        next(iter(task.models.parameters())).add_(1.0)
    assert not torch.equal(next(iter(task.models.parameters())), next(iter(theta0.values())))


def test_init_weights_reseed_keeps_masks_and_refreshes_spectral_norm():
    task = gans.build("sngan", tiny("sngan"), seed=0)
    D = task.models["D"]
    prune_randomly(D, 0.5, seed=1)
    before = snapshot(D)
    gans.init_weights(D, "sngan", seed=77)
    after = snapshot(D)
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert changed
    for name, m in lnn.masked_modules(D):
        assert torch.equal(m.mask, before[f"{name}.mask"])
        assert bool((m.weight[~m.mask] == 0).all())
        assert 0.9 < _sn_ratio(m) <= 1 + 1e-5
    # the same seed reproduces the same weights
    # the same seed reproduces the same weights and biases, whatever the global RNG, which
    # it leaves untouched
    torch.manual_seed(5)
    state = torch.get_rng_state()
    gans.init_weights(D, "sngan", seed=77)
    assert torch.equal(torch.get_rng_state(), state)
    for k, v in snapshot(D).items():
        if k.endswith(("weight", "bias")):
            assert torch.equal(v, after[k]), k
    assert any(k.endswith("bias") and not torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------- configs


def test_configs_and_presets():
    for gan in gans.FAMILIES:
        for preset in gans.PRESETS:
            cfg = gans.default_config(gan, preset)
            d = dataclasses.asdict(cfg)
            back = type(cfg)(**json.loads(json.dumps(d)))
            assert back == cfg
            assert gans.build(gan, d, seed=0).config == cfg if preset == "tiny" else True
    p = gans.default_config("sngan", "paper")
    assert (p.resolution, p.z_dim, p.g_channels, p.d_channels, p.g_batch, p.d_batch, p.n_dis, p.ema,
            p.lr_g, p.lr_d, p.betas, p.iterations) == (32, 128, 256, 128, 128, 64, 5, 0.999, 2e-4, 2e-4,
                                                        (0.0, 0.9), 50_000)
    c = gans.default_config("cyclegan", "paper")
    assert (c.resolution, c.g_filters, c.n_blocks, c.batch, c.lr, c.betas, c.cycle_weight,
            c.identity_weight, c.pool_size, c.decay_start, c.ema) == (256, 64, 9, 1, 2e-4, (0.5, 0.999),
                                                                      10.0, 5.0, 50, 0.5, 0.0)


@pytest.mark.parametrize("call, exc, text", [
    (lambda: gans.default_config("stylegan", "tiny"), ValueError, "stylegan"),
    (lambda: gans.default_config("sngan", "huge"), ValueError, "huge"),
    (lambda: gans.build("sngan", dict(resolution=20, g_blocks=3)), ValueError, "resolution=20"),
    (lambda: gans.build("sngan", dict(colour=3)), ValueError, "colour"),
    (lambda: gans.build("sngan", 3), TypeError, "int"),
    (lambda: gans.build("sngan", "tiny", seed=-1), ValueError, "seed"),
    (lambda: gans.SNGANConfig(ema=1.0), ValueError, "ema"),
    (lambda: gans.SNGANConfig(n_dis=0), ValueError, "n_dis"),
    (lambda: gans.SNGANConfig(betas=(0.5,)), ValueError, "betas"),
    (lambda: gans.CycleGANConfig(resolution=16, d_layers=3), ValueError, "d_layers=3"),
    (lambda: gans.CycleGANConfig(resolution=18), ValueError, "resolution=18"),
    (lambda: gans.CycleGANConfig(decay_start=1.5), ValueError, "decay_start"),
    (lambda: gans.CycleGANConfig(norm_affine="all"), ValueError, "norm_affine"),
])
def test_bad_configs_raise_clear_errors(call, exc, text):
    with pytest.raises(exc, match=text):
        call()


def test_make_trainer_rejects_bad_inputs():
    task = gans.build("sngan", tiny("sngan"))
    with pytest.raises(ValueError, match="resolution 32"):
        gans.make_trainer(task, TinyImageSet(8, 32))
    with pytest.raises(ValueError, match="1 channels"):
        gans.make_trainer(task, TinyImageSet(8, RES, channels=1))
    with pytest.raises(ValueError, match="amp"):
        gans.make_trainer(task, data_for("sngan"), amp="fp8")
    with pytest.raises(ValueError, match="iterations"):
        gans.make_trainer(task, data_for("sngan"), iterations=0)
    with pytest.raises(ValueError, match="expected the discriminators"):
        gans.make_trainer(task, data_for("sngan"), kd_teacher=nn.ModuleDict({"D_A": nn.Linear(1, 1)}))
    ctask = gans.build("cyclegan", tiny("cyclegan"))
    with pytest.raises(TypeError, match="pair"):
        gans.make_trainer(ctask, TinyImageSet(8, RES))
    with pytest.raises(TypeError, match="GANTask"):
        gans.make_trainer(task.models, data_for("sngan"))


# --------------------------------------------------------------------------- losses & helpers


def test_losses_match_references():
    r, f = torch.randn(40, 1), torch.randn(40, 1)
    ref = torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean()
    torch.testing.assert_close(gans.hinge_d_loss(r, f), ref)
    torch.testing.assert_close(gans.hinge_g_loss(f), -f.mean())
    torch.testing.assert_close(gans.lsgan_loss(r, 1.0), F.mse_loss(r, torch.ones_like(r)))
    s, t = torch.randn(7, 1, 3, 3) * 3, torch.randn(7, 1, 3, 3) * 3
    ps, pt = torch.sigmoid(s.double()), torch.sigmoid(t.double())  # exact enough reference
    two_s = torch.stack([ps, 1 - ps], -1)
    two_t = torch.stack([pt, 1 - pt], -1)
    # the official scale: PyTorch 1.4's F.kl_div default ("mean") averages over all elements,
    # the 2 classes included, i.e. half the per-output KL
    ref = F.kl_div(two_s.log(), two_t, reduction="sum") / two_t.numel()
    torch.testing.assert_close(gans.kd_kl_loss(s, t).double(), ref, rtol=1e-5, atol=1e-6)
    per_output = F.kl_div(two_s.log(), two_t, reduction="none").sum(-1).mean()
    torch.testing.assert_close(gans.kd_kl_loss(s, t).double() * 2, per_output, rtol=1e-5, atol=1e-6)
    assert float(gans.kd_kl_loss(t, t)) == pytest.approx(0.0, abs=1e-7)


def test_sampler_visits_every_index_once_per_epoch():
    g = torch.Generator().manual_seed(0)
    s = _Sampler(10, g)
    draws = torch.cat([s.draw(4) for _ in range(5)])  # 20 = two epochs
    assert sorted(draws[:10].tolist()) == list(range(10))
    assert sorted(draws[10:].tolist()) == list(range(10))
    assert s.draw(25).numel() == 25


def test_lr_factor_is_constant_then_linear_to_zero():
    f = _LRFactor(8, 0.5)
    assert [f(i) for i in range(9)] == [1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0]
    assert all(_LRFactor(5, 1.0)(i) == 1 for i in range(5))


def test_history_buffer_semantics():
    g = torch.Generator().manual_seed(0)
    buf = gans.HistoryBuffer(3, g)
    first = torch.randn(3, 2, 4, 4)
    assert torch.equal(buf.query(first), first) and len(buf) == 3
    stored = {float(x.sum()) for x in first}
    swaps = 0
    for _ in range(200):
        new = torch.randn(1, 2, 4, 4)
        out = buf.query(new)
        key = float(out.sum())
        if torch.equal(out, new):
            assert float(new.sum()) not in stored
        else:
            assert key in stored  # an old fake came back, and the new one took its place
            stored.remove(key)
            stored.add(float(new.sum()))
            swaps += 1
        assert {float(x.sum()) for x in buf.images} == stored
    assert 70 < swaps < 130  # p = 1/2
    passthrough = gans.HistoryBuffer(0, g)
    x = torch.randn(2, 2, 4, 4)
    assert torch.equal(passthrough.query(x), x) and len(passthrough) == 0


# --------------------------------------------------------------------------- training


def _trainer(gan, seed=0, prune=0.3, data=None, config=None, **kw):
    task = gans.build(gan, config or tiny(gan), seed=seed)
    if prune:
        prune_randomly(task.models, prune, seed=seed + 100)
    return gans.make_trainer(task, data if data is not None else data_for(gan), seed=seed, **kw)


@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_step_trains_and_pruned_weights_stay_zero(gan):
    tr = _trainer(gan, iterations=50)
    assert tr.iterations == 50 and tr.iteration == 0
    before = snapshot(tr.task.models)
    logs = [tr.step() for _ in range(3)]
    assert tr.iteration == 3
    for log in logs:
        assert all(math.isfinite(v) for v in log.values())
    if gan == "sngan":
        assert set(logs[0]) == {"loss_d", "loss_g", "lr"}
    else:
        assert set(logs[0]) == {"loss_g", "loss_g_gan", "loss_cycle", "loss_identity", "loss_d_A", "loss_d_B", "lr"}
    after = snapshot(tr.task.models)
    for name in tr.task.generators + tr.task.discriminators:
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(name + ".")), name
    for name, m in lnn.masked_modules(tr.task.models):
        assert 0 < m.mask.float().mean() < 1
        assert bool((m.weight[~m.mask] == 0).all()), name
        assert torch.equal(m.mask, before[f"{name}.mask"])  # training never changes masks


def test_cyclegan_lsgan_scores_each_image_by_its_mean_patch():
    # officially D averages its patch map to one score per image before the MSE, for the
    # D loss and for G's adversarial term alike
    tr = _trainer("cyclegan", iterations=5)
    b = tr.batch
    outs = {"D_A": [], "D_B": []}
    for k in outs:
        tr.task.models[k].register_forward_hook(lambda mod, inp, out, k=k: outs[k].append(out.detach().double()))
    log = tr.step()
    (g_a, d_a), (g_b, d_b) = outs["D_A"], outs["D_B"]  # the G step's call, then the D step's
    assert g_a.shape[-1] > 1 and d_a.shape[0] == 2 * b

    def mse(out, target):
        return float((out.mean(dim=(1, 2, 3)) - target).square().mean())

    assert log["loss_g_gan"] == pytest.approx(mse(g_a, 1.0) + mse(g_b, 1.0), rel=1e-5)
    assert log["loss_d_A"] == pytest.approx(0.5 * (mse(d_a[:b], 1.0) + mse(d_a[b:], 0.0)), rel=1e-5)
    assert log["loss_d_B"] == pytest.approx(0.5 * (mse(d_b[:b], 1.0) + mse(d_b[b:], 0.0)), rel=1e-5)
    per_patch = 0.5 * (float((d_a[:b] - 1).square().mean()) + float(d_a[b:].square().mean()))
    assert abs(per_patch - log["loss_d_A"]) > 1e-3 * per_patch  # not the MSE over every patch
    torch.testing.assert_close(cg.image_scores(d_a), F.avg_pool2d(d_a, d_a.shape[2:]).view(-1))


def test_sngan_iterations_default_to_config():
    tr = gans.make_trainer(gans.build("sngan", tiny("sngan")), data_for("sngan"))
    assert tr.iterations == tiny("sngan").iterations


def test_sngan_ema_update_and_masks():
    tr = _trainer("sngan")
    G = tr.task.models["G"]
    ema0 = snapshot(tr.ema)
    assert_state_equal(ema0, snapshot(G))
    tr.step()
    beta = tr.config.ema
    ema_named = dict(tr.ema.named_parameters())
    for n, p in G.named_parameters():
        torch.testing.assert_close(ema_named[n], beta * ema0[n] + (1 - beta) * p.detach(), rtol=1e-6, atol=1e-6)
        assert not torch.equal(ema_named[n], p)
    ema_bufs = dict(tr.ema.named_buffers())
    for n, b in G.named_buffers():
        assert torch.equal(ema_bufs[n], b), n  # masks and running stats copied
    models = tr.eval_models()
    assert set(models) == {"G"} and models["G"] is tr.ema and not models["G"].training
    for (_, m), (_, e) in zip(lnn.masked_modules(G), lnn.masked_modules(tr.ema)):
        assert torch.equal(m.mask, e.mask)
        assert bool((e.weight[~e.mask] == 0).all())


def test_cyclegan_eval_models_and_lr_schedule():
    tr = _trainer("cyclegan", iterations=6)
    m = tr.eval_models()
    assert m["G_AB"] is tr.task.models["G_AB"] and m["G_BA"] is tr.task.models["G_BA"]
    lrs = [tr.step()["lr"] for _ in range(6)]
    base = tr.config.lr
    assert lrs == pytest.approx([base, base, base, base, base * 2 / 3, base / 3])
    assert tr.optimizers["D"].param_groups[0]["lr"] == pytest.approx(0.0)


def test_cyclegan_optional_ema(tmp_path):
    from lthgan import search

    cfg = tiny("cyclegan", ema=0.8)
    tr = _trainer("cyclegan", config=cfg, iterations=6)
    m = tr.task.models
    ev = tr.eval_models()
    assert set(ev) == {"G_AB", "G_BA"}
    for g in ev:
        assert ev[g] is not m[g] and not ev[g].training
        assert_state_equal(snapshot(ev[g]), snapshot(m[g]))
    ema0 = {g: snapshot(ev[g]) for g in ev}
    tr.step()
    for g in ev:
        named = dict(ev[g].named_parameters())
        for n, p in m[g].named_parameters():
            torch.testing.assert_close(named[n], 0.8 * ema0[g][n] + 0.2 * p.detach(), rtol=1e-6, atol=1e-6)
        for (_, a), (_, e) in zip(lnn.masked_modules(m[g]), lnn.masked_modules(ev[g])):
            assert torch.equal(a.mask, e.mask) and bool((e.weight[~e.mask] == 0).all())
    assert not torch.equal(next(ev["G_AB"].parameters()), next(m["G_AB"].parameters()))

    # the checkpoint carries the EMA copies, and they are what a reloaded model evaluates
    path = search.save_checkpoint(tmp_path / "c.safetensors", tr.task, tr)
    _, models, _ = search.model_from_checkpoint(path)
    for g in ev:
        assert_state_equal(snapshot(models[g]), snapshot(ev[g]))

    # resume continues the EMA bit-identically; a reset restarts it from the generators
    straight = _trainer("cyclegan", config=cfg, seed=2)
    for _ in range(5):
        straight.step()
    first = _trainer("cyclegan", config=cfg, seed=2)
    for _ in range(2):
        first.step()
    resumed = _trainer("cyclegan", config=cfg, seed=9, prune=0.6)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    for _ in range(3):
        resumed.step()
    for g in ("G_AB", "G_BA"):
        assert_state_equal(snapshot(straight.ema[g]), snapshot(resumed.ema[g]))
    resumed.reset()
    for g in ("G_AB", "G_BA"):
        assert_state_equal(snapshot(resumed.ema[g]), snapshot(resumed.task.models[g]))
    with pytest.raises(ValueError, match="ema"):
        gans.CycleGANConfig(ema=1.0)


@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_resume_is_bit_identical(gan):
    n, k = 7, 3
    straight = _trainer(gan, seed=2)
    logs_a = [straight.step() for _ in range(n)]

    first = _trainer(gan, seed=2)
    logs_b = [first.step() for _ in range(k)]
    state = roundtrip(first.state_dict())  # as a checkpoint would, weights_only-loadable
    del first
    resumed = _trainer(gan, seed=9, prune=0.6)  # different init, masks and RNG: all overwritten
    resumed.load_state_dict(state)
    assert resumed.iteration == k
    logs_b += [resumed.step() for _ in range(n - k)]

    assert logs_a == logs_b
    assert_state_equal(snapshot(straight.task.models), snapshot(resumed.task.models))
    if gan == "sngan":
        assert_state_equal(snapshot(straight.ema), snapshot(resumed.ema))
    else:
        assert len(straight.pool_A) == len(resumed.pool_A) > 0
        for a, b in zip(straight.pool_A.images + straight.pool_B.images, resumed.pool_A.images + resumed.pool_B.images):
            assert torch.equal(a, b)
    for name, opt in straight.optimizers.items():
        sa, sb = opt.state_dict()["state"], resumed.optimizers[name].state_dict()["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for key in sa[i]:
                assert torch.equal(sa[i][key], sb[i][key])


@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_reset_after_rewind(gan):
    tr = _trainer(gan, iterations=4)
    theta0 = tr.task.initial_state()
    for _ in range(3):
        tr.step()
    tr.task.models.load_state_dict(theta0)  # the rewind
    old_opts = dict(tr.optimizers)
    tr.reset()
    assert tr.iteration == 0
    for name, opt in tr.optimizers.items():
        assert opt is not old_opts[name] and len(opt.state) == 0
        assert opt.param_groups[0]["lr"] == pytest.approx(opt.defaults["lr"])
    if gan == "sngan":
        assert_state_equal(snapshot(tr.ema), snapshot(tr.task.models["G"]))
    else:
        assert len(tr.pool_A) == len(tr.pool_B) == 0
    # and it trains on as a fresh round
    log = tr.step()
    assert math.isfinite(log["loss_g"]) and tr.iteration == 1


@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_reset_for_late_rewinding_trains_from_k_to_t_on_the_dense_schedule(gan):
    T, K = 8, 5
    cfg = tiny(gan, decay_start=0.5)  # an LR that changes over the run

    def lrs(tr):
        return {n: o.param_groups[0]["lr"] for n, o in tr.optimizers.items()}

    dense = _trainer(gan, config=cfg, iterations=T)
    dense_lrs = []
    for _ in range(T):
        dense_lrs.append(lrs(dense))
        dense.step()
    assert dense_lrs[K]["G"] < dense_lrs[0]["G"]

    tr = _trainer(gan, config=cfg, iterations=T)
    for _ in range(3):
        tr.step()
    old = dict(tr.optimizers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scheduler-order or deprecation warnings
        tr.reset(start_iteration=K)
        assert tr.iteration == K
        for name, opt in tr.optimizers.items():  # fresh, as officially
            assert opt is not old[name] and len(opt.state) == 0
        seen, logged = [], []
        while tr.iteration < tr.iterations:
            seen.append(lrs(tr))
            logged.append(tr.step()["lr"])
    assert tr.iteration == T and len(seen) == T - K
    for got, want in zip(seen, dense_lrs[K:]):
        assert got == pytest.approx(want)
    assert logged == pytest.approx([d["G"] for d in dense_lrs[K:]])
    assert tr.train() == {}  # the round is over

    # a late round resumes like any other
    again = _trainer(gan, config=cfg, iterations=T)
    again.reset(start_iteration=K)
    again.step()
    resumed = _trainer(gan, config=cfg, iterations=T, seed=3)
    resumed.load_state_dict(roundtrip(again.state_dict()))
    assert resumed.iteration == K + 1 and lrs(resumed) == pytest.approx(dense_lrs[K + 1])
    # and reset() with no argument is still a round from 0
    tr.reset()
    assert tr.iteration == 0 and lrs(tr) == pytest.approx(dense_lrs[0])
    for bad in (T, T + 1, -1, 1.5):
        with pytest.raises(ValueError, match="start_iteration"):
            tr.reset(start_iteration=bad)


@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_nan_raises_training_diverged_naming_the_iteration(gan):
    tr = _trainer(gan)
    tr.step()
    tr.step()
    G = tr.task.models[tr.task.generators[0]]
    first_conv = next(m for m in G.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        idx = first_conv.mask.nonzero()[0]
        first_conv.weight[tuple(idx)] = float("nan")
    with pytest.raises(gans.TrainingDiverged, match="iteration 2") as info:
        tr.step()
    assert isinstance(info.value, RuntimeError)
    assert info.value.iteration == 2 and info.value.loss.startswith("loss_")
    assert math.isnan(info.value.value)
    assert tr.iteration == 2  # the failed step is not counted


@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_bf16_autocast_on_cpu(gan):
    tr = _trainer(gan, amp="bf16")
    before = snapshot(tr.task.models)
    for _ in range(2):
        log = tr.step()
        assert all(math.isfinite(v) for v in log.values())
    assert any(not torch.equal(v, tr.task.models.state_dict()[k]) for k, v in before.items())
    for p in tr.task.models.parameters():
        assert p.dtype == torch.float32


@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_knowledge_distillation(gan):
    dense = gans.build(gan, tiny(gan), seed=5)
    teacher = nn.ModuleDict({k: copy.deepcopy(dense.models[k]) for k in dense.discriminators})
    t_before = snapshot(teacher)
    tr = _trainer(gan, kd_teacher=teacher, kd_weight=0.5)
    assert all(not p.requires_grad for p in teacher.parameters())
    logs = [tr.step() for _ in range(2)]
    assert all(log["loss_kd"] > 0 and math.isfinite(log["loss_kd"]) for log in logs)
    assert_state_equal(snapshot(teacher), t_before)  # frozen, spectral-norm vectors included
    # KD changes the D updates
    plain = _trainer(gan)
    plain.step()
    plain.step()
    d = tr.task.discriminators[0]
    assert any(not torch.equal(a, b) for a, b in zip(tr.task.models[d].parameters(), plain.task.models[d].parameters()))


def test_state_dict_contents():
    tr = _trainer("cyclegan")
    tr.step()
    sd = tr.state_dict()
    assert sd["family"] == "cyclegan" and sd["iteration"] == 1 and sd["world_size"] == 1
    assert set(sd["optimizers"]) == set(sd["schedulers"]) == {"G", "D"}
    assert len(sd["local"]) == 1 and {"gen", "noise", "sampler_A", "sampler_B", "pool_A", "pool_B"} <= set(sd["local"][0])
    other = _trainer("sngan")
    with pytest.raises(ValueError, match="cyclegan"):
        other.load_state_dict(sd)


# --------------------------------------------------------------------------- evaluation pairs


def test_sngan_eval_pairs():
    tr = _trainer("sngan")
    tr.step()
    data = data_for("sngan")
    pairs = gans.eval_pairs(tr.task, tr.eval_models(), data, n_samples=10, seed=3)
    assert len(pairs) == 1
    p = pairs[0]
    assert p.direction == "G" and p.source_labels is None
    assert p.fake.shape == (10, 3, RES, RES) and p.fake.dtype == torch.float32
    assert -1 <= float(p.fake.min()) and float(p.fake.max()) <= 1
    assert torch.equal(p.real, data.all())
    again = gans.eval_pairs(tr.task, tr.eval_models(), data, n_samples=10, seed=3)[0]
    other = gans.eval_pairs(tr.task, tr.eval_models(), data, n_samples=10, seed=4)[0]
    assert torch.equal(again.fake, p.fake) and not torch.equal(other.fake, p.fake)
    with torch.no_grad():
        z = torch.randn(10, tr.config.z_dim, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(p.fake, tr.ema(z))
    G = tr.task.models["G"]
    assert G.training  # untouched by evaluation of the EMA
    with pytest.raises(ValueError, match="n_samples"):
        gans.eval_pairs(tr.task, tr.eval_models(), data, n_samples=0)


def test_cyclegan_eval_pairs():
    tr = _trainer("cyclegan")
    A, B = TinyImageSet(7, RES, seed=20), TinyImageSet(9, RES, seed=21)
    pairs = gans.eval_pairs(tr.task, tr.eval_models(), (A, B), n_samples=100)
    a2b, b2a = pairs
    assert (a2b.direction, b2a.direction) == ("A2B", "B2A")
    assert a2b.fake.shape == (7, 3, RES, RES) and b2a.fake.shape == (9, 3, RES, RES)
    assert torch.equal(a2b.real, B.all()) and torch.equal(b2a.real, A.all())
    assert torch.equal(a2b.source_labels, A.labels) and torch.equal(b2a.source_labels, B.labels)
    with torch.no_grad():
        torch.testing.assert_close(a2b.fake, tr.task.models["G_AB"](A.all()))
    capped = gans.eval_pairs(tr.task, tr.eval_models(), (A, B), n_samples=4)
    assert capped[0].fake.shape[0] == capped[1].fake.shape[0] == 4
    assert torch.equal(capped[0].fake, a2b.fake[:4])
    assert tr.task.models["G_AB"].training


def test_config_from_dict_reads_configs_saved_before_a_field_existed():
    """A CycleGAN config saved before norm_affine existed describes the non-affine model it was
    trained as, so its weights load into the model rebuilt from it."""
    old = dataclasses.asdict(gans.default_config("cyclegan", "tiny"))
    old.pop("norm_affine")
    old["betas"] = list(old["betas"])  # as read back from JSON
    cfg = gans.config_from_dict("cyclegan", old)
    assert cfg.norm_affine == "none" and cfg.betas == (0.5, 0.999)
    saved = gans.build("cyclegan", dataclasses.replace(cfg), seed=3).models.state_dict()
    gans.build("cyclegan", gans.config_from_dict("cyclegan", old), seed=0).models.load_state_dict(saved)
    with pytest.raises(RuntimeError):  # the current default (official affine norms) does not fit them
        gans.build("cyclegan", "tiny").models.load_state_dict(saved)
    with pytest.raises(ValueError, match="unknown CycleGANConfig field"):
        gans.config_from_dict("cyclegan", dict(old, colour=1))
