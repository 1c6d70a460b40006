"""lthgan.channels: channel groups of every family, scores and global selection, the narrow
model against the masked-channel model, tied channels, counts and the standalone export."""
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import lthgan.nn as lnn
from lthgan import channels as ch
from lthgan import gans
from lthgan.channels import ChannelGroup, Slice

pytestmark = pytest.mark.filterwarnings("error")

FAMILIES = ("sngan", "cyclegan", "dcgan")


def _generators(gan, config, seed=0):
    """``{name: (generator, its groups)}`` of a freshly built task."""
    task = gans.build(gan, config, seed=seed)
    groups = gans.family(gan).channel_groups(task.config)
    assert set(groups) == set(task.generators)
    return {n: (task.models[n], groups[n]) for n in task.generators}, task.config


def _example(gan, config, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    if gan == "cyclegan":
        return torch.randn(n, config.channels, config.resolution, config.resolution, generator=g,
                           dtype=torch.float64)
    return torch.randn(n, config.z_dim, generator=g, dtype=torch.float64)


@torch.no_grad()
def _randomise(model, seed):
    """Random weights (not an init), random unstructured masks, and random norm statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = lnn.raw_weight(m)
            fan_in = w[0].numel() if not isinstance(m, nn.ConvTranspose2d) else w[:, 0].numel()
            w.copy_(torch.randn(w.shape, generator=g) / math.sqrt(fan_in))
            if lnn.is_masked(m):
                m.set_mask(torch.rand(w.shape, generator=g) > 0.3)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
            if m.weight is not None:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def _random_kept(groups, seed, share=0.5):
    g = torch.Generator().manual_seed(seed)
    scores = {gr.name: torch.rand(gr.size, generator=g) for gr in groups}
    cap = sum(gr.size - 1 for gr in groups if gr.prunable)
    return ch.select(scores, groups, int(cap * share))


# --------------------------------------------------------------------------- the declarations


@pytest.mark.parametrize("gan", FAMILIES)
@pytest.mark.parametrize("preset", ["tiny", "quick", "paper"])
def test_groups_cover_every_layer_once(gan, preset):
    gens, _ = _generators(gan, preset)
    for G, groups in gens.values():
        ch.check_groups(G, groups, complete=True)  # every output and norm in exactly one group
        ins = {s.module for g in groups for s in g.slices if s.kind == "in"}
        layers = [n for n, m in G.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
        assert sorted(set(layers) - ins) == [layers[0]]  # only the layer reading the model input
        assert [g.name for g in groups if not g.prunable] == ["rgb"]
        rgb = next(g for g in groups if g.name == "rgb")
        assert rgb.outs[0].module == layers[-1] and rgb.size == 3


def test_cyclegan_groups_without_affine_norms_score_by_l1():
    cfg = gans.default_config("cyclegan", "tiny")
    cfg.norm_affine = "none"
    gens, _ = _generators("cyclegan", cfg)
    for G, groups in gens.values():
        ch.check_groups(G, groups, complete=True)
        assert all(g.score_norm is None for g in groups)
    gens, _ = _generators("cyclegan", "tiny")
    scored = {g.name: g.score_norm for g in gens["G_AB"][1]}
    assert scored["stream"] is None and scored["conv_in"] == "model.2" and scored["down0"] == "model.5"
    assert scored["block0.inner"] == "model.10.body.2" and scored["up0"] == "model.12"


def test_paper_groups():
    names = lambda gs: {g.name: (g.size, g.prunable) for g in gs}  # noqa: E731
    sn = gans.family("sngan").channel_groups(gans.default_config("sngan", "paper"))["G"]
    assert names(sn) == {**{f"stream{i}": (256, True) for i in range(4)},
                         **{f"block{i}.inner": (256, True) for i in range(3)}, "rgb": (3, False)}
    assert sn[0].slices[0] == Slice("linear", "out", repeat=16)
    assert {s.module for s in sn[2].outs} == {"blocks.0.c2", "blocks.0.c_sc"}
    cg = gans.family("cyclegan").channel_groups(gans.default_config("cyclegan", "paper"))
    assert set(cg) == {"G_AB", "G_BA"}
    assert names(cg["G_AB"]) == {"conv_in": (64, True), "down0": (128, True), "stream": (256, True),
                                 **{f"block{i}.inner": (256, True) for i in range(9)},
                                 "up0": (128, True), "up1": (64, True), "rgb": (3, False)}
    stream = next(g for g in cg["G_AB"] if g.name == "stream")
    assert len(stream.outs) == 10  # the second down conv and the 9 blocks' second convs
    dc = gans.family("dcgan").channel_groups(gans.default_config("dcgan", "paper"))["G"]
    assert names(dc) == {"up0": (256, True), "up1": (128, True), "up2": (64, True), "rgb": (3, False)}


def test_family_field_defaults_to_none():
    fam = gans.family("sngan")
    import dataclasses

    other = dataclasses.replace(fam, name="x", channel_groups=None)
    assert other.channel_groups is None and callable(fam.channel_groups)


# --------------------------------------------------------------------------- the key test


CASES = [(gan, preset) for gan in FAMILIES for preset in ("tiny", "quick")] + [("cyclegan", "tiny-none")]


@pytest.mark.parametrize("gan,preset", CASES)
def test_sliced_model_equals_masked_channel_model(gan, preset):
    cfg = gans.default_config(gan, preset.split("-")[0])
    if preset.endswith("-none"):
        cfg.norm_affine = "none"
    gens, cfg = _generators(gan, cfg)
    x = _example(gan, cfg, 3)
    for i, (G, groups) in enumerate(gens.values()):
        G = _randomise(G.double(), seed=10 + i)
        for share in (0.5, 1.0):
            kept = _random_kept(groups, seed=20 + i, share=share)
            slim = ch.slice_model(G, groups, kept).eval()
            wide = ch.mask_channels(G, groups, kept).eval()
            with torch.no_grad():
                got, want, full = slim(x), wide(x), G.eval()(x)
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
            assert not torch.allclose(got, full)  # the removed channels did matter
            ch.check_groups(slim, [_resized(g, kept) for g in groups], complete=True)
            assert ch.count(slim, x)[0] < ch.count(G, x)[0]


@pytest.mark.parametrize("gan", FAMILIES)
def test_masked_channels_carry_exact_zeros(gan):
    gens, cfg = _generators(gan, "tiny")
    G, groups = next(iter(gens.values()))
    _randomise(G, 11)
    kept = _random_kept(groups, seed=12)
    wide = ch.mask_channels(G, groups, kept).eval()
    seen = {}
    for g in groups:
        drop = sorted(set(range(g.size)) - set(kept[g.name].tolist()))
        for s in g.slices:
            m = wide.get_submodule(s.module)
            if s.kind != "in" and drop:  # what the producers and norms put out on a removed channel
                m.register_forward_hook(lambda m, i, o, d=drop, r=s.repeat, k=s.module: seen.__setitem__(
                    k, o.reshape(o.shape[0], -1, r, *o.shape[2:])[:, d]))
            if s.kind == "norm":
                assert all(t is None or not t[drop].any() for t in (m.weight, m.bias))
            else:
                dim = int((s.kind == "out") == isinstance(m, nn.ConvTranspose2d))
                rows = [c * s.repeat + j for c in drop for j in range(s.repeat)]
                assert not m.mask.index_select(dim, torch.tensor(rows, dtype=torch.long)).any()
    with torch.no_grad():
        wide(_example(gan, cfg, 2).float())
    assert seen and all(t.numel() > 0 and not t.any() for t in seen.values())


def _resized(g, kept):
    return ChannelGroup(g.name, kept[g.name].numel(), g.slices, g.score_norm, g.prunable)


def test_slice_leaves_the_model_and_other_modules_alone():
    gens, cfg = _generators("sngan", "tiny")
    G, groups = gens["G"]
    before = {k: v.clone() for k, v in G.state_dict().items()}
    kept = _random_kept(groups, seed=1)
    slim = ch.slice_model(G.train(), groups, kept)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert slim.training and isinstance(slim.linear, lnn.MaskedLinear)
    assert slim.blocks[0].c1.in_channels == kept["stream0"].numel() == slim.blocks[0].b1.num_features
    assert slim.linear.out_features == kept["stream0"].numel() * 16  # 4x4 rows per channel
    assert slim(torch.randn(2, cfg.z_dim)).shape == (2, 3, 16, 16)  # runs at the new widths
    assert all(p.requires_grad for p in slim.parameters())


# --------------------------------------------------------------------------- tied channels


def test_tied_channels_stay_consistent():
    gens, _ = _generators("cyclegan", "quick")
    G, groups = gens["G_AB"]
    kept = ch.select(ch.scores(_randomise(G, 3), groups), groups, 300)
    slim = ch.slice_model(G, groups, kept)
    for g in groups:  # every tensor of a group has the group's kept size
        n = kept[g.name].numel()
        for s in g.slices:
            m = slim.get_submodule(s.module)
            if s.kind == "norm":
                assert m.num_features == n and (m.weight is None or m.weight.shape == (n,))
            else:
                dim = int((s.kind == "out") == isinstance(m, nn.ConvTranspose2d))
                assert m.weight.shape[dim] == n * s.repeat and m.mask.shape == m.weight.shape
    idx = kept["stream"]
    assert 0 < idx.numel() < 64
    for b in range(3):  # one index set for the stream in every block
        body, old = slim.model[10 + b].body, G.model[10 + b].body
        assert torch.equal(body[5].weight, old[5].weight[idx][:, kept[f"block{b}.inner"]])
        assert torch.equal(body[5].bias, old[5].bias[idx])
        assert torch.equal(body[1].weight, old[1].weight[kept[f"block{b}.inner"]][:, idx])
    assert torch.equal(slim.model[7].weight, G.model[7].weight[idx][:, kept["down0"]])
    assert torch.equal(slim.model[13].weight, G.model[13].weight[idx][:, kept["up0"]])


def test_sngan_shortcut_tied_to_main_path_and_linear_rows():
    gens, _ = _generators("sngan", "tiny")
    G, groups = gens["G"]
    kept = _random_kept(groups, seed=4)
    slim = ch.slice_model(G, groups, kept)
    s1, s0 = kept["stream1"], kept["stream0"]
    assert torch.equal(slim.blocks[0].c_sc.weight, G.blocks[0].c_sc.weight[s1][:, s0])
    assert torch.equal(slim.blocks[0].c2.bias, G.blocks[0].c2.bias[s1])
    rows = (s0[:, None] * 16 + torch.arange(16)).flatten()
    assert torch.equal(slim.linear.weight, G.linear.weight[rows])


# --------------------------------------------------------------------------- scores


def test_scores_are_gamma_or_filter_l1():
    gens, _ = _generators("cyclegan", "tiny")
    G, groups = gens["G_AB"]
    _randomise(G, 5)
    s = ch.scores(G, groups)
    assert torch.equal(s["conv_in"], G.model[2].weight.detach().abs())
    producers = [G.model[7]] + [G.model[10].body[5]]
    l1 = sum((m.weight * m.mask).abs().flatten(1).sum(1) for m in producers)
    torch.testing.assert_close(s["stream"], l1.detach())
    up = G.model[11]  # a transposed conv: outputs on dim 1
    gens2, _ = _generators("sngan", "tiny")
    G2, groups2 = gens2["G"]
    _randomise(G2, 6)
    lin = ChannelGroup("x", 8, (Slice("linear", "out", repeat=16),), score_norm=None)
    want = (G2.linear.weight * G2.linear.mask).abs().reshape(8, -1).sum(1)
    torch.testing.assert_close(ch.scores(G2, [lin])["x"], want.detach())
    up_group = ChannelGroup("u", 16, (Slice("model.11", "out"),), score_norm=None)
    want_up = (up.weight * up.mask).abs().transpose(0, 1).flatten(1).sum(1)
    torch.testing.assert_close(ch.scores(G, [up_group])["u"], want_up.detach())


def test_scores_refuse_a_norm_without_scale():
    cfg = gans.default_config("cyclegan", "tiny")
    cfg.norm_affine = "none"
    gens, _ = _generators("cyclegan", cfg)
    G, _ = gens["G_AB"]
    bad = ChannelGroup("b", 8, (Slice("model.1", "out"), Slice("model.2", "norm")), score_norm="model.2")
    with pytest.raises(ValueError, match="no affine scale"):
        ch.scores(G, [bad])


# --------------------------------------------------------------------------- select


def _toy_groups():
    return [ChannelGroup("a", 4, (Slice("a", "out"), Slice("na", "norm")), score_norm="na"),
            ChannelGroup("b", 3, (Slice("b", "out"), Slice("nb", "norm")), score_norm="nb"),
            ChannelGroup("rgb", 3, (Slice("c", "out"),), score_norm=None, prunable=False)]


def test_select_prunes_globally_lowest_first():
    groups = _toy_groups()
    sc = {"a": torch.tensor([0.5, 0.1, 0.9, 0.3]), "b": torch.tensor([0.2, 0.8, 0.05]),
          "rgb": torch.tensor([0.0, 0.0, 0.0])}
    kept = ch.select(sc, groups, 3)
    assert kept["a"].tolist() == [0, 2, 3] and kept["b"].tolist() == [1]
    assert kept["rgb"].tolist() == [0, 1, 2]  # never pruned, whatever its score
    assert all(v.dtype == torch.long for v in kept.values())
    assert ch.channel_share(groups, kept) == pytest.approx(3 / 7)
    assert ch.select(sc, groups, 0)["a"].tolist() == [0, 1, 2, 3]


def test_select_keeps_keep_min_per_group():
    groups = _toy_groups()
    sc = {"a": torch.tensor([0.5, 0.6, 0.9, 0.7]), "b": torch.tensor([0.01, 0.02, 0.03]), "rgb": torch.ones(3)}
    kept = ch.select(sc, groups, 3, keep_min=1)
    assert kept["b"].tolist() == [2] and kept["a"].tolist() == [1, 2, 3]  # b at its floor: a's lowest goes
    kept = ch.select(sc, groups, 2, keep_min=2)
    assert kept["b"].tolist() == [1, 2] and kept["a"].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="n_prune=4 exceeds the 3 channels"):
        ch.select(sc, groups, 4, keep_min=2)


def test_select_ties_go_by_group_order_then_index():
    groups = _toy_groups()
    sc = {"a": torch.full((4,), 0.5), "b": torch.full((3,), 0.5), "rgb": torch.ones(3)}
    assert ch.select(sc, groups, 2)["a"].tolist() == [2, 3]
    kept = ch.select(sc, groups, 4)
    assert kept["a"].tolist() == [3] and kept["b"].tolist() == [1, 2]
    rev = [groups[1], groups[0], groups[2]]
    kept = ch.select(sc, rev, 4)
    assert kept["b"].tolist() == [2] and kept["a"].tolist() == [2, 3]


def test_select_puts_l1_groups_on_the_gamma_scale():
    groups = [ChannelGroup("g", 4, (Slice("a", "out"), Slice("na", "norm")), score_norm="na"),
              ChannelGroup("l1", 4, (Slice("b", "out"),), score_norm=None)]
    # values exact in binary, so the ties below are exact
    gam = torch.tensor([0.25, 0.5, 0.75, 1.0])  # (lower) median 0.5
    l1 = torch.tensor([12.0, 4.0, 20.0, 8.0])  # median 8: on the gamma scale 0.75, 0.25, 1.25, 0.5
    kept = ch.select({"g": gam, "l1": l1}, groups, 3)
    # g0 0.25 ties l1#1 0.25 (group order first), then g1 0.5 (ties l1#3, which stays)
    assert kept["g"].tolist() == [2, 3] and kept["l1"].tolist() == [0, 2, 3]
    for factor in (2.0 ** -10, 2.0 ** 13):  # the L1 group's own scale does not matter
        assert all(torch.equal(a, b) for a, b in zip(
            kept.values(), ch.select({"g": gam, "l1": l1 * factor}, groups, 3).values()))
    # on raw scores every L1 channel would outrank every gamma and none would go
    assert ch.select({"g": gam, "l1": l1 * 2.0 ** 13}, groups, 4)["l1"].tolist() == [0, 2]
    # all L1-scored: each group relative to its own median (l1: 1.5, 0.5, 2.5, 1; l2: 1, 3)
    both = [groups[1], ChannelGroup("l2", 2, (Slice("c", "out"),), score_norm=None)]
    k = ch.select({"l1": l1, "l2": torch.tensor([1000.0, 3000.0])}, both, 3)
    assert k["l1"].tolist() == [0, 2] and k["l2"].tolist() == [1]


def test_select_rejects_bad_input():
    groups = _toy_groups()
    sc = {"a": torch.rand(4), "b": torch.rand(3), "rgb": torch.rand(3)}
    for bad, match in ((-1, "n_prune"), (1.5, "n_prune"), (True, "n_prune")):
        with pytest.raises(ValueError, match=match):
            ch.select(sc, groups, bad)
    with pytest.raises(ValueError, match="keep_min"):
        ch.select(sc, groups, 1, keep_min=0)
    with pytest.raises(ValueError, match=r"scores\['b'\] must be a tensor of shape \(3,\)"):
        ch.select({**sc, "b": torch.rand(4)}, groups, 1)
    with pytest.raises(ValueError, match="non-finite"):
        ch.select({**sc, "a": torch.tensor([0.1, float("nan"), 0.2, 0.3])}, groups, 1)


# --------------------------------------------------------------------------- bad input


def test_bad_groups_and_kept_are_named():
    gens, _ = _generators("sngan", "tiny")
    G, groups = gens["G"]
    kept = _random_kept(groups, 0)
    with pytest.raises(ValueError, match="kept lacks channel group 'rgb'"):
        ch.slice_model(G, groups, {k: v for k, v in kept.items() if k != "rgb"})
    with pytest.raises(ValueError, match=r"kept\['stream0'\] must be sorted distinct"):
        ch.slice_model(G, groups, {**kept, "stream0": torch.tensor([3, 1])})
    with pytest.raises(ValueError, match=r"in \[0, 8\)"):
        ch.mask_channels(G, groups, {**kept, "stream0": torch.tensor([1, 8])})
    with pytest.raises(ValueError, match="'rgb' is not prunable"):
        ch.slice_model(G, groups, {**kept, "rgb": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match="LongTensor"):
        ch.slice_model(G, groups, {**kept, "stream0": torch.tensor([0.0, 1.0])})
    with pytest.raises(ValueError, match="unknown channel groups"):
        ch.slice_model(G, groups, {**kept, "nope": torch.tensor([0])})
    wrong = ChannelGroup("w", 5, (Slice("blocks.0.c1", "out"),), score_norm=None)
    with pytest.raises(ValueError, match=r"has 5 channels but blocks.0.c1 \(out\) has 8 features"):
        ch.check_groups(G, [wrong])
    with pytest.raises(TypeError, match="blocks.0.b1 is a BatchNorm2d"):
        ch.check_groups(G, [ChannelGroup("t", 8, (Slice("blocks.0.b1", "out"),), score_norm=None)])
    with pytest.raises(ValueError, match="no module 'blocks.9'"):
        ch.check_groups(G, [ChannelGroup("t", 8, (Slice("blocks.9", "out"),), score_norm=None)])
    with pytest.raises(ValueError, match="in groups 'stream0' and 'again'"):
        ch.check_groups(G, groups + [ChannelGroup("again", 8, (Slice("linear", "out", 16),), None)])
    with pytest.raises(ValueError, match="belongs to no channel group"):
        ch.check_groups(G, groups[:-1], complete=True)
    with pytest.raises(ValueError, match="spectral norm"):
        D = gans.build("sngan", "tiny").models["D"]
        ch.check_groups(D, [ChannelGroup("d", 8, (Slice("blocks.0.c1", "out"),), None)])
    with pytest.raises(ValueError, match="Slice.kind"):
        Slice("x", "output")
    with pytest.raises(ValueError, match="no 'out' slice"):
        ChannelGroup("x", 2, (Slice("x", "in"),), None)
    with pytest.raises(ValueError, match="score_norm 'n' is not one of its norm slices"):
        ChannelGroup("x", 2, (Slice("x", "out"),), "n")


# --------------------------------------------------------------------------- counts


def test_count_matches_a_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
                          nn.Conv2d(2, 6, 1, groups=2), nn.Flatten(), nn.Linear(6 * 100, 5))
    params, macs = ch.count(model, torch.randn(3, 3, 5, 5))
    assert params == (4 * 27 + 4) + (4 * 2 * 9 + 2) + (6 * 1 + 6) + (600 * 5 + 5)
    # conv: 4x5x5 outputs x 3 inputs x 9; transposed: 2x10x10 outputs x 4 x 9; grouped 1x1:
    # 6x10x10 outputs x 1 input per group; linear: 5 outputs x 600 inputs
    assert macs == 100 * 27 + 200 * 36 + 600 * 1 + 5 * 600
    assert model.training  # restored


def test_count_sngan_paper_against_the_paper():
    cfg = gans.default_config("sngan", "paper")
    G = gans.build("sngan", cfg).models["G"].to("meta")
    params, macs = ch.count(G, torch.empty(2, 128, device="meta"))
    assert params == 4_276_739 and round(params / 1e6, 2) == 4.28  # the paper: 4.28 M
    c = 256
    main = sum(2 * c * (2 * r) ** 2 * c * 9 for r in (4, 8, 16))
    shortcut = sum(c * r * r * c for r in (4, 8, 16))  # 1x1 before the upsampling (lthgan)
    assert macs == 128 * c * 16 + main + shortcut + 3 * 32 * 32 * c * 9
    # the paper's ~1.68 GMAC counts the shortcut after the upsampling, at 4x the positions
    assert round((macs + 3 * shortcut) / 1e9, 2) == 1.68 and round(macs / 1e9, 3) == 1.615


def test_count_cyclegan_paper_against_gan_compression():
    cfg = gans.default_config("cyclegan", "paper")
    G = gans.build("cyclegan", cfg).models["G_AB"].to("meta")
    params, macs = ch.count(G, torch.empty(1, 3, 256, 256, device="meta"))
    assert params == 11_383_555
    assert round(macs / 1e9, 1) == 56.8  # GAN Compression's figure for this generator


def test_count_of_a_sliced_generator_by_hand():
    cfg = gans.default_config("dcgan", "tiny")  # 16x16: z16 -> 16@4x4 -> 8@8x8 -> 3@16x16
    G, groups = _generators("dcgan", cfg)[0]["G"]
    kept = {"up0": torch.arange(0, 16, 2), "up1": torch.tensor([1, 5, 7]), "rgb": torch.arange(3)}
    slim = ch.slice_model(G, groups, kept)
    params, macs = ch.count(slim, torch.randn(4, 16))
    assert params == 16 * 8 * 16 + 2 * 8 + 8 * 3 * 16 + 2 * 3 + 3 * 3 * 16
    assert macs == 8 * 16 * 16 * 16 + 3 * 64 * 8 * 16 + 3 * 256 * 3 * 16
    assert ch.channel_share(groups, kept) == pytest.approx((8 + 5) / 24)


def test_latency_ms():
    G, _ = _generators("dcgan", "tiny")[0]["G"]
    G.train()
    t = ch.latency_ms(G, torch.randn(2, 16), repeats=3, warmup=1)
    assert isinstance(t, float) and 0 < t < 10_000 and G.training
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        ch.latency_ms(G, torch.randn(2, 16), repeats=0)
    with pytest.raises(ValueError, match="batch dimension"):
        ch.latency_ms(G, torch.tensor(1.0))


# --------------------------------------------------------------------------- export

_LOADER = textwrap.dedent("""
    import sys
    sys.modules["lthgan"] = None  # import lthgan fails from here on
    try:
        import lthgan  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("lthgan was importable")
    import torch
    for name, fmt in [{cases}]:
        x = torch.load(f"{{name}}.in.pt")
        m = torch.export.load(f"{{name}}.bin").module() if fmt == "torch.export" \\
            else torch.jit.load(f"{{name}}.bin")
        with torch.no_grad():
            torch.save(m(x), f"{{name}}.out.pt")
""")


def test_exported_generators_run_without_lthgan(tmp_path):
    cases, want = [], {}
    for gan in FAMILIES:
        gens, cfg = _generators(gan, "tiny")
        G, groups = next(iter(gens.values()))
        G = _randomise(G, 7).eval()
        slim = ch.slice_model(G, groups, _random_kept(groups, seed=8))
        x = _example(gan, cfg, 5).float()
        forced = "torchscript" if gan == "dcgan" else "auto"  # the fallback path, too
        fmt = ch.export(slim, x[:1], tmp_path / f"{gan}.bin", format=forced)
        assert fmt == ("torchscript" if gan == "dcgan" else "torch.export")
        assert ch.exported_format(tmp_path / f"{gan}.bin") == fmt
        torch.save(x, tmp_path / f"{gan}.in.pt")
        with torch.no_grad():
            want[gan] = slim(x)
        torch.testing.assert_close(ch.load_exported(tmp_path / f"{gan}.bin")(x), want[gan])
        cases.append(f"({gan!r}, {fmt!r})")
    script = _LOADER.format(cases=", ".join(cases))
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env={"OMP_NUM_THREADS": "1", "PATH": ""}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for gan in FAMILIES:  # batch 5 though exported from a batch of 1: the batch is dynamic
        torch.testing.assert_close(torch.load(tmp_path / f"{gan}.out.pt"), want[gan], rtol=1e-5, atol=1e-6)


def test_export_bakes_in_the_masks_and_leaves_the_model_alone(tmp_path):
    G, _ = _generators("sngan", "tiny")[0]["G"]
    G = _randomise(G, 9).eval()
    x = torch.randn(3, 16)
    assert ch.export(G, x, tmp_path / "g.pt2") == "torch.export"
    assert isinstance(G.linear, lnn.MaskedLinear) and not G.linear.mask.all()
    E = ch.load_exported(tmp_path / "g.pt2")
    with torch.no_grad():
        torch.testing.assert_close(E(x), G(x))
    assert ch.latency_ms(E, x, repeats=2, warmup=0) > 0  # the exported program can be timed
    with pytest.raises(ValueError, match="count the model, not an exported program"):
        ch.count(E, x)
    with pytest.raises(ValueError, match="format must be"):
        ch.export(G, x, tmp_path / "h.pt2", format="onnx")
    (tmp_path / "junk").write_text("not a model")
    with pytest.raises(ValueError, match="not a file written by"):
        ch.load_exported(tmp_path / "junk")
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("other/readme.txt", "a zip of something else")
    with pytest.raises(ValueError, match="neither a torch.export nor a TorchScript file"):
        ch.load_exported(tmp_path / "other.zip")


class _FixedBatch(nn.Module):
    """A model hard-wired to a batch of 2: torch.export refuses a dynamic batch, jit.trace not."""

    def __init__(self):
        super().__init__()
        self.lin = lnn.MaskedLinear(4, 3)

    def forward(self, x):
        return self.lin(x.reshape(2, 4))


def test_export_falls_back_to_torchscript_and_says_why(tmp_path):
    m = _FixedBatch()
    x = torch.randn(2, 4)
    with pytest.warns(RuntimeWarning, match="torch.export could not export the model"):
        assert ch.export(m, x, tmp_path / "m.pt") == "torchscript"
    assert ch.exported_format(tmp_path / "m.pt") == "torchscript"
    with torch.no_grad():
        torch.testing.assert_close(ch.load_exported(tmp_path / "m.pt")(x), m(x))
    with pytest.raises(Exception):  # asked for torch.export only: its error, no fallback
        ch.export(m, x, tmp_path / "n.pt2", format="torch.export")
