"""Ticket format 2 (kept channels of structural tickets) beside format 1 (lthgan 0.1)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import lthgan.nn as lnn
from lthgan.prune import global_magnitude
from lthgan.ticket import FORMAT_VERSION, Ticket, TicketError

V1 = Path(__file__).parent / "data" / "ticket_v1.safetensors"


def small():
    return nn.Sequential(lnn.MaskedConv2d(3, 4, 3), nn.ReLU(), lnn.MaskedConv2d(4, 2, 3))


def test_a_ticket_written_by_lthgan_0_1_still_loads_and_applies():
    t = Ticket.load(V1)  # written by lthgan 0.1.0 with ticket format 1
    assert t.channels is None and t.provenance["round"] == 1 and "format 1" in t.provenance["note"]
    assert t.sparsity == 0.5
    m = small()
    t.apply(m)
    for name, layer in lnn.masked_modules(m):
        assert torch.equal(layer.mask, t.masks[name])
        assert torch.equal(lnn.raw_weight(layer), t.state[f"{name}.weight"] * layer.mask)


def test_channels_round_trip_and_are_covered_by_the_checksum(tmp_path):
    m = small()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    global_magnitude(m, 0.3)
    kept = {"G": {"hidden": [0, 2, 3]}}
    t = Ticket.from_model(m, state, {"round": 2})
    t = Ticket(t.masks, t.state, t.provenance, channels=kept)
    path = t.save(tmp_path / "t.safetensors")
    back = Ticket.load(path)
    assert back.channels == kept and FORMAT_VERSION == 2
    assert all(torch.equal(back.masks[n], t.masks[n]) for n in t.masks)
    # a changed channel list no longer matches the checksum
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        md, data = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    layout = json.loads(md["layout"])
    layout["channels"]["G"]["hidden"] = [0, 1, 3]
    md["layout"] = json.dumps(layout, separators=(",", ":"))
    save_file(data, str(tmp_path / "bad.safetensors"), metadata=md)
    with pytest.raises(TicketError, match="checksum"):
        Ticket.load(tmp_path / "bad.safetensors")


def test_bad_channels_are_refused():
    with pytest.raises(TypeError, match="channels must map"):
        Ticket({}, {}, {}, channels={"G": ["not", "a", "mapping"]})


def test_a_state_file_written_by_lthgan_0_1_still_loads():
    from lthgan.search import load_tensors

    data, meta = load_tensors(Path(__file__).parent / "data" / "state_v01.safetensors")
    assert meta["what"] == "written by lthgan 0.1.0" and data["G.w"].shape == (4, 3, 3, 3)
    g = torch.Generator().manual_seed(0)
    assert int(data["n"]) == 3 and not torch.equal(data["G.w"], torch.randn(4, 3, 3, 3, generator=g))
