"""Pruning methods as plug-ins.

A :class:`Method` is three choices:

* **masks**: how a round's masks are chosen: a criterion over the weights of a trained model
  (``magnitude``: one global threshold per prune group; ``layerwise``: the same share in every
  layer; ``random``: a global random mask), or masks taken from elsewhere (``reuse``: the same
  round of another run; ``ticket``: a ticket file);
* **schedule**: ``iterative`` (each round prunes the survivors of the previous round's trained
  model, reaching ``1 - (1 - rate)^r``) or ``oneshot`` (each round prunes the dense trained
  model straight to its sparsity);
* **start**: the state each round trains from: ``rewind`` (θ0, or the late-rewind point
  under ``--rewind``), ``continue`` (the previous round's trained state: prune and keep
  training), ``reinit`` (a fresh initialisation from another seed) or ``ticket`` (the
  ticket's own state).

``lthgan search --method`` and ``lthgan prune --method`` take the same names. Adding a method
is one :func:`register` call here (see docs/DESIGN.md, "Adding a pruning method").
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from .. import gans as _gans
from .. import prune as _prune
from ..nn import masked_modules
from ..seeding import mix
from ..ticket import Ticket, TicketError
from .errors import RunDirError, SearchError

__all__ = ["Method", "MaskSource", "Criterion", "register", "get", "names", "criteria",
           "reinit_seed", "reseed_seed", "d_seed", "generator_sparsity", "prune_checkpoint"]


class LevelContext(Protocol):
    """What a method needs from the search running it (:class:`lthgan.search.loop.Search`)."""

    config: Any          # SearchConfig
    res: Any             # Resolved

    def checkpoint(self, index: int) -> dict[str, Tensor]: ...
    def load_models(self, module, state, where) -> None: ...
    def rewind_state(self) -> dict[str, Tensor]: ...
    def build(self, seed: int | None = None) -> Any: ...
    def groups(self, task) -> list[str]: ...
    def selection(self) -> dict: ...
    def level_dir(self, index: int) -> Any: ...


# --------------------------------------------------------------------------- masks


class MaskSource:
    """Chooses the masks of a round: sets them on ``task.models`` (pruned weights zeroed)."""

    name = ""

    def choose(self, ctx: LevelContext, method: "Method", index: int, target: float, task) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def choose_channels(self, ctx: LevelContext, method: "Method", index: int, target: float) -> dict:
        """Structural searches: the channels each generator keeps (full-width indices)."""
        raise SearchError(f"the {self.name} criterion does not choose channels; structure channel takes "
                          "magnitude, random or reused channels", "method", "structure")


class Criterion(MaskSource):
    """Masks from the weights of a trained model, by ``fn(model, sparsity, types=...,
    [generator=...])`` of :mod:`lthgan.prune`."""

    def __init__(self, name: str, fn: Callable, seeded: bool = False):
        self.name = name
        self.fn = fn
        self.seeded = seeded

    def prune(self, model, sparsity: float, *, types: str = "conv", seed: int = 0) -> dict:
        """Prune ``model`` in place to ``sparsity`` (already-pruned entries stay pruned)."""
        kw = {"generator": torch.Generator().manual_seed(seed)} if self.seeded else {}
        return self.fn(model, sparsity, types=types, **kw)

    def choose(self, ctx, method, index, target, task) -> None:
        src = method.source(index)
        ctx.load_models(task.models, ctx.checkpoint(src), ctx.level_dir(src))
        for i, g in enumerate(ctx.groups(task)):
            self.prune(task.models[g], target, types=ctx.config.layers,
                       seed=mix(ctx.config.seed, index, i, 0x52414E44))

    def choose_channels(self, ctx, method, index, target) -> dict:
        from . import structure

        src = method.source(index)
        now = ctx.kept(src)
        if self.name == "random":
            return structure.choose_random(ctx.channel_groups, now, target, mix(ctx.config.seed, index, 0x52414E44))
        if self.name != "magnitude":
            return super().choose_channels(ctx, method, index, target)
        trained = ctx.build_at(now)
        ctx.load_models(trained.models, ctx.checkpoint(src), ctx.level_dir(src))
        return structure.choose_by_score(lambda g: trained.models[g], ctx.channel_groups, now, target)


class ReuseMasks(MaskSource):
    """The masks (or kept channels) of the same round of another run (``masks_from``), checked
    to fit."""

    name = "reuse"

    def _ticket(self, ctx, method, index, target) -> Ticket:
        src = ctx.config.masks_from
        if src is None:
            raise SearchError(f"method {method.name} needs masks_from: an IMP run whose round masks it "
                              "reuses (or run it into that IMP run's directory)", "masks_from")
        from .rundir import RunDir

        level = RunDir(src).level(index)
        if not level.done:
            raise SearchError(f"masks_from {src}: {level.name} is not finished there, so its masks are "
                              "not available yet", "masks_from")
        try:
            ticket = Ticket.load(level.ticket)
        except (TicketError, FileNotFoundError) as e:
            raise RunDirError(f"masks_from {src}: {e}", "masks_from") from None
        got = ticket.provenance.get("sparsity_target")
        if got is None or abs(float(got) - target) > 1e-9:
            raise SearchError(f"masks_from {src}: {level.name} was pruned to sparsity {got}, but this "
                              f"search's schedule asks for {target}; use the same prune_rate and "
                              "target_sparsity", "masks_from", "prune_rate", "target_sparsity")
        return ticket

    def choose(self, ctx, method, index, target, task) -> None:
        ticket = self._ticket(ctx, method, index, target)
        try:
            ticket.validate(task.models)
        except TicketError as e:
            raise SearchError(f"masks_from {ctx.config.masks_from}: its masks do not fit this search's "
                              f"models ({e})", "masks_from") from None
        groups = set(ctx.groups(task))
        for n, m in masked_modules(task.models):
            if n.split(".", 1)[0] in groups:
                m.set_mask(ticket.masks[n], apply=True)

    def choose_channels(self, ctx, method, index, target) -> dict:
        from .structure import kept_from_lists

        ticket = self._ticket(ctx, method, index, target)
        if not ticket.channels:
            raise SearchError(f"masks_from {ctx.config.masks_from} is not a channel search", "masks_from")
        return kept_from_lists(ticket.channels)


class TicketMasks(MaskSource):
    """The masks of the ticket file ``ticket`` (lthgan transfer)."""

    name = "ticket"

    def choose(self, ctx, method, index, target, task) -> None:
        ticket = load_ticket(ctx.config.ticket)
        for n, m in masked_modules(task.models):
            m.set_mask(ticket.masks[n], apply=True)

    def choose_channels(self, ctx, method, index, target) -> dict:
        from .structure import kept_from_lists

        return kept_from_lists(load_ticket(ctx.config.ticket).channels or {})


def load_ticket(path) -> Ticket:
    try:
        return Ticket.load(path)
    except (TicketError, FileNotFoundError) as e:
        raise SearchError(f"ticket {path}: {e}", "ticket") from None


_CRITERIA: dict[str, Criterion] = {
    "magnitude": Criterion("magnitude", _prune.global_magnitude),
    "layerwise": Criterion("layerwise", _prune.layerwise_magnitude),
    "random": Criterion("random", _prune.random_masks, seeded=True),
}


# --------------------------------------------------------------------------- start states


def reinit_seed(seed: int) -> int:
    """The seed of the other random init of a random ticket."""
    return mix(seed, 0x5449434B) % (2**31)


def reseed_seed(seed: int, index: int | None = None) -> int:
    """The seed of the other D: ``d_init=reseed`` uses one for every round (``index`` None, as
    the official code's fixed alternative D), ``reseed-each`` a new one for round ``index``."""
    return mix(seed, 0x44) % (2**31) if index is None else mix(seed, index, 0x44) % (2**31)


def d_seed(d_init: str, seed: int, index: int) -> int | None:
    """The seed round ``index``'s D was initialised from, for the reseeding ``d_init``s."""
    return {"reseed": reseed_seed(seed), "reseed-each": reseed_seed(seed, index)}.get(d_init)


def _d_state(ctx, index: int, task, masks: dict, rw: dict, init: dict | None = None) -> dict[str, Tensor]:
    """The discriminators' starting state under ``d_init``: ``init`` (default ``rw``, the
    rewind state) for ``init``."""
    d_init = ctx.res.d_init
    if d_init == "init":
        return rw if init is None else init
    if d_init == "trained":
        return ctx.checkpoint(0)
    seed = d_seed(d_init, ctx.config.seed, index)  # a fresh D from another seed, its masks set first
    out: dict[str, Tensor] = {}
    for d in task.discriminators:
        m = copy.deepcopy(task.models[d])
        for n, mod in masked_modules(m):
            mod.set_mask(masks[f"{d}.{n}" if n else d], apply=True)
        _gans.init_weights(m, task.name, seed)
        out.update({f"{d}.{k}": v.detach().clone() for k, v in m.state_dict().items()})
    return out


def _combine(task, g_state: dict, d_state: dict) -> dict[str, Tensor]:
    gens = set(task.generators)
    return {k: (g_state if k.split(".", 1)[0] in gens else d_state)[k] for k in task.models.state_dict()}


def _start_rewind(ctx, index, task, masks):
    rw = ctx.rewind_state()
    k = ctx.res.rewind_iteration
    return _combine(task, rw, _d_state(ctx, index, task, masks, rw)), ("init" if k == 0 else f"iteration {k}")


def _start_continue(ctx, index, task, masks):
    src = ctx.res.method.source(index)
    return dict(ctx.checkpoint(src)), f"none (keeps training {ctx.level_dir(src).name})"


def _start_reinit(ctx, index, task, masks):
    """G, and D unless ``d_init`` says otherwise, from another seed's initialisation (as the
    official random tickets, which load both from another seed's initial weights)."""
    seed = reinit_seed(ctx.config.seed)
    other = ctx.build(seed=seed).models.state_dict()
    d = _d_state(ctx, index, task, masks, ctx.rewind_state(), init=other)
    return _combine(task, other, d), f"a random init (seed {seed})"


def _start_ticket(ctx, index, task, masks):
    return dict(load_ticket(ctx.config.ticket).state), "the transferred ticket's state"


_STARTS = {"rewind": _start_rewind, "continue": _start_continue, "reinit": _start_reinit,
           "ticket": _start_ticket}


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A pruning method: its masks, its schedule and the state its rounds start from."""

    name: str
    help: str
    masks: MaskSource
    schedule: str = "iterative"      # iterative | oneshot
    start: str = "rewind"            # rewind | continue | reinit | ticket
    internal: bool = False           # not offered by --method (lthgan transfer's)
    structures: tuple[str, ...] = ("weight", "channel")   # the --structure values it works with
    distill: bool = False            # rounds also learn from the dense trained G (content loss)

    def __post_init__(self):
        if self.schedule not in ("iterative", "oneshot"):
            raise ValueError(f"schedule must be iterative or oneshot, got {self.schedule!r}")
        if self.start not in _STARTS:
            raise ValueError(f"start must be one of {', '.join(_STARTS)}, got {self.start!r}")

    def check(self, config) -> None:
        """:class:`SearchError` for settings that have no effect with this method."""
        if config.structure not in self.structures:
            raise SearchError(f"method {self.name} applies to structure {' or '.join(self.structures)}, not "
                              f"{config.structure}", "method", "structure")
        if self.start != "rewind" and config.rewind != "init":
            raise SearchError(f"rewind {config.rewind} has no effect with method {self.name} (its "
                              f"rounds start from {self.start_text}, not from a rewind point)",
                              "rewind", "method")
        if self.start in ("continue", "ticket") and config.d_init is not None:
            raise SearchError(f"d_init {config.d_init} has no effect with method {self.name} (D "
                              f"starts from {self.start_text})", "d_init", "method")

    @property
    def start_text(self) -> str:
        return {"rewind": "the rewind point", "continue": "the previous round's trained state",
                "reinit": "another random init", "ticket": "the ticket's state"}[self.start]

    def source(self, index: int) -> int:
        """The level whose trained model round ``index`` prunes (and, for methods that keep
        training, starts from): the previous round, or the dense level for one-shot methods."""
        return index - 1 if self.schedule == "iterative" else 0

    def schedule_for(self, rate: float, target: float) -> list[float]:
        """The sparsity of each round: IMP's 1 - (1 - rate)^r clipped to ``target``, or just
        ``target`` for a ticket."""
        if isinstance(self.masks, TicketMasks):
            return [float(target)]
        try:
            return _prune.imp_schedule(rate, target)
        except (TypeError, ValueError) as e:
            raise SearchError(str(e), "prune_rate", "target_sparsity") from None

    def start_state(self, ctx, index: int, task, masks: dict) -> tuple[dict[str, Tensor], str]:
        """The state round ``index`` trains from, and a description of it."""
        return _STARTS[self.start](ctx, index, task, masks)


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _METHODS:
        raise ValueError(f"a pruning method named {method.name!r} is registered already")
    _METHODS[method.name] = method
    return method


def names(*, internal: bool = False, criterion: bool = False) -> tuple[str, ...]:
    """Registered method names (``internal``: with lthgan transfer's; ``criterion``: only the
    methods whose masks come from a criterion, which ``lthgan prune`` can apply)."""
    return tuple(n for n, m in _METHODS.items() if (internal or not m.internal)
                 and (not criterion or isinstance(m.masks, Criterion)))


def get(name: str) -> Method:
    m = _METHODS.get(name) if isinstance(name, str) else None
    if m is None:
        raise SearchError(f"unknown method {name!r}; expected one of {', '.join(names())}", "method")
    return m


def criteria() -> dict[str, Criterion]:
    return dict(_CRITERIA)


register(Method("imp", "iterative magnitude pruning, rewinding to θ0 (the paper)", _CRITERIA["magnitude"]))
register(Method("oneshot", "magnitude pruning of the dense trained G straight to each sparsity, "
                "rewinding to θ0", _CRITERIA["magnitude"], schedule="oneshot"))
register(Method("layerwise", "iterative magnitude pruning with the same share pruned in every layer, "
                "rewinding to θ0", _CRITERIA["layerwise"]))
register(Method("random", "a global random mask at each sparsity, trained from θ0",
                _CRITERIA["random"], schedule="oneshot"))
register(Method("random-ticket", "the IMP masks of masks_from with another random init of G and D",
                ReuseMasks(), schedule="oneshot", start="reinit", structures=("weight",)))
register(Method("no-rewind", "standard pruning: prune by magnitude and keep training", _CRITERIA["magnitude"],
                start="continue"))
register(Method("finetune", "prune the dense trained model by magnitude straight to each sparsity, then "
                "keep training it (the classic compression pipeline)", _CRITERIA["magnitude"],
                schedule="oneshot", start="continue"))
register(Method("distill", "GAN-Slimming-style compression: prune the dense trained model by magnitude "
                "straight to each sparsity, then keep training it with a content loss towards the dense "
                "trained G's outputs", _CRITERIA["magnitude"], schedule="oneshot", start="continue",
                distill=True))
register(Method("small-dense", "structure channel: a dense G of the per-layer widths of masks_from's rounds, "
                "trained from a fresh init", ReuseMasks(), schedule="oneshot", start="reinit",
                structures=("channel",)))
register(Method("transfer", "a ticket file's masks and state (lthgan transfer)", TicketMasks(),
                schedule="oneshot", start="ticket", internal=True))


# --------------------------------------------------------------------------- lthgan prune


def generator_sparsity(masks: dict, task, layers: str) -> float:
    """Pruned share of the generators' prunable weights under ``masks`` (D not counted)."""
    names_ = [f"{g}.{w.name}" for g in task.generators for w in _prune.prunable(task.models[g], types=layers)]
    total = sum(masks[n].numel() for n in names_)
    kept = sum(int(masks[n].count_nonzero()) for n in names_)
    return 1.0 - kept / total if total else 0.0


def prune_checkpoint(checkpoint, sparsity: float, *, method: str = "imp", layers: str = "conv",
                     prune_d: bool = False, state: str = "auto", seed: int = 0):
    """``lthgan prune``: mask a checkpoint's generators (and with ``prune_d`` its
    discriminators) to ``sparsity`` by ``method``'s criterion, one threshold per model, and
    return ``(ticket, task, groups)``. The ticket starts from ``state``: ``init`` (θ0 of the
    run the checkpoint belongs to), ``checkpoint`` (its own weights) or ``auto`` (the
    method's start: θ0 when the method rewinds and the run's θ0 is found, else the
    checkpoint). It carries the GAN and its config, so ``lthgan transfer`` rebuilds the model."""
    from .checkpoints import load_tensors, model_from_checkpoint
    from .rundir import eval_checkpoints, find_run_dir

    m = get(method)
    if not isinstance(m.masks, Criterion):
        raise SearchError(f"method {method} takes its masks from another run or a ticket; lthgan prune "
                          f"applies {', '.join(names(criterion=True))}", "method")
    ck = eval_checkpoints(checkpoint)[-1]
    task, _, meta = model_from_checkpoint(ck)
    groups = list(task.generators) + (list(task.discriminators) if prune_d else [])
    for i, g in enumerate(groups):
        try:
            m.masks.prune(task.models[g], sparsity, types=layers, seed=mix(seed, i))
        except ValueError as e:
            raise SearchError(f"cannot prune {g} of {ck} to {sparsity}: {e}", "sparsity") from None
    run = find_run_dir(ck)
    init = run.init_state if run is not None else None
    if state == "init" or (state == "auto" and m.start == "rewind" and init is not None and init.is_file()):
        if init is None or not init.is_file():
            raise SearchError(f"state init: no θ0 (init/state.safetensors) found for {ck}", "state")
        start, rewind = load_tensors(init)[0], "init"
    else:
        start, rewind = task.models.state_dict(), "checkpoint"
    masks = {n: mod.mask for n, mod in masked_modules(task.models)}
    prov = {"round": None, "method": method, "sparsity_target": sparsity, "source": str(ck),
            "gan": task.name, "gan_config": meta.get("gan_config"), "layers": layers, "rewind": rewind,
            "prune_d": prune_d, "sparsity": generator_sparsity(masks, task, layers)}
    return Ticket.from_model(task.models, start, prov), task, groups
