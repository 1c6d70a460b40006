"""Ticket.apply is all or nothing: every case that cannot be applied is refused before the first
write, and the model's state (masks included) is then bit-identical to what it was."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lthgan.nn as lnn
from lthgan import prune
from lthgan.ticket import Ticket, TicketError

pytestmark = pytest.mark.filterwarnings("error")


class Net(nn.Module):
    """Two masked convs, a norm, a head; ``alias`` adds a Parameter on another one's storage,
    ``expanded`` a buffer that is a stride-0 view, ``tied`` a head tied to another."""

    def __init__(self, alias: str | None = None, expanded: bool = False, tied: bool = False):
        super().__init__()
        self.conv = lnn.MaskedConv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = lnn.MaskedConv2d(6, 4, 3, padding=1)
        self.head = nn.Linear(4, 4)
        if alias == "same":  # a second Parameter over the whole of conv2's weight
            self.alias = nn.Parameter(self.conv2.weight.detach())
        elif alias == "part":  # a second Parameter over a slice of head's weight
            self.alias = nn.Parameter(self.head.weight.detach()[1:3])
        if expanded:
            self.register_buffer("scale", torch.full((1,), 0.5).expand(4))
        if tied:
            self.head2 = nn.Linear(4, 4)
            self.head2.weight = self.head.weight

    def forward(self, x):
        y = self.conv2(torch.relu(self.bn(self.conv(x)))).mean((2, 3))
        if hasattr(self, "scale"):
            y = y * self.scale
        return self.head(y)


def make(seed, sparsity=0.5, **kw):
    torch.manual_seed(seed)
    model = Net(**kw)
    prune.random_masks(model, sparsity, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.bn.running_mean.normal_()
    return model


def raw_bits(model) -> dict[str, torch.Tensor]:
    """Every state tensor as raw bytes (-0.0 != 0.0, NaN payloads count)."""
    out = {}
    for k, v in model.state_dict().items():
        out[k] = v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).clone() \
            if v.numel() else v.detach().clone()
    return out


def assert_unchanged(model, before):
    after = raw_bits(model)
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k


def refuse(ticket, target, match):
    before = raw_bits(target)
    with pytest.raises(TicketError, match=match):
        ticket.apply(target)
    assert_unchanged(target, before)


def test_two_parameters_sharing_storage_are_refused_before_any_write():
    ticket = Ticket.from_model(make(0, alias="same"))
    target = make(1, alias="same", sparsity=0.3)
    refuse(ticket, target, r"'conv2.weight' and 'alias'|'alias' and 'conv2.weight'")
    ticket = Ticket.from_model(make(0, alias="part"))
    refuse(ticket, make(1, alias="part"), r"'head.weight'.*share memory|share memory")


def test_expanded_buffer_the_ticket_would_change_is_refused():
    source = make(0, expanded=True)
    ticket = Ticket.from_model(source)
    assert ticket.state["scale"].stride() == (1,)  # the snapshot is a plain copy
    target = make(1, expanded=True, sparsity=0.3)
    assert target.scale.stride() == (0,)
    ticket.state["scale"] = torch.tensor([0.5, 0.5, 0.5, 0.25])
    refuse(ticket, target, r"'scale' is an expanded view")


def test_expanded_buffer_with_equal_values_is_left_alone_and_the_rest_applied():
    source = make(0, expanded=True)
    ticket = Ticket.from_model(source)
    target = make(1, expanded=True, sparsity=0.3)
    ticket.apply(target)
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    assert target.scale.stride() == (0,)


def test_tied_tensors_with_different_ticket_values_are_refused():
    source = make(0, tied=True)
    ticket = Ticket.from_model(source)
    ticket.apply(make(2, tied=True))  # agreeing values: fine
    ticket.state["head2.weight"] = ticket.state["head2.weight"] + 1
    refuse(ticket, make(1, tied=True), r"'head.weight' and 'head2.weight' are one tensor")


def test_inference_tensor_is_refused():
    ticket = Ticket.from_model(make(0))
    target = make(1)
    with torch.inference_mode():
        frozen = torch.zeros(6)
    target.bn.register_buffer("running_var", frozen)
    ticket.state["bn.running_var"] = torch.ones(6)
    refuse(ticket, target, r"'bn.running_var' is an inference tensor")


def _bad_tickets(ticket):
    """Tickets that fail late: the mismatch is the last entry of state."""
    last = list(ticket.state)[-1]
    yield "dtype", Ticket(ticket.masks, {**ticket.state, last: ticket.state[last].double()}), repr(last)
    shape = {**ticket.state, "head.bias": torch.zeros(5)}
    yield "shape", Ticket(ticket.masks, shape), "'head.bias'"
    missing = dict(ticket.state)
    missing.pop("head.bias")
    yield "missing key", Ticket(ticket.masks, missing), "'head.bias'"
    yield "extra key", Ticket(ticket.masks, {**ticket.state, "zz": torch.ones(1)}), "'zz'"
    masks = dict(ticket.masks)
    masks.pop("conv2")
    yield "missing mask", Ticket(masks, ticket.state), "'conv2'"
    masks = {**ticket.masks, "conv2": torch.ones(4, 6, 3, 2, dtype=torch.bool)}
    yield "mask shape", Ticket(masks, ticket.state), "'conv2'"


@pytest.mark.parametrize("case", ["dtype", "shape", "missing key", "extra key", "missing mask",
                                  "mask shape"])
def test_mismatches_leave_the_model_bit_identical(case):
    ticket = Ticket.from_model(make(0))
    bad, match = next((t, m) for name, t, m in _bad_tickets(ticket) if name == case)
    refuse(bad, make(1, sparsity=0.3), match)


def test_a_good_apply_after_a_refused_one_gives_the_ticket_state():
    source = make(0)
    ticket = Ticket.from_model(source)
    target = make(1, sparsity=0.3)
    bad = Ticket(ticket.masks, {**ticket.state, "head.bias": torch.zeros(5)})
    with pytest.raises(TicketError):
        bad.apply(target)
    ticket.apply(target)
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
