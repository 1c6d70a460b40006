"""Structural searches (``--structure channel``): rounds remove whole channels and rebuild the
generators physically narrower.

A round's channels are chosen by its method's mask source (magnitude: the lowest |γ| of the
channels' norm, or the L1 norm of their filters where there is no affine norm, globally over the
generator's prunable channel groups; random; or reused from another run or a ticket), each
generator on its own. Kept channels are always given as indices of the full-width model, so
rounds compose: a round keeps a subset of the previous round's channels. The state a round
starts from is the full-width θ0 (or the late-rewind point, or another seed's init) sliced to
those channels, or, for methods that keep training, the source level's narrower trained state
sliced further. ``target_sparsity`` is the share of prunable channels removed; metrics add the
parameters, MACs per image and latency of the narrower generators.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Mapping

import torch
from torch import Tensor, nn

from .. import prune as _prune
from ..nn import masked_modules
from .errors import SearchError

__all__ = ["groups_of", "full_kept", "check_channels", "kept_from_lists", "kept_to_lists", "slim_groups", "slice_task",
           "choose_by_score", "choose_random", "slim_state", "channel_sparsity", "cost", "gamma_params",
           "LATENCY_BATCHES"]

#: batch sizes the per-round latency is measured at
LATENCY_BATCHES = (1, 64)

Kept = dict  # generator -> group name -> LongTensor of kept channel indices (full-width index space)


def _channels():
    from .. import channels

    return channels


def groups_of(family, config) -> dict[str, list]:
    """The channel groups of each generator; :class:`SearchError` for a family that declares none."""
    if getattr(family, "channel_groups", None) is None:
        raise SearchError(f"the {family.name} family declares no channel groups, so it cannot be searched "
                          "with structure channel", "structure", "gan")
    return dict(family.channel_groups(config))


def full_kept(groups: Mapping[str, list]) -> Kept:
    return {g: {grp.name: torch.arange(grp.size) for grp in gs} for g, gs in groups.items()}


def kept_to_lists(kept: Kept) -> dict:
    return {g: {n: [int(i) for i in idx] for n, idx in by.items()} for g, by in kept.items()}


def kept_from_lists(lists: Mapping) -> Kept:
    return {g: {n: torch.as_tensor(idx, dtype=torch.long) for n, idx in by.items()} for g, by in lists.items()}


def slim_groups(groups: list, kept: Mapping[str, Tensor]) -> list:
    """The groups of a model already narrowed to ``kept``: the same slices, the new sizes."""
    return [dataclasses.replace(grp, size=int(kept[grp.name].numel())) for grp in groups]


def _local(kept_from: Mapping[str, Tensor], kept_to: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``kept_to`` as positions within ``kept_from`` (both full-width indices)."""
    out = {}
    for name, to in kept_to.items():
        pos = {int(i): k for k, i in enumerate(kept_from[name].tolist())}
        missing = [int(i) for i in to if int(i) not in pos]
        if missing:
            raise SearchError(f"channel group {name}: channels {missing[:5]} were removed by an earlier round "
                              "and cannot come back", "structure")
        out[name] = torch.as_tensor([pos[int(i)] for i in to], dtype=torch.long)
    return out


def slice_task(task, groups: Mapping[str, list], kept: Kept, kept_from: Kept | None = None) -> None:
    """Narrow ``task``'s generators in place to ``kept`` (from ``kept_from``: the widths they have
    now, full width when None)."""
    ch = _channels()
    for g, gs in groups.items():
        now = kept_from[g] if kept_from is not None else {grp.name: torch.arange(grp.size) for grp in gs}
        local = _local(now, kept[g])
        task.models[g] = ch.slice_model(task.models[g], slim_groups(gs, now), local)


def check_channels(groups: Mapping[str, list], kept: Kept, target: float, where: str) -> None:
    """:class:`RunDirError` unless every generator keeps the channels ``target`` asks for."""
    from .errors import RunDirError

    for g, gs in groups.items():
        total = sum(grp.size for grp in gs if grp.prunable)
        left = sum(int(kept.get(g, {}).get(grp.name, torch.empty(0)).numel()) for grp in gs if grp.prunable)
        if total - left != _prune.target_zeros(target, total):
            raise RunDirError(f"{where}: {g} keeps {left} of {total} prunable channels, but channel sparsity "
                              f"{target} needs {total - _prune.target_zeros(target, total)}; the run directory "
                              "is inconsistent")


def channel_sparsity(groups: Mapping[str, list], kept: Kept) -> float:
    """Share of the prunable channels removed, over every generator."""
    total = sum(grp.size for gs in groups.values() for grp in gs if grp.prunable)
    left = sum(int(kept[g][grp.name].numel()) for g, gs in groups.items() for grp in gs if grp.prunable)
    return 1.0 - left / total if total else 0.0


def _n_prune(groups: list, now: Mapping[str, Tensor], target: float) -> int:
    """Channels still to remove from one generator for ``target`` (a share of its prunable
    channels; ``floor(target * total + 0.5)`` in all, as for weights)."""
    total = sum(grp.size for grp in groups if grp.prunable)
    gone = total - sum(int(now[grp.name].numel()) for grp in groups if grp.prunable)
    want = _prune.target_zeros(target, total)
    if want < gone:
        raise SearchError(f"target {target} asks for {want} removed channels, but {gone} are gone already",
                          "target_sparsity")
    return want - gone


def choose_by_score(model_of, groups: Mapping[str, list], now: Kept, target: float) -> Kept:
    """Keep, in each generator ``g`` (narrowed to ``now[g]``, trained: ``model_of(g)``), the
    highest-scoring channels so that ``target`` of its prunable channels are removed."""
    ch = _channels()
    out: Kept = {}
    for g, gs in groups.items():
        sg = slim_groups(gs, now[g])
        sel = ch.select(ch.scores(model_of(g), sg), sg, _n_prune(gs, now[g], target))
        out[g] = {grp.name: now[g][grp.name][sel[grp.name]] for grp in gs}
    return out


def choose_random(groups: Mapping[str, list], now: Kept, target: float, seed: int) -> Kept:
    """Remove, in each generator, a uniformly random set of its remaining prunable channels,
    never a group's last one."""
    out: Kept = {}
    for i, (g, gs) in enumerate(groups.items()):
        gen = torch.Generator().manual_seed(seed + i)
        pool = [(grp.name, k) for grp in gs if grp.prunable for k in range(int(now[g][grp.name].numel()))]
        left = {grp.name: int(now[g][grp.name].numel()) for grp in gs}
        drop: dict[str, set] = {grp.name: set() for grp in gs}
        n = _n_prune(gs, now[g], target)
        for j in torch.randperm(len(pool), generator=gen).tolist():
            if n == 0:
                break
            name, k = pool[j]
            if left[name] > 1:
                drop[name].add(k)
                left[name] -= 1
                n -= 1
        out[g] = {grp.name: now[g][grp.name][[k for k in range(int(now[g][grp.name].numel()))
                                               if k not in drop[grp.name]]] for grp in gs}
    return out


def slim_state(build, groups: Mapping[str, list], state: Mapping[str, Tensor], kept: Kept,
               kept_from: Kept | None = None) -> dict[str, Tensor]:
    """``state`` (of the models at ``kept_from`` widths; full width when None) narrowed to
    ``kept``: built, loaded and sliced, so norms, biases and masks follow their channels."""
    task = build()
    if kept_from is not None:
        slice_task(task, groups, kept_from)
    missing, unexpected = task.models.load_state_dict(dict(state), strict=False)
    missing = [k for k in missing if not k.endswith(".mask")]  # a ticket's state leaves its masks out
    if missing or unexpected:
        raise SearchError(f"a start state does not fit the model: missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}")
    slice_task(task, groups, kept, kept_from)
    return {k: v.detach().clone() for k, v in task.models.state_dict().items()}


def gamma_params(task, groups: Mapping[str, list]) -> list[nn.Parameter]:
    """The γ of every norm that scores a prunable channel group (what ``gamma_l1`` shrinks)."""
    out = []
    for g, gs in groups.items():
        for grp in gs:
            if grp.prunable and grp.score_norm is not None:
                w = task.models[g].get_submodule(grp.score_norm).weight
                if w is not None and all(w is not p for p in out):
                    out.append(w)
    return out


def cost(family, task, models: Mapping[str, nn.Module], device: str) -> dict:
    """What the generators in ``models`` (those evaluated) cost: ``params`` and ``macs`` (per
    image) summed over the generators, and ``latency_<dev>_b<N>_ms``, the median forward time
    of a batch of N, averaged over the generators, on the CPU (batch 1 and 64) and on ``device``
    when it is a GPU; ``per_generator`` holds each generator's figures."""
    ch = _channels()
    per: dict = {}
    for g, m in models.items():
        m = copy.deepcopy(m).eval()
        params, macs = ch.count(m, family.generator_input(task.config, 1))
        lat = {f"cpu_b{b}": ch.latency_ms(m.cpu(), family.generator_input(task.config, b)) for b in LATENCY_BATCHES}
        if torch.device(device).type == "cuda":
            m = m.to(device)
            lat.update({f"cuda_b{b}": ch.latency_ms(m, family.generator_input(task.config, b).to(device))
                        for b in LATENCY_BATCHES})
        per[g] = {"params": params, "macs": macs, "latency_ms": lat}
    out: dict = {"params": sum(v["params"] for v in per.values()), "macs": sum(v["macs"] for v in per.values()),
                 "per_generator": per}
    for key in next(iter(per.values()))["latency_ms"]:
        out[f"latency_{key}_ms"] = sum(v["latency_ms"][key] for v in per.values()) / len(per)
    return out


def unpruned_masks(task) -> dict[str, Tensor]:
    """Every masked layer's (all-True) mask: a structural ticket narrows layers instead."""
    return {n: m.mask.detach().clone() for n, m in masked_modules(task.models)}
