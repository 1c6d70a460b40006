"""Channel groups: what is tied, how channels are scored, and which ones a round keeps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from .. import nn as lnn

__all__ = ["Slice", "ChannelGroup", "KINDS", "check_groups", "check_kept", "scores", "select",
           "channel_share"]

#: where a group's channels appear in a module: a layer's outputs, its inputs, a norm's features
KINDS = ("out", "in", "norm")

_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class Slice:
    """One place where a group's channels appear: ``module`` (a qualified name inside the
    generator), ``kind`` ("out": a Conv2d/ConvTranspose2d/Linear's output channels; "in": its
    input channels; "norm": a BatchNorm2d/InstanceNorm2d over these channels) and ``repeat``:
    a Linear whose outputs are viewed as C x b x b (or whose inputs are a flattened C x b x b)
    holds each channel as ``repeat`` = b*b consecutive rows (columns)."""

    module: str
    kind: str
    repeat: int = 1

    def __post_init__(self):
        if not isinstance(self.module, str) or not self.module:
            raise ValueError(f"Slice.module must be a module's qualified name, got {self.module!r}")
        if self.kind not in KINDS:
            raise ValueError(f"Slice.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or self.repeat < 1:
            raise ValueError(f"Slice.repeat must be a positive int, got {self.repeat!r}")
        if self.kind == "norm" and self.repeat != 1:
            raise ValueError(f"a norm slice ({self.module}) cannot repeat channels, got repeat={self.repeat}")


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are kept or removed together: every ``slice`` holds the same ``size``
    channels in the same order. ``score_norm`` names the group's affine norm whose |γ| scores
    the channels (one of its "norm" slices); None scores a channel by the L1 norm of its
    filters in the producing layers (its "out" slices, summed). A group that is not
    ``prunable`` (the RGB output) always keeps every channel."""

    name: str
    size: int
    slices: tuple[Slice, ...]
    score_norm: str | None
    prunable: bool = True

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ChannelGroup.name must be a non-empty str, got {self.name!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"group {self.name!r}: size must be a positive int, got {self.size!r}")
        slices = tuple(self.slices)
        object.__setattr__(self, "slices", slices)
        if not all(isinstance(s, Slice) for s in slices):
            raise TypeError(f"group {self.name!r}: slices must be Slice objects")
        if not any(s.kind == "out" for s in slices):
            raise ValueError(f"group {self.name!r} has no 'out' slice: no layer produces its channels")
        keys = [(s.module, s.kind) for s in slices]
        if len(set(keys)) != len(keys):
            raise ValueError(f"group {self.name!r} names a (module, kind) twice: {keys}")
        norms = [s.module for s in slices if s.kind == "norm"]
        if self.score_norm is not None and self.score_norm not in norms:
            raise ValueError(f"group {self.name!r}: score_norm {self.score_norm!r} is not one of its "
                             f"norm slices {norms}")

    @property
    def outs(self) -> tuple[Slice, ...]:
        """The slices that produce the channels."""
        return tuple(s for s in self.slices if s.kind == "out")


# --------------------------------------------------------------------------- checks


def _dim(module: nn.Module, kind: str) -> int:
    """The weight dimension of a layer that holds its ``kind`` ("out" or "in") channels."""
    transposed = isinstance(module, nn.ConvTranspose2d)
    return int((kind == "out") == transposed)


def _width(module: nn.Module, s: Slice) -> int:
    """How many features ``module`` has where ``s`` points (a repeated channel counts
    ``repeat`` times)."""
    if s.kind == "norm":
        return module.num_features
    return module.weight.shape[_dim(module, s.kind)]


def _module(model: nn.Module, s: Slice, group: str) -> nn.Module:
    try:
        m = model.get_submodule(s.module)
    except AttributeError:
        raise ValueError(f"group {group!r}: the model has no module {s.module!r}") from None
    want = _NORMS if s.kind == "norm" else _LAYERS
    if not isinstance(m, want):
        raise TypeError(f"group {group!r}: {s.module} is a {type(m).__name__}; a {s.kind!r} slice "
                        f"needs one of {', '.join(t.__name__ for t in want)}")
    if s.kind != "norm":
        if getattr(m, "groups", 1) != 1:
            raise ValueError(f"group {group!r}: {s.module} is a grouped conv (groups={m.groups}); "
                             "only groups=1 can be sliced")
        if getattr(m, "sn_eps", None) is not None or hasattr(m, "parametrizations"):
            raise ValueError(f"group {group!r}: {s.module} has spectral norm or a parametrization; "
                             "channel slicing supports plain and lthgan masked layers only")
    return m


def check_groups(model: nn.Module, groups: Sequence[ChannelGroup], complete: bool = False) -> None:
    """:class:`ValueError` unless every slice of ``groups`` names a module of ``model`` of the
    right type and width, group names are unique and no (module, kind) is in two groups.
    ``complete`` also requires every conv, transposed-conv and linear output and every norm
    of ``model`` to belong to a group."""
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"channel group names must be unique, got {names}")
    seen: dict[tuple[str, str], str] = {}
    for g in groups:
        for s in g.slices:
            m = _module(model, s, g.name)
            if _width(m, s) != g.size * s.repeat:
                raise ValueError(f"group {g.name!r} has {g.size} channels but {s.module} ({s.kind}) "
                                 f"has {_width(m, s)} features, {s.repeat} per channel expected")
            key = (s.module, "out" if s.kind == "norm" else s.kind)
            if key in seen:
                raise ValueError(f"{s.module} ({s.kind}) is in groups {seen[key]!r} and {g.name!r}")
            seen[key] = g.name
    if complete:
        for name, m in model.named_modules():
            if isinstance(m, _LAYERS + _NORMS) and (name, "out") not in seen:
                raise ValueError(f"{name} ({type(m).__name__}) belongs to no channel group")


def check_kept(groups: Sequence[ChannelGroup], kept: Mapping[str, Tensor]) -> None:
    """:class:`ValueError` unless ``kept`` maps every group (and nothing else) to a sorted 1-D
    LongTensor of distinct indices in [0, size), at least one, all of a non-prunable group's."""
    names = {g.name for g in groups}
    extra = sorted(set(kept) - names)
    if extra:
        raise ValueError(f"kept names unknown channel groups {extra}; expected {sorted(names)}")
    for g in groups:
        if g.name not in kept:
            raise ValueError(f"kept lacks channel group {g.name!r}")
        idx = kept[g.name]
        if not isinstance(idx, Tensor) or idx.dtype != torch.long or idx.dim() != 1:
            raise ValueError(f"kept[{g.name!r}] must be a 1-D LongTensor, got "
                             f"{getattr(idx, 'dtype', type(idx).__name__)}")
        n = idx.numel()
        if n == 0 or (n > 1 and not bool((idx[1:] > idx[:-1]).all())) or int(idx[0]) < 0 \
                or int(idx[-1]) >= g.size:
            raise ValueError(f"kept[{g.name!r}] must be sorted distinct indices in [0, {g.size}), "
                             f"at least one; got {idx.tolist()}")
        if not g.prunable and n != g.size:
            raise ValueError(f"channel group {g.name!r} is not prunable but kept has {n} of its "
                             f"{g.size} channels")


# --------------------------------------------------------------------------- scores


def _effective(m: nn.Module) -> Tensor:
    w = lnn.raw_weight(m).detach()
    return w * m.mask if lnn.is_masked(m) else w


def _filter_l1(m: nn.Module, s: Slice) -> Tensor:
    """Per output channel of layer ``m``, the L1 norm of its filter (all rows of a repeat)."""
    w = _effective(m).abs().float().movedim(_dim(m, "out"), 0)
    return w.reshape(w.shape[0] // s.repeat, -1).sum(1)


@torch.no_grad()
def scores(model: nn.Module, groups: Sequence[ChannelGroup]) -> dict[str, Tensor]:
    """One score per channel of every group (float32, CPU): the |γ| of its ``score_norm``, or,
    with no such norm, the sum over the group's producing layers of each channel's filter L1
    norm (masked entries count as zero). Raw scores: :func:`select` puts them on one scale."""
    check_groups(model, groups)
    out = {}
    for g in groups:
        if g.score_norm is not None:
            norm = model.get_submodule(g.score_norm)
            if norm.weight is None:
                raise ValueError(f"group {g.name!r}: score_norm {g.score_norm} has no affine scale "
                                 "(declare score_norm=None for an L1 score)")
            s = norm.weight.detach().abs().float()
        else:
            s = sum(_filter_l1(model.get_submodule(o.module), o) for o in g.outs)
        out[g.name] = s.cpu().clone()
    return out


# --------------------------------------------------------------------------- selection


def _on_one_scale(scores: Mapping[str, Tensor], groups: Sequence[ChannelGroup]) -> list[Tensor]:
    """The prunable groups' scores, comparable across groups (see :func:`select`)."""
    gammas = [scores[g.name] for g in groups if g.prunable and g.score_norm is not None]
    ref = torch.cat(gammas).median() if gammas else torch.tensor(1.0)
    if not ref > 0:
        ref = torch.tensor(1.0)
    out = []
    for g in groups:
        if not g.prunable:
            continue
        s = scores[g.name].float()
        if g.score_norm is None:
            pos = s[s > 0]
            s = s * (ref / pos.median()) if pos.numel() else s
        out.append(s)
    return out


def _check_scores(scores: Mapping[str, Tensor], groups: Sequence[ChannelGroup]) -> None:
    for g in groups:
        s = scores.get(g.name)
        if not isinstance(s, Tensor) or tuple(s.shape) != (g.size,):
            raise ValueError(f"scores[{g.name!r}] must be a tensor of shape ({g.size},), got "
                             f"{None if s is None else tuple(getattr(s, 'shape', ()))}")
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"scores[{g.name!r}] holds non-finite values")


def select(scores: Mapping[str, Tensor], groups: Sequence[ChannelGroup], n_prune: int,
           keep_min: int = 1) -> dict[str, Tensor]:
    """The channels to keep after removing ``n_prune`` channels over all prunable groups,
    globally lowest score first, keeping at least ``keep_min`` in every group (a group at its
    floor loses no more; the next lowest channel elsewhere goes instead). Ties go by group
    order, then channel index: the same inputs always give the same result. Returns, per
    group, the sorted kept indices (all of a non-prunable group's).

    One scale. A γ score is the scale a normalised activation is multiplied by, so γ's are
    comparable across layers and are ranked as they are (Network Slimming, GAN Slimming).
    A filter's L1 norm is not: it grows with fan-in, kernel area and the number of producing
    layers, and where the producers feed a norm without scale (CycleGAN's residual stream)
    the layer's weight scale does not change the function at all. So each L1-scored group
    is ranked by ``score / median(its positive scores) * median(all prunable γ scores)``
    (1 where no group has γ): its ranking within the group is kept, its typical channel
    counts as a typical γ-scored channel, and the rule is invariant to rescaling the
    group's producers. Medians are robust to the few large or already-zeroed channels."""
    if isinstance(n_prune, bool) or not isinstance(n_prune, int) or n_prune < 0:
        raise ValueError(f"n_prune must be a non-negative int, got {n_prune!r}")
    if isinstance(keep_min, bool) or not isinstance(keep_min, int) or keep_min < 1:
        raise ValueError(f"keep_min must be a positive int, got {keep_min!r}")
    _check_scores(scores, groups)
    prunable = [g for g in groups if g.prunable]
    caps = [max(0, g.size - keep_min) for g in prunable]
    if n_prune > sum(caps):
        raise ValueError(f"n_prune={n_prune} exceeds the {sum(caps)} channels that can go while "
                         f"every group keeps keep_min={keep_min}")
    flat = torch.cat(_on_one_scale(scores, groups)) if prunable else torch.empty(0)
    owner = torch.cat([torch.full((g.size,), i) for i, g in enumerate(prunable)]) if prunable \
        else torch.empty(0, dtype=torch.long)
    offset = [0]
    for g in prunable:
        offset.append(offset[-1] + g.size)
    order = torch.sort(flat, stable=True).indices.tolist()  # ties: group order, then index
    owner_l = owner.tolist()
    removed = [0] * len(prunable)
    drop = torch.zeros(flat.numel(), dtype=torch.bool)
    left = n_prune
    for i in order:
        if left == 0:
            break
        gi = owner_l[i]
        if removed[gi] < caps[gi]:
            removed[gi] += 1
            drop[i] = True
            left -= 1
    kept = {g.name: torch.arange(g.size) for g in groups}
    for gi, g in enumerate(prunable):
        kept[g.name] = torch.nonzero(~drop[offset[gi]:offset[gi + 1]]).flatten()
    return kept


def channel_share(groups: Sequence[ChannelGroup], kept: Mapping[str, Tensor]) -> float:
    """The share of the prunable groups' channels that ``kept`` removes (0.0 when none are
    prunable)."""
    check_kept(groups, kept)
    total = sum(g.size for g in groups if g.prunable)
    gone = sum(g.size - kept[g.name].numel() for g in groups if g.prunable)
    return gone / total if total else 0.0
