"""lthgan.prune: selection, magnitude/random masks, the IMP schedule, reports, optimizers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import lthgan.nn as lnn
from lthgan import prune
from lthgan.prune import (
    global_magnitude,
    imp_schedule,
    layerwise_magnitude,
    prunable,
    random_masks,
    sparsity_report,
    target_zeros,
)


class Net(nn.Module):
    """Linear -> ConvT -> BN -> conv (+1x1 shortcut) -> head; masked layers from lthgan.nn."""

    def __init__(self, ch: int = 8, sn: bool = False):
        super().__init__()
        self.ch = ch
        self.fc = lnn.MaskedLinear(6, ch * 2 * 2)
        self.up = lnn.MaskedConvTranspose2d(ch, ch, 4, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(ch)
        self.conv = lnn.MaskedConv2d(ch, 5, 3, padding=1)
        self.short = lnn.MaskedConv2d(ch, 5, 1, bias=False)
        self.head = nn.Linear(5, 2)
        if sn:
            lnn.spectral_norm(self.conv)

    def forward(self, z):
        x = self.fc(z).view(-1, self.ch, 2, 2)
        x = torch.relu(self.bn(self.up(x)))
        x = self.conv(x) + self.short(x)
        return self.head(x.mean((2, 3)))


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return Net(**kw)


def randomize_(model, gen, kind="normal"):
    """Fresh non-zero random values for every prunable weight."""
    with torch.no_grad():
        for pw in prunable(model, types="conv+linear", exclude=["head"]):
            w = pw.weight
            if kind == "normal":
                w.copy_(torch.randn(w.shape, generator=gen))
            elif kind == "ties":  # a handful of distinct magnitudes, both signs
                w.copy_(torch.randint(-3, 4, w.shape, generator=gen).float())
            else:
                raise AssertionError(kind)


def reference_keep(weights, masks, keep):
    """Plain reference of the documented rule: the `keep` largest |w| among surviving entries;
    ties go to the earlier tensor, then the lower flat index."""
    mag = np.concatenate([w.detach().abs().reshape(-1).double().numpy() for w in weights])
    alive = np.concatenate([m.reshape(-1).numpy() for m in masks])
    tensor_idx = np.concatenate([np.full(w.numel(), i) for i, w in enumerate(weights)])
    flat_idx = np.concatenate([np.arange(w.numel()) for w in weights])
    cand = np.nonzero(alive)[0]
    # lexsort: last key is primary -> (-|w|, tensor index, flat index)
    order = cand[np.lexsort((flat_idx[cand], tensor_idx[cand], -mag[cand]))]
    flat = np.zeros(mag.size, dtype=bool)
    flat[order[:keep]] = True
    out, start = [], 0
    for w in weights:
        out.append(torch.from_numpy(flat[start : start + w.numel()].copy()).view(w.shape))
        start += w.numel()
    return out


def n_zeros(masks):
    return sum(int((~m).sum()) for m in masks)


# --------------------------------------------------------------------------- prunable


def test_prunable_default_is_every_conv_and_conv_transpose():
    model = make()
    ws = prunable(model)
    assert [w.name for w in ws] == ["up", "conv", "short"]
    for w in ws:
        module = dict(model.named_modules())[w.name]
        assert w.module is module
        assert w.weight is module.weight
        assert w.mask is module.mask and w.mask.dtype == torch.bool
    assert [w.name for w in prunable(model, types="conv")] == ["up", "conv", "short"]


def test_prunable_types_and_exclude():
    model = make()
    assert [w.name for w in prunable(model, types="conv+linear", exclude=["head"])] == ["fc", "up", "conv", "short"]
    assert [w.name for w in prunable(model, types=(nn.ConvTranspose2d,))] == ["up"]
    assert [w.name for w in prunable(model, types=lnn.MaskedLinear)] == ["fc"]
    assert [w.name for w in prunable(model, exclude=("s*",))] == ["up", "conv"]
    assert [w.name for w in prunable(model, exclude="up")] == ["conv", "short"]
    # fnmatch is case-sensitive
    assert [w.name for w in prunable(model, exclude=["UP"])] == ["up", "conv", "short"]


def test_prunable_nested_names_follow_named_modules():
    outer = nn.ModuleDict({"G": make(0), "D": make(1)})
    names = [w.name for w in prunable(outer)]
    assert names == ["G.up", "G.conv", "G.short", "D.up", "D.conv", "D.short"]
    assert [w.name for w in prunable(outer, exclude=["D.*"])] == ["G.up", "G.conv", "G.short"]


def test_prunable_rejects_plain_layers_and_bad_arguments():
    model = make()
    model.extra = nn.Conv2d(3, 3, 3)  # plain torch conv
    with pytest.raises(TypeError, match=r"'extra'.*lthgan\.nn\.masked"):
        prunable(model)
    assert [w.name for w in prunable(model, exclude=["extra"])] == ["up", "conv", "short"]
    # plain Linear 'head' is not selected by default, but is with conv+linear
    with pytest.raises(TypeError, match=r"'head' \(Linear\).*lthgan\.nn\.masked\(model, types="):
        prunable(make(), types="conv+linear")
    with pytest.raises(ValueError, match="'convs'"):
        prunable(make(), types="convs")
    with pytest.raises(TypeError, match="nn.Module classes"):
        prunable(make(), types=(int,))
    with pytest.raises(TypeError, match="nn.Module"):
        prunable("not a model")
    with pytest.raises(TypeError, match="exclude"):
        prunable(make(), exclude=[3])


def test_prunable_spectral_norm_uses_raw_weight():
    model = make(sn=True)
    ws = {w.name: w for w in prunable(model)}
    conv = model.conv
    assert ws["conv"].weight is lnn.raw_weight(conv)
    assert ws["conv"].weight is not conv.effective_weight()
    assert ws["conv"].mask is conv.mask


# --------------------------------------------------------------------------- arithmetic


def test_target_zeros_rounds_half_up():
    assert target_zeros(0.2, 10) == 2
    assert target_zeros(0.25, 10) == 3  # 2.5 -> 3
    assert target_zeros(0.15, 10) == 2  # 1.5 -> 2 (float 0.15*10 == 1.5)
    assert target_zeros(0.0, 10) == 0
    assert target_zeros(0.36, 25) == 9
    assert target_zeros(0.999, 3) == 3
    for bad in (-0.01, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=repr(bad) if not math.isnan(bad) else "nan"):
            target_zeros(bad, 10)


# --------------------------------------------------------------------------- global magnitude


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("sparsity", [0.0, 0.2, 0.5, 0.93])
def test_global_magnitude_matches_reference(kind, sparsity):
    model = make()
    randomize_(model, torch.Generator().manual_seed(int(sparsity * 100) + len(kind)), kind)
    ws = prunable(model)
    before_w = [w.weight.detach().clone() for w in ws]
    ptrs = [(w.weight.data_ptr(), w.mask.data_ptr()) for w in ws]
    total = sum(w.mask.numel() for w in ws)
    keep = total - target_zeros(sparsity, total)
    expected = reference_keep(before_w, [w.mask.clone() for w in ws], keep)

    got = global_magnitude(model, sparsity)

    assert list(got) == [w.name for w in ws]
    for w, exp, b, (wp, mp) in zip(ws, expected, before_w, ptrs):
        assert torch.equal(got[w.name], exp), w.name
        assert torch.equal(w.mask, exp)  # the module's own buffer
        assert (w.weight.data_ptr(), w.mask.data_ptr()) == (wp, mp)  # identity kept
        assert w.module.mask is w.mask
        assert torch.equal(w.weight.detach(), torch.where(exp, b, torch.zeros(())))
    assert n_zeros(got.values()) == target_zeros(sparsity, total)
    # dense Linear untouched
    assert bool(model.fc.mask.all())


def test_global_magnitude_signed_zeros_and_infinities():
    model = make()
    randomize_(model, torch.Generator().manual_seed(3))
    ws = prunable(model)
    with torch.no_grad():
        ws[0].weight.view(-1)[:6] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 0.0, -0.0])
        ws[2].weight.view(-1)[:3] = torch.tensor([-0.0, float("inf"), 0.0])
    before = [w.weight.detach().clone() for w in ws]
    total = sum(w.mask.numel() for w in ws)
    for s in (0.3, 0.9, 0.99):
        expected = reference_keep(before, [w.mask.clone() for w in ws], total - target_zeros(s, total))
        got = global_magnitude(model, s)
        for w, exp in zip(ws, expected):
            assert torch.equal(got[w.name], exp)
    # infinities are the largest magnitudes, so they survive even at 99%
    assert bool(ws[0].mask.view(-1)[2]) and bool(ws[0].mask.view(-1)[3]) and bool(ws[2].mask.view(-1)[1])


def test_global_magnitude_one_threshold_across_layers():
    model = make()
    ws = prunable(model)
    with torch.no_grad():  # layer 'up' small, 'conv' large, 'short' in between
        ws[0].weight.copy_(torch.rand(ws[0].weight.shape) * 0.1)
        ws[1].weight.copy_(torch.rand(ws[1].weight.shape) + 10)
        ws[2].weight.copy_(torch.rand(ws[2].weight.shape) + 1)
    n_up = ws[0].mask.numel()
    total = sum(w.mask.numel() for w in ws)
    global_magnitude(model, n_up / total)
    assert not bool(ws[0].mask.any())
    assert bool(ws[1].mask.all()) and bool(ws[2].mask.all())


def test_imp_rounds_prune_twenty_percent_of_survivors_and_never_regrow():
    model = make()
    gen = torch.Generator().manual_seed(11)
    randomize_(model, gen)
    ws = prunable(model)
    total = sum(w.mask.numel() for w in ws)
    schedule = imp_schedule(0.2, 0.8)
    assert len(schedule) == 8
    prev = [w.mask.clone() for w in ws]
    kept_prev = total
    for s in schedule:
        # "train": every entry moves, pruned ones included, so only the masks keep them pruned
        with torch.no_grad():
            for w in ws:
                w.weight.add_(torch.randn(w.weight.shape, generator=gen))
        before = [w.weight.detach().clone() for w in ws]
        keep = total - target_zeros(s, total)
        expected = reference_keep(before, prev, keep)
        got = global_magnitude(model, s)
        kept = sum(int(m.sum()) for m in got.values())
        assert kept == keep
        if s != schedule[-1]:
            assert abs(kept - 0.8 * kept_prev) <= 1  # 20% of the survivors
        for m_new, m_old, exp in zip(got.values(), prev, expected):
            assert not bool((m_new & ~m_old).any())  # pruned stay pruned
            assert torch.equal(m_new, exp)
        assert sparsity_report(model).prunable_sparsity == target_zeros(s, total) / total
        prev = [m.clone() for m in got.values()]
        kept_prev = kept


def test_global_magnitude_rejects_bad_sparsity_and_lower_targets():
    model = make()
    randomize_(model, torch.Generator().manual_seed(5))
    for bad in (-0.1, 1.0, 2, float("nan")):
        with pytest.raises(ValueError, match="sparsity"):
            global_magnitude(model, bad)
    with pytest.raises(TypeError, match="sparsity"):
        global_magnitude(model, "0.5")
    global_magnitude(model, 0.5)
    masks = [w.mask.clone() for w in prunable(model)]
    with pytest.raises(ValueError, match=r"sparsity=0\.3.*never grow back"):
        global_magnitude(model, 0.3)
    assert all(torch.equal(a, w.mask) for a, w in zip(masks, prunable(model)))
    global_magnitude(model, 0.5)  # same sparsity again: a no-op
    assert all(torch.equal(a, w.mask) for a, w in zip(masks, prunable(model)))
    with pytest.raises(TypeError, match="selection"):
        global_magnitude(model, 0.6, typez="conv")
    with pytest.raises(ValueError, match="no prunable weights"):
        global_magnitude(model, 0.6, exclude=["*"])


def test_global_magnitude_nan_weight_is_an_error_and_changes_nothing():
    model = make()
    randomize_(model, torch.Generator().manual_seed(6))
    ws = prunable(model)
    with torch.no_grad():
        ws[1].weight.view(-1)[4] = float("nan")
    before = [(w.weight.detach().clone(), w.mask.clone()) for w in ws]
    with pytest.raises((RuntimeError, ValueError), match="(?i)nan"):
        global_magnitude(model, 0.5)
    for w, (bw, bm) in zip(ws, before):
        assert torch.equal(w.mask, bm)
        assert torch.equal(w.weight.detach().nan_to_num(nan=7.0), bw.nan_to_num(nan=7.0))


def test_global_magnitude_with_linear_and_spectral_norm():
    model = make(sn=True)
    randomize_(model, torch.Generator().manual_seed(8))
    ws = prunable(model, types="conv+linear", exclude=["head"])
    before = [w.weight.detach().clone() for w in ws]
    total = sum(w.mask.numel() for w in ws)
    expected = reference_keep(before, [w.mask.clone() for w in ws], total - target_zeros(0.6, total))
    got = global_magnitude(model, 0.6, types="conv+linear", exclude=["head"])
    assert list(got) == ["fc", "up", "conv", "short"]
    for w, exp in zip(ws, expected):
        assert torch.equal(got[w.name], exp)
    raw = lnn.raw_weight(model.conv)
    assert torch.equal(raw.detach() == 0, ~model.conv.mask | (before[2] == 0))
    model(torch.randn(3, 6))  # still runs


# --------------------------------------------------------------------------- layerwise


def test_layerwise_magnitude_exact_per_layer():
    model = make()
    randomize_(model, torch.Generator().manual_seed(21), "ties")
    ws = prunable(model)
    for s in (0.2, 0.36, 0.75):
        before = [w.weight.detach().clone() for w in ws]
        prev = [w.mask.clone() for w in ws]
        got = layerwise_magnitude(model, s)
        for w, b, pm in zip(ws, before, prev):
            n = w.mask.numel()
            exp = reference_keep([b], [pm], n - target_zeros(s, n))[0]
            assert torch.equal(got[w.name], exp)
            assert int((~got[w.name]).sum()) == target_zeros(s, n)
            assert torch.equal(w.mask, exp)
            assert not bool((exp & ~pm).any())


def test_layerwise_magnitude_rejects_layer_already_sparser():
    model = make()
    randomize_(model, torch.Generator().manual_seed(22))
    with torch.no_grad():
        model.up.weight.mul_(1e-3)  # global pruning empties 'up' first
    global_magnitude(model, 0.3)
    with pytest.raises(ValueError, match="'up'.*never grow back"):
        layerwise_magnitude(model, 0.35)


# --------------------------------------------------------------------------- random


def test_random_masks_exact_count_subset_and_deterministic():
    a, b, c = make(), make(), make()
    total = sum(w.mask.numel() for w in prunable(a))
    for s in (0.2, 0.5, 0.9):
        prev = [w.mask.clone() for w in prunable(a)]
        ga = random_masks(a, s, torch.Generator().manual_seed(7 + int(s * 10)))
        gb = random_masks(b, s, torch.Generator().manual_seed(7 + int(s * 10)))
        gc = random_masks(c, s, torch.Generator().manual_seed(100 + int(s * 10)))
        assert n_zeros(ga.values()) == n_zeros(gc.values()) == target_zeros(s, total)
        for name in ga:
            assert torch.equal(ga[name], gb[name])
        assert any(not torch.equal(ga[n], gc[n]) for n in ga)
        for m, p in zip(ga.values(), prev):
            assert not bool((m & ~p).any())
        for w in prunable(a):  # weights zeroed where pruned
            assert bool((w.weight.detach()[~w.mask] == 0).all())
    # global, not per layer, yet each layer lands near the target share
    layer_shares = [l.sparsity for l in sparsity_report(a).layers]
    assert all(abs(x - 0.9) < 0.06 for x in layer_shares), layer_shares


def test_random_masks_is_uniform_over_survivors():
    conv = lnn.MaskedConv2d(1, 1, (1, 12), bias=False)
    model = nn.Sequential(conv)
    start = torch.ones(12, dtype=torch.bool)
    start[[0, 5]] = False  # already pruned: never drawn
    counts = torch.zeros(12)
    reps = 1500
    for seed in range(reps):
        conv.set_mask(start.view(1, 1, 1, 12), apply=True)
        m = random_masks(model, 0.5, torch.Generator().manual_seed(seed))["0"].view(-1)
        assert int(m.sum()) == 6
        counts += m.float()
    assert counts[0] == 0 and counts[5] == 0
    freq = counts[start] / reps  # each of the 10 survivors is kept with probability 6/10
    assert bool(((freq - 0.6).abs() < 0.05).all()), freq


def test_random_masks_default_generator_and_errors():
    model = make()
    torch.manual_seed(3)
    m1 = random_masks(model, 0.4)
    model2 = make()
    torch.manual_seed(3)
    m2 = random_masks(model2, 0.4)
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    with pytest.raises(TypeError, match="generator"):
        random_masks(make(), 0.4, generator=3)
    with pytest.raises(ValueError, match="never grow back"):
        random_masks(model, 0.2, torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- schedule


def test_imp_schedule_values():
    assert imp_schedule(0.2, 0.36) == [0.2, 0.36]
    assert imp_schedule(0.2, 0.2) == [0.2]
    assert imp_schedule(0.2, 0.1) == [0.1]
    s = imp_schedule(0.2, 0.74)
    assert s[:-1] == pytest.approx([0.2, 0.36, 0.488, 0.5904, 0.67232, 0.737856], abs=1e-12)
    assert s[-1] == 0.74 and len(s) == 7
    s = imp_schedule(0.2, 0.8926258176)  # exactly ten rounds
    assert len(s) == 10 and s[-1] == 0.8926258176
    for r, v in enumerate(imp_schedule(0.2, 0.99)[:-1], start=1):
        assert v == pytest.approx(1 - 0.8**r, abs=1e-12)
        assert v == round(v, 12)
    assert all(a < b for a, b in zip(s, s[1:]))
    assert imp_schedule(0.5, 0.75) == [0.5, 0.75]
    assert imp_schedule(0.1, 0.271) == pytest.approx([0.1, 0.19, 0.271])


def test_imp_schedule_validation():
    for rate, target in ((0, 0.5), (1, 0.5), (-0.2, 0.5), (0.2, 0), (0.2, 1.0), (0.2, 1.3), (float("nan"), 0.5)):
        with pytest.raises(ValueError, match="rate|target"):
            imp_schedule(rate, target)
    with pytest.raises(TypeError):
        imp_schedule("0.2", 0.5)
    with pytest.raises(ValueError, match="rounds"):
        imp_schedule(1e-12, 0.9)


# --------------------------------------------------------------------------- report


def test_sparsity_report_numbers_table_and_json(tmp_path):
    model = make()
    randomize_(model, torch.Generator().manual_seed(31))
    global_magnitude(model, 0.6)
    layerwise_magnitude(model, 0.5, types=lnn.MaskedLinear)  # prune the masked Linear too
    rep = sparsity_report(model)
    ws = prunable(model)
    total = sum(w.mask.numel() for w in ws)
    assert [l.name for l in rep.layers] == ["up", "conv", "short"]
    for l, w in zip(rep.layers, ws):
        assert l.shape == tuple(w.weight.shape)
        assert l.total == w.weight.numel()
        assert l.zeros == int((~w.mask).sum())
        assert l.sparsity == l.zeros / l.total
    assert rep.prunable_total == total
    assert rep.prunable_zeros == target_zeros(0.6, total)
    assert rep.prunable_sparsity == target_zeros(0.6, total) / total
    n_params = sum(p.numel() for p in model.parameters())
    fc_zeros = target_zeros(0.5, model.fc.weight.numel())
    assert rep.total_params == n_params
    assert rep.overall_pruned == target_zeros(0.6, total) + fc_zeros
    assert rep.overall_sparsity == (target_zeros(0.6, total) + fc_zeros) / n_params

    table = rep.table()
    lines = table.splitlines()
    assert lines[0].split() == ["layer", "shape", "total", "pruned", "sparsity"]
    assert any(line.startswith("up ") and "8x8x4x4" in line for line in lines)
    assert f"{100 * rep.prunable_sparsity:.2f}%" in table
    assert f"{100 * rep.overall_sparsity:.2f}%" in table
    assert str(rep) == table
    assert len({len(line) for line in lines if set(line) <= {"-", " "}}) == 1

    d = rep.to_dict()
    json.dumps(d)
    assert d["prunable_sparsity"] == rep.prunable_sparsity and d["layers"][1]["name"] == "conv"
    assert d["selection"] == {"types": "conv", "exclude": []}
    rep.to_json(tmp_path / "r" / "report.json")
    assert json.loads((tmp_path / "r" / "report.json").read_text()) == d
    assert list(tmp_path.joinpath("r").iterdir()) == [tmp_path / "r" / "report.json"]  # no temp left

    rep2 = sparsity_report(model, types=(nn.Conv2d,), exclude=["short"])
    assert [l.name for l in rep2.layers] == ["conv"]
    assert rep2.to_dict()["selection"] == {"types": ["Conv2d"], "exclude": ["short"]}


def test_sparsity_report_dense_model():
    rep = sparsity_report(make(sn=True))
    assert rep.prunable_sparsity == 0.0 and rep.overall_sparsity == 0.0
    assert rep.total_params == sum(p.numel() for p in make(sn=True).parameters())


# --------------------------------------------------------------------------- optimizers


def _train(model, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        loss = model(torch.randn(4, 6, generator=gen)).square().mean()
        loss.backward()
        opt.step()


def test_reset_optimizer_state_restarts_adam():
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.0, 0.9))
    _train(model, opt, 3, seed=1)
    assert len(opt.state) > 0
    groups_before = [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups]
    params_before = [list(g["params"]) for g in opt.param_groups]
    assert prune.reset_optimizer_state(opt) is opt
    assert len(opt.state) == 0
    assert [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups] == groups_before
    assert all(a is b for g, pb in zip(opt.param_groups, params_before) for a, b in zip(g["params"], pb))

    # the next step equals the first step of a freshly built Adam on the same values
    twin = make()
    twin.load_state_dict(model.state_dict())
    fresh = torch.optim.Adam(twin.parameters(), lr=1e-2, betas=(0.0, 0.9))
    _train(model, opt, 1, seed=2)
    _train(twin, fresh, 1, seed=2)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="Optimizer"):
        prune.reset_optimizer_state(model)


@pytest.mark.parametrize("opt_cls", ["adam", "sgd"])
def test_zero_pruned_optimizer_state(opt_cls):
    model = make(sn=True)
    if opt_cls == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    _train(model, opt, 3, seed=4)
    snapshot = {p: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()} for p, s in opt.state.items()}
    global_magnitude(model, 0.5, types="conv+linear", exclude=["head"])
    changed = prune.zero_pruned_optimizer_state(opt, model)
    per_param = 3 if opt_cls == "adam" else 1  # exp_avg, exp_avg_sq, max_exp_avg_sq | momentum
    assert changed == len(lnn.masked_modules(model)) * per_param
    masked = {id(lnn.raw_weight(m)): m.mask for _, m in lnn.masked_modules(model)}
    for p, state in opt.state.items():
        for k, v in state.items():
            old = snapshot[p][k]
            if id(p) in masked and torch.is_tensor(v) and v.shape == p.shape:
                mask = masked[id(p)]
                assert bool((v[~mask] == 0).all())
                assert torch.equal(v[mask], old[mask])
            else:
                assert torch.equal(v, old) if torch.is_tensor(v) else v == old
    _train(model, opt, 2, seed=5)  # pruned weights stay zero under Adam/SGD after zeroing
    for _, m in lnn.masked_modules(model):
        assert bool((lnn.raw_weight(m).detach()[~m.mask] == 0).all()), type(m).__name__
