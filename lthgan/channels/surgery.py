"""Making a generator narrower (:func:`slice_model`) or zeroing the same channels in place of
removing them (:func:`mask_channels`)."""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from .. import nn as lnn
from .groups import ChannelGroup, Slice, _dim, check_groups, check_kept

__all__ = ["slice_model", "mask_channels"]

_ATTR = {  # the width attributes of a layer, per slice kind
    (nn.Linear, "out"): "out_features", (nn.Linear, "in"): "in_features",
    (nn.Conv2d, "out"): "out_channels", (nn.Conv2d, "in"): "in_channels",
    (nn.ConvTranspose2d, "out"): "out_channels", (nn.ConvTranspose2d, "in"): "in_channels",
}


def _rows(idx: Tensor, repeat: int) -> Tensor:
    """Channel indices as weight rows: channel c is rows c*repeat .. c*repeat + repeat-1."""
    if repeat == 1:
        return idx
    return (idx[:, None] * repeat + torch.arange(repeat)).flatten()


def _set_param(m: nn.Module, name: str, value: Tensor) -> None:
    old = m._parameters[name]
    m._parameters[name] = nn.Parameter(value.contiguous(), requires_grad=old.requires_grad)


def _width_attr(m: nn.Module, kind: str) -> str:
    for (cls, k), attr in _ATTR.items():
        if k == kind and isinstance(m, cls):
            return attr
    raise TypeError(f"cannot slice a {type(m).__name__}")  # unreachable after check_groups


def _slice_norm(m: nn.Module, idx: Tensor) -> None:
    for name in ("weight", "bias"):
        if m._parameters.get(name) is not None:
            p = m._parameters[name].detach()
            _set_param(m, name, p.index_select(0, idx.to(p.device)))
    for name in ("running_mean", "running_var"):
        b = m._buffers.get(name)
        if b is not None:
            m._buffers[name] = b.index_select(0, idx.to(b.device)).contiguous()
    m.num_features = idx.numel()


def _slice_layer(m: nn.Module, s: Slice, idx: Tensor) -> None:
    rows = _rows(idx, s.repeat).to(m.weight.device)
    dim = _dim(m, s.kind)
    _set_param(m, "weight", m.weight.detach().index_select(dim, rows))
    if lnn.is_masked(m):
        m._buffers["mask"] = m.mask.index_select(dim, rows).contiguous()
    if s.kind == "out" and m.bias is not None:
        _set_param(m, "bias", m.bias.detach().index_select(0, rows))
    setattr(m, _width_attr(m, s.kind), rows.numel())


@torch.no_grad()
def slice_model(model: nn.Module, groups: Sequence[ChannelGroup],
                kept: Mapping[str, Tensor]) -> nn.Module:
    """A deep copy of ``model`` that is physically narrower: for every group, each of its
    slices keeps only the ``kept`` channels (in the order of ``kept``, the same for every
    slice of a group, so tied channels stay aligned). Layers (plain torch or lthgan masked:
    ``weight``, ``bias``, the bool ``mask``; width attributes updated), BatchNorm (``weight``,
    ``bias``, ``running_mean``, ``running_var``, ``num_features``) and InstanceNorm (affine or
    not) are sliced; every other module is left as it is. Parameters of the copy are new
    tensors (fresh optimizer state needed); ``requires_grad`` is kept. ``model`` is not
    changed. The copy keeps ``model``'s training mode, device and dtype."""
    check_kept(groups, kept)
    check_groups(model, groups)
    new = copy.deepcopy(model)
    for g in groups:
        idx = kept[g.name].cpu()
        if idx.numel() == g.size:
            continue  # every channel kept (check_kept: sorted and distinct, so the identity)
        for s in g.slices:
            m = new.get_submodule(s.module)
            if s.kind == "norm":
                _slice_norm(m, idx)
            else:
                _slice_layer(m, s, idx)
    return new


def _dropped(g: ChannelGroup, idx: Tensor) -> Tensor:
    keep = torch.zeros(g.size, dtype=torch.bool)
    keep[idx.cpu()] = True
    return torch.nonzero(~keep).flatten()


@torch.no_grad()
def _zero_layer(m: nn.Module, s: Slice, rows: Tensor) -> None:
    dim = _dim(m, s.kind)
    rows = rows.to(m.weight.device)
    lnn.raw_weight(m).index_fill_(dim, rows, 0.0)
    if lnn.is_masked(m):
        m.mask.index_fill_(dim, rows, False)
    if s.kind == "out" and m.bias is not None:
        m.bias.index_fill_(0, rows, 0.0)


@torch.no_grad()
def _zero_norm(m: nn.Module, idx: Tensor) -> None:
    for t in (m.weight, m.bias, m.running_mean):
        if t is not None:
            t.index_fill_(0, idx.to(t.device), 0.0)


@torch.no_grad()
def mask_channels(model: nn.Module, groups: Sequence[ChannelGroup],
                  kept: Mapping[str, Tensor]) -> nn.Module:
    """A deep copy of ``model`` at full width whose removed channels are zero: the producing
    layers' filters and biases (and their masks, for lthgan masked layers), the consuming
    layers' input weights (and masks), and the norms' γ, β and running mean (so a norm
    without scale also outputs 0 for a zero channel in eval mode). In eval mode it computes
    what :func:`slice_model` computes with the same ``kept``; in training mode too, as long as
    the zeroed entries stay zero (lthgan masked layers keep them so; γ and β need a caller
    that keeps them zero)."""
    check_kept(groups, kept)
    check_groups(model, groups)
    new = copy.deepcopy(model)
    for g in groups:
        drop = _dropped(g, kept[g.name])
        if drop.numel() == 0:
            continue
        for s in g.slices:
            m = new.get_submodule(s.module)
            if s.kind == "norm":
                _zero_norm(m, drop)
            else:
                _zero_layer(m, s, _rows(drop, s.repeat))
    return new
