"""lthgan.ticket: capture, save/load, corruption, architecture checks, apply and rewind."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn

import lthgan
import lthgan.nn as lnn
from lthgan import prune
from lthgan.ticket import FORMAT, FORMAT_VERSION, Ticket, TicketError


class Net(nn.Module):
    """Linear -> ConvT -> BN -> conv (+1x1 shortcut) -> head; optional spectral norm."""

    def __init__(self, ch: int = 8, sn: bool = False, out: int = 5):
        super().__init__()
        self.ch = ch
        self.fc = nn.Linear(6, ch * 2 * 2)
        self.up = lnn.MaskedConvTranspose2d(ch, ch, 4, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(ch)
        self.conv = lnn.MaskedConv2d(ch, out, 3, padding=1)
        self.short = lnn.MaskedConv2d(ch, out, 1, bias=False)
        self.head = lnn.MaskedLinear(out, 2)
        if sn:
            lnn.spectral_norm(self.conv)
            lnn.spectral_norm(self.short)

    def forward(self, z):
        x = self.fc(z).view(-1, self.ch, 2, 2)
        x = torch.relu(self.bn(self.up(x)))
        x = self.conv(x) + self.short(x)
        return self.head(x.mean((2, 3)))


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return Net(**kw)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def bits(t: torch.Tensor) -> torch.Tensor:
    """Integer view of a tensor's bytes, so comparisons are bit for bit (-0.0 != 0.0)."""
    t = t.detach().contiguous()
    if t.dtype.is_floating_point:
        return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def bit_equal(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def train(model, steps, seed, opt=None):
    opt = opt or torch.optim.Adam(model.parameters(), lr=5e-2, betas=(0.0, 0.9))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 6, generator=gen)).square().mean().backward()
        opt.step()
    return opt


def masked_theta0(theta0, ticket, model):
    """The expected state after apply: theta_0 with every masked weight multiplied out."""
    expected = {}
    sd = model.state_dict(keep_vars=True)
    raw_to_layer = {id(lnn.raw_weight(m)): n for n, m in lnn.masked_modules(model)}
    for k, v in sd.items():
        if id(v) in raw_to_layer:
            mask = ticket.masks[raw_to_layer[id(v)]]
            expected[k] = torch.where(mask, theta0[k], torch.zeros((), dtype=v.dtype))
        elif k.endswith("mask") and v.dtype == torch.bool:
            layer = k[: -len(".mask")]
            expected[k] = ticket.masks[layer]
        else:
            expected[k] = theta0[k]
    return expected


def searched(sn=False, seed=0, sparsity=0.6):
    """theta_0, then a short training run and a magnitude prune: (model, theta0, ticket)."""
    model = make(seed, sn=sn)
    theta0 = snapshot(model)
    train(model, 3, seed=seed + 1)
    prune.global_magnitude(model, sparsity, types="conv+linear", exclude=["fc"])
    ticket = Ticket.from_model(model, theta0, {"round": 1, "seed": seed, "config": {"ch": 8, "sn": sn}})
    return model, theta0, ticket


# --------------------------------------------------------------------------- capture


def test_from_model_captures_masks_state_and_provenance():
    model, theta0, ticket = searched()
    names = [n for n, _ in lnn.masked_modules(model)]
    assert list(ticket.masks) == names == ["up", "conv", "short", "head"]
    for n, m in lnn.masked_modules(model):
        assert torch.equal(ticket.masks[n], m.mask)
        assert ticket.masks[n] is not m.mask  # a copy
    # state is theta_0 without the mask buffers
    assert set(ticket.state) == {k for k in theta0 if not k.endswith(".mask")}
    for k, v in ticket.state.items():
        assert bit_equal(v, theta0[k])
    p = ticket.provenance
    assert p["round"] == 1 and p["seed"] == 0 and p["config"] == {"ch": 8, "sn": False}
    assert p["lthgan_version"] == lthgan.__version__
    assert isinstance(p["created"], str) and "T" in p["created"]
    pruned = sum(int((~m).sum()) for m in ticket.masks.values())
    total = sum(m.numel() for m in ticket.masks.values())
    assert p["sparsity"] == ticket.sparsity == pruned / total
    assert "sparsity=" in repr(ticket)


def test_from_model_default_state_is_a_snapshot():
    model = make(3)
    prune.global_magnitude(model, 0.3)
    ticket = Ticket.from_model(model)  # late-rewind style: the current state
    before = {k: v.clone() for k, v in ticket.state.items()}
    train(model, 2, seed=9)
    assert any(not torch.equal(model.state_dict()[k], before[k]) for k in before)
    for k, v in ticket.state.items():
        assert bit_equal(v, before[k])


def test_constructor_and_from_model_validation():
    model = make()
    with pytest.raises(TypeError, match="'up'.*bool"):
        Ticket({"up": torch.ones(2)}, {})
    with pytest.raises(TypeError, match="state"):
        Ticket({}, {"a": 3})
    with pytest.raises(ValueError, match="provenance"):
        Ticket({}, {}, {"bad": object()})
    with pytest.raises(TicketError, match="no lthgan masked layers"):
        Ticket.from_model(nn.Sequential(nn.Conv2d(2, 2, 1)))
    other = make(ch=4)
    with pytest.raises(TicketError, match=r"'fc.weight' is float32\[16, 6\] in the ticket but float32\[32, 6\]"):
        Ticket.from_model(model, other.state_dict())
    # mask keys in a raw state_dict are dropped: masks travel separately
    t = Ticket({"up": torch.ones(2, dtype=torch.bool)}, {"up.mask": torch.ones(2, dtype=torch.bool), "x": torch.ones(1)})
    assert list(t.state) == ["x"]


# --------------------------------------------------------------------------- save / load


def test_round_trip_save_load_apply_on_fresh_model(tmp_path):
    model, theta0, ticket = searched(sparsity=0.7)
    path = ticket.save(tmp_path / "sub" / "ticket.safetensors")
    assert path == tmp_path / "sub" / "ticket.safetensors"
    assert [p.name for p in path.parent.iterdir()] == ["ticket.safetensors"]  # no temp file left

    loaded = Ticket.load(path)
    assert list(loaded.masks) == list(ticket.masks)
    for n in ticket.masks:
        assert loaded.masks[n].dtype == torch.bool and torch.equal(loaded.masks[n], ticket.masks[n])
    assert list(loaded.state) == list(ticket.state)
    for k in ticket.state:
        assert bit_equal(loaded.state[k], ticket.state[k])
    assert loaded.provenance == ticket.provenance
    assert loaded.sparsity == ticket.sparsity

    fresh = make(seed=123)  # same architecture, different init
    ids = {k: (id(v), v.data_ptr()) for k, v in fresh.state_dict(keep_vars=True).items()}
    assert loaded.apply(fresh) is fresh
    expected = masked_theta0(theta0, ticket, fresh)
    for k, v in fresh.state_dict().items():
        assert bit_equal(v, expected[k]), k
    assert {k: (id(v), v.data_ptr()) for k, v in fresh.state_dict(keep_vars=True).items()} == ids
    out_a = fresh.eval()(torch.ones(2, 6))
    ref = make(seed=7)
    ticket.apply(ref)
    assert torch.equal(out_a, ref.eval()(torch.ones(2, 6)))


def test_file_is_safetensors_with_bitpacked_masks(tmp_path):
    from safetensors import safe_open

    _, _, ticket = searched()
    path = ticket.save(tmp_path / "t.safetensors")
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    meta = header["__metadata__"]
    assert meta["format"] == FORMAT and meta["format_version"] == str(FORMAT_VERSION)
    assert len(meta["sha256"]) == 64
    assert json.loads(meta["provenance"])["round"] == 1
    with safe_open(str(path), framework="pt") as f:
        for n, m in ticket.masks.items():
            packed = f.get_tensor("mask/" + n)
            assert packed.dtype == torch.uint8 and packed.shape == ((m.numel() + 7) // 8,)
        for k, v in ticket.state.items():
            assert bit_equal(f.get_tensor("state/" + k), v)
    state_bytes = sum(v.numel() * v.element_size() for v in ticket.state.values())
    mask_bytes = sum((m.numel() + 7) // 8 for m in ticket.masks.values())
    assert len(raw) == 8 + header_len + state_bytes + mask_bytes
    assert b"\x80\x04" not in raw[:2]  # not a pickle


def test_spectral_norm_ticket_round_trip(tmp_path):
    model, theta0, ticket = searched(sn=True, seed=2)
    raw_keys = {k for k, v in model.state_dict(keep_vars=True).items() if v is lnn.raw_weight(model.conv)}
    assert len(raw_keys) == 1 and raw_keys <= set(ticket.state)
    sn_buffers = [k for k in ticket.state if k.startswith("conv.") and k not in raw_keys and k != "conv.bias"]
    assert sn_buffers  # the power-iteration vectors travel with the state
    loaded = Ticket.load(ticket.save(tmp_path / "sn.safetensors"))
    fresh = make(seed=50, sn=True)
    train(fresh, 1, seed=3)  # moves the u/v vectors too
    loaded.apply(fresh)
    expected = masked_theta0(theta0, ticket, fresh)
    for k, v in fresh.state_dict().items():
        assert bit_equal(v, expected[k]), k
    raw = lnn.raw_weight(fresh.conv)
    assert bool((raw.detach()[~fresh.conv.mask] == 0).all())


def test_flipping_any_byte_is_detected(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(lnn.MaskedConv2d(2, 3, 3), nn.BatchNorm2d(3), lnn.MaskedConv2d(3, 2, 1))
    prune.global_magnitude(model, 0.5)
    ticket = Ticket.from_model(model, provenance={"round": 2})
    path = ticket.save(tmp_path / "t.safetensors")
    good = path.read_bytes()
    assert len(good) < 6000
    bad = tmp_path / "bad.safetensors"
    for i in range(len(good)):
        corrupt = bytearray(good)
        corrupt[i] ^= 0xFF
        bad.write_bytes(bytes(corrupt))
        with pytest.raises(TicketError):
            Ticket.load(bad)
    # a single flipped bit in the data region names the checksum
    corrupt = bytearray(good)
    corrupt[-3] ^= 0x01
    bad.write_bytes(bytes(corrupt))
    with pytest.raises(TicketError, match="checksum"):
        Ticket.load(bad)


def test_truncated_and_foreign_files(tmp_path):
    from safetensors.torch import save_file

    _, _, ticket = searched()
    good = ticket.save(tmp_path / "t.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    for n in (0, 4, 8, 20, len(good) // 2, len(good) - 1):
        bad.write_bytes(good[:n])
        with pytest.raises(TicketError, match="truncated or corrupt"):
            Ticket.load(bad)
    bad.write_bytes(good + b"\x00" * 8)  # trailing garbage
    with pytest.raises(TicketError):
        Ticket.load(bad)
    with pytest.raises(FileNotFoundError):
        Ticket.load(tmp_path / "missing.safetensors")

    save_file({"w": torch.ones(3)}, str(bad))  # a safetensors file, but not a ticket
    with pytest.raises(TicketError, match="not an lthgan ticket"):
        Ticket.load(bad)
    save_file({"w": torch.ones(3)}, str(bad), metadata={"format": FORMAT, "format_version": "99"})
    with pytest.raises(TicketError, match="format_version='99'"):
        Ticket.load(bad)


def test_valid_file_with_tampered_tensor_fails_checksum(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    _, _, ticket = searched()
    path = ticket.save(tmp_path / "t.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["state/bn.running_mean"] = tensors["state/bn.running_mean"] + 1
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(TicketError, match="checksum"):
        Ticket.load(path)
    tensors.pop("state/bn.running_mean")
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(TicketError, match="'state/bn.running_mean' is missing"):
        Ticket.load(path)


# --------------------------------------------------------------------------- apply


def test_trained_model_after_apply_equals_masked_theta0_bit_for_bit():
    model = make(seed=4, sn=True)
    theta0 = snapshot(model)
    opt = train(model, 4, seed=5)
    prune.global_magnitude(model, 0.5, types="conv+linear", exclude=["fc"])
    ticket = Ticket.from_model(model, theta0, {"round": 1})
    train(model, 3, seed=6, opt=opt)  # keep training: every tensor moves away from theta_0
    params = list(model.parameters())
    ptrs = [p.data_ptr() for p in params]
    buffers = {k: (id(b), b.data_ptr()) for k, b in model.named_buffers()}

    ticket.apply(model)

    expected = masked_theta0(theta0, ticket, model)
    for k, v in model.state_dict().items():
        assert bit_equal(v, expected[k]), k
    # identity: same Parameter objects and storage; the optimizer still holds them
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert [p.data_ptr() for p in model.parameters()] == ptrs
    assert {k: (id(b), b.data_ptr()) for k, b in model.named_buffers()} == buffers
    assert all(a is b for a, b in zip(opt.param_groups[0]["params"], params))
    # a fresh round trains the rewound tensors in place and pruned entries stay zero
    prune.reset_optimizer_state(opt)
    train(model, 2, seed=8, opt=opt)
    for _, m in lnn.masked_modules(model):
        assert bool((lnn.raw_weight(m).detach()[~m.mask] == 0).all())
    assert not torch.equal(model.bn.weight.detach(), theta0["bn.weight"])


@pytest.mark.parametrize(
    "other, match",
    [
        (dict(ch=4), r"'up'"),  # first masked layer differs in shape
        (dict(out=3), r"'conv'"),
        (dict(sn=True), r"'conv\.[\w.]+'"),  # spectral-norm tensors the ticket lacks
    ],
)
def test_mismatched_architecture_is_rejected_without_changes(other, match):
    _, _, ticket = searched()
    target = make(seed=9, **other)
    before = snapshot(target)
    with pytest.raises(TicketError, match=match):
        ticket.apply(target)
    for k, v in target.state_dict().items():
        assert bit_equal(v, before[k]), k


def test_no_partial_apply_on_late_mismatch():
    _, theta0, ticket = searched()
    target = make(seed=10)
    prune.random_masks(target, 0.3, torch.Generator().manual_seed(1))
    before = snapshot(target)
    cases = {}
    # the very last state tensor has a wrong dtype
    last = list(ticket.state)[-1]
    t = Ticket(ticket.masks, {**ticket.state, last: ticket.state[last].double()}, ticket.provenance)
    cases["dtype"] = (t, repr(last))
    # an extra state key, after all the good ones
    t = Ticket(ticket.masks, {**ticket.state, "zz.extra": torch.ones(2)}, ticket.provenance)
    cases["extra key"] = (t, "'zz.extra'")
    # a missing state key
    st = dict(ticket.state)
    st.pop("bn.num_batches_tracked")
    cases["missing key"] = (Ticket(ticket.masks, st, ticket.provenance), "'bn.num_batches_tracked'")
    # an extra mask
    masks = {**ticket.masks, "ghost": torch.ones(3, dtype=torch.bool)}
    cases["extra mask"] = (Ticket(masks, ticket.state, ticket.provenance), "'ghost'")
    # a missing mask
    masks = dict(ticket.masks)
    masks.pop("head")
    cases["missing mask"] = (Ticket(masks, ticket.state, ticket.provenance), "'head'")
    for name, (bad, match) in cases.items():
        with pytest.raises(TicketError, match=match):
            bad.apply(target)
        for k, v in target.state_dict().items():
            assert bit_equal(v, before[k]), (name, k)
    with pytest.raises(TicketError, match=r"'fc.weight' is float32\[32, 6\] in the ticket but float64"):
        ticket.apply(make(seed=11).double())
    with pytest.raises(TypeError, match="nn.Module"):
        ticket.apply({"not": "a model"})


def test_validate_reports_without_changing():
    _, _, ticket = searched()
    ticket.validate(make(seed=12))
    with pytest.raises(TicketError, match="'up'"):
        ticket.validate(make(seed=12, ch=4))


def test_imp_two_rounds_with_ticket_files(tmp_path):
    """A miniature IMP: train, prune 20% of survivors, save, load, rewind; twice."""
    model = make(seed=20)
    theta0 = snapshot(model)
    opt = torch.optim.Adam(model.parameters(), lr=5e-2, betas=(0.0, 0.9))
    prev = None
    for r, s in enumerate(prune.imp_schedule(0.2, 0.36), start=1):
        train(model, 3, seed=100 + r, opt=opt)
        prune.global_magnitude(model, s)
        path = Ticket.from_model(model, theta0, {"round": r, "sparsity": s}).save(tmp_path / f"r{r}.safetensors")
        ticket = Ticket.load(path)
        ticket.apply(model)
        prune.reset_optimizer_state(opt)
        assert ticket.provenance["round"] == r and ticket.provenance["sparsity"] == s
        rep = prune.sparsity_report(model)
        total = rep.prunable_total
        assert rep.prunable_zeros == prune.target_zeros(s, total)
        if prev is not None:
            for n in prev:
                assert not bool((ticket.masks[n] & ~prev[n]).any())
        prev = ticket.masks
        expected = masked_theta0(theta0, ticket, model)
        for k, v in model.state_dict().items():
            assert bit_equal(v, expected[k]), (r, k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_apply_cpu_ticket_to_cuda_model(tmp_path):
    model, theta0, ticket = searched()
    loaded = Ticket.load(ticket.save(tmp_path / "t.safetensors"))
    target = make(seed=30).cuda()
    train(target, 1, seed=31)
    loaded.apply(target)
    expected = masked_theta0(theta0, ticket, make(seed=30))
    for k, v in target.state_dict().items():
        assert v.is_cuda and bit_equal(v.cpu(), expected[k]), k
    again = Ticket.from_model(target, provenance={"round": 2})
    assert all(m.device.type == "cpu" for m in again.masks.values())
    for n in ticket.masks:
        assert torch.equal(again.masks[n], ticket.masks[n])
