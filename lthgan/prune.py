"""Choosing which weights survive: magnitude and random masks, the IMP schedule, reports.

Every function works on the lthgan masked layers of a model (``lthgan.nn``): a layer's
mask is its bool buffer ``mask`` and its weight is the raw trainable tensor
(``lthgan.nn.raw_weight``, the pre-spectral-norm weight under spectral norm). Masks are
changed in place (the buffers keep their identity) and pruned weights are zeroed in place,
so optimizers and other references stay valid.

Sparsity arithmetic
-------------------
With ``P`` prunable entries, a target sparsity ``s`` prunes ``Z = floor(s * P + 0.5)``
entries (``s * P`` rounded half up, computed in float64) and keeps ``P - Z``. Entries that
are already pruned stay pruned, so a target below the current sparsity is an error: masks
never grow back. One IMP round at rate 0.2 therefore prunes 20% of the survivors.
"""
from __future__ import annotations

import fnmatch
import math
import numbers
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Sequence

import torch
from torch import nn

from . import ops
from ._io import atomic_write_json
from .nn import MASKABLE_TYPES, built_class, is_masked, masked_modules, raw_weight

__all__ = [
    "CONV_TYPES",
    "LINEAR_TYPES",
    "PrunableWeight",
    "prunable",
    "target_zeros",
    "global_magnitude",
    "layerwise_magnitude",
    "random_masks",
    "imp_schedule",
    "LayerSparsity",
    "SparsityReport",
    "sparsity_report",
    "reset_optimizer_state",
    "zero_pruned_optimizer_state",
]

#: The paper's prunable layers: every convolution and transposed convolution.
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ConvTranspose2d)
#: Added by ``types="conv+linear"``.
LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear,)

_TYPE_PRESETS = {
    "conv": CONV_TYPES,
    "conv+linear": CONV_TYPES + LINEAR_TYPES,
}

# More rounds than any search could run; guards against rates like 1e-12.
_MAX_ROUNDS = 100_000


class PrunableWeight(NamedTuple):
    """One prunable weight: ``name`` is the module's qualified name in the model, ``weight``
    is ``lthgan.nn.raw_weight(module)`` and ``mask`` is the module's bool buffer."""

    name: str
    module: nn.Module
    weight: torch.Tensor
    mask: torch.Tensor


# --------------------------------------------------------------------------- selection


def _resolve_types(types) -> tuple[type[nn.Module], ...]:
    if isinstance(types, str):
        try:
            return _TYPE_PRESETS[types]
        except KeyError:
            raise ValueError(
                f"types={types!r} is not a known preset; expected one of "
                f"{sorted(_TYPE_PRESETS)} or a tuple of nn.Module classes"
            ) from None
    if isinstance(types, type):
        types = (types,)
    try:
        resolved = tuple(types)
    except TypeError:
        raise TypeError(
            f"types must be 'conv', 'conv+linear' or a tuple of nn.Module classes, got {types!r}"
        ) from None
    if not resolved:
        raise ValueError("types is empty: no layer type would be prunable")
    for t in resolved:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise TypeError(f"types must hold nn.Module classes, got {t!r} in {types!r}")
    return resolved


def _resolve_exclude(exclude) -> tuple[str, ...]:
    if exclude is None:
        return ()
    if isinstance(exclude, str):
        return (exclude,)
    patterns = tuple(exclude)
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError(f"exclude must hold fnmatch patterns (str), got {p!r}")
    return patterns


def prunable(
    model: nn.Module,
    types=CONV_TYPES,
    exclude: Iterable[str] | str = (),
) -> list[PrunableWeight]:
    """The prunable weights of ``model``, in ``named_modules()`` order.

    ``types`` selects the layer classes: ``"conv"`` (the default, as in the paper: every
    Conv2d and ConvTranspose2d weight; biases, Linear layers and norm parameters stay
    dense), ``"conv+linear"``, or a tuple of ``nn.Module`` classes. ``exclude`` holds
    fnmatch patterns (case-sensitive) of module names to leave dense, e.g. ``("D.*",)``.

    A masked layer is selected when it is an instance of one of ``types``; a plain layer when
    the class it was built as (``lthgan.nn.built_class``) is exactly one of ``types``, the
    rule ``lthgan.nn.masked`` converts by. Subclasses of the torch layers are neither
    converted nor selected: ``nn.MultiheadAttention``'s ``out_proj`` (a Linear subclass whose
    weight the attention reads directly, so a mask there would not apply) stays dense.

    Every selected module must be an lthgan masked layer; a selected plain torch layer raises
    a ``TypeError`` that suggests the ``lthgan.nn.masked`` call that converts it (or a
    ``ValueError`` where lthgan cannot mask that class).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    classes = _resolve_types(types)
    patterns = _resolve_exclude(exclude)
    out: list[PrunableWeight] = []
    for name, module in model.named_modules():
        masked_layer = is_masked(module)
        if not (isinstance(module, classes) if masked_layer else built_class(module) in classes):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if not masked_layer:
            _refuse_plain(name, module)
        out.append(PrunableWeight(name, module, raw_weight(module), module.mask))
    return out


def _refuse_plain(name: str, module: nn.Module) -> None:
    """The error for a selected plain layer, with the fix that works for it."""
    shown, cls = name or "<root>", built_class(module)
    if cls not in MASKABLE_TYPES:
        raise ValueError(
            f"layer {shown!r} ({cls.__name__}) is selected for pruning, but lthgan can only mask "
            f"{', '.join(t.__name__ for t in MASKABLE_TYPES)} layers; drop {cls.__name__} from "
            "types=, or leave the layer out with exclude=[...]"
        )
    hint = "lthgan.nn.masked(model)"
    if cls not in CONV_TYPES:
        kinds = ", ".join(f"nn.{t.__name__}" for t in CONV_TYPES + (cls,))
        hint = f"lthgan.nn.masked(model, types=({kinds}))"
    raise TypeError(
        f"layer {shown!r} ({type(module).__name__}) is selected for pruning but is a plain "
        f"torch layer without a mask; convert the model first with `{hint}`, "
        "or leave it out with exclude=[...]"
    )


def _select(model, sel) -> list[PrunableWeight]:
    unknown = set(sel) - {"types", "exclude"}
    if unknown:
        raise TypeError(f"unexpected selection argument(s) {sorted(unknown)}; expected types=, exclude=")
    ws = prunable(model, **sel)
    if not ws:
        raise ValueError(
            "the model has no prunable weights for this selection "
            f"(types={sel.get('types', 'conv')!r}, exclude={sel.get('exclude', ())!r})"
        )
    return ws


# --------------------------------------------------------------------------- arithmetic


def _check_sparsity(sparsity) -> float:
    if isinstance(sparsity, torch.Tensor) and sparsity.numel() == 1 and not sparsity.dtype.is_complex:
        sparsity = sparsity.item()
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise TypeError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    s = float(sparsity)
    if not (0.0 <= s < 1.0):  # also rejects NaN
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return s


def target_zeros(sparsity: float, total: int) -> int:
    """Entries pruned at ``sparsity`` out of ``total``: ``floor(sparsity * total + 0.5)``."""
    s = _check_sparsity(sparsity)
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    return min(int(math.floor(s * total + 0.5)), total)


def _zeros(mask: torch.Tensor) -> int:
    return mask.numel() - int(mask.count_nonzero())


def _plan_keep(ws: Sequence[PrunableWeight], sparsity: float) -> int:
    total = sum(w.mask.numel() for w in ws)
    zeros_now = sum(_zeros(w.mask) for w in ws)
    zeros = target_zeros(sparsity, total)
    if zeros < zeros_now:
        raise ValueError(
            f"sparsity={sparsity!r} asks for {zeros} pruned entries out of {total}, but "
            f"{zeros_now} are already pruned (sparsity {zeros_now / total:.6g}); masks never grow "
            "back, so the target must be at least the current sparsity"
        )
    return total - zeros


def _set_masks(ws: Sequence[PrunableWeight], new_masks: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        for w, m in zip(ws, new_masks):
            w.module.set_mask(m, apply=True)
    return {w.name: m for w, m in zip(ws, new_masks)}


# --------------------------------------------------------------------------- masks


def global_magnitude(model: nn.Module, sparsity: float, **sel) -> dict[str, torch.Tensor]:
    """Prune to ``sparsity`` with one global magnitude threshold over all prunable weights.

    Keeps the ``P - floor(sparsity * P + 0.5)`` surviving entries of largest ``|w|``
    (``lthgan.ops.global_topk_masks``: ties go to the earlier layer, then the lower flat
    index; a NaN weight is an error). Sets every layer's mask in place, zeroes the pruned
    weights, and returns the new masks by module name. ``sel``: ``types=``, ``exclude=``
    as in :func:`prunable`.
    """
    s = _check_sparsity(sparsity)
    ws = _select(model, sel)
    keep = _plan_keep(ws, s)
    with torch.no_grad():
        new = ops.global_topk_masks([w.weight.detach() for w in ws], [w.mask for w in ws], keep)
    return _set_masks(ws, new)


def layerwise_magnitude(model: nn.Module, sparsity: float, **sel) -> dict[str, torch.Tensor]:
    """Prune every prunable layer to ``sparsity`` on its own, by magnitude.

    Layer ``l`` with ``P_l`` entries keeps ``P_l - floor(sparsity * P_l + 0.5)``; ties as in
    :func:`global_magnitude`. A layer already sparser than that is an error (masks never
    grow back). Returns the new masks by module name.
    """
    s = _check_sparsity(sparsity)
    ws = _select(model, sel)
    keeps = []
    for w in ws:
        total = w.mask.numel()
        zeros, zeros_now = target_zeros(s, total), _zeros(w.mask)
        if zeros < zeros_now:
            raise ValueError(
                f"layer {w.name!r} already has {zeros_now} of {total} entries pruned, more than the "
                f"{zeros} that sparsity={sparsity!r} asks for; masks never grow back"
            )
        keeps.append(total - zeros)
    with torch.no_grad():
        new = [
            ops.global_topk_masks([w.weight.detach()], [w.mask], keep)[0] for w, keep in zip(ws, keeps)
        ]
    return _set_masks(ws, new)


def random_masks(
    model: nn.Module, sparsity: float, generator: torch.Generator | None = None, **sel
) -> dict[str, torch.Tensor]:
    """Prune to ``sparsity`` with one global random mask over the surviving entries.

    Exactly ``P - floor(sparsity * P + 0.5)`` entries survive, drawn uniformly without
    replacement among those still unpruned (the largest of i.i.d. float64 uniform scores),
    from ``generator`` (torch's default CPU generator when None; the scores are drawn on the
    generator's device): the same generator state gives the same masks. Returns the new
    masks by module name.
    """
    s = _check_sparsity(sparsity)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    ws = _select(model, sel)
    keep = _plan_keep(ws, s)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    with torch.no_grad():
        # i.i.d. float64 scores, then the `keep` largest among the survivors: a uniform draw
        # without replacement (scores are spaced 2**-53 apart, so ties are negligible and
        # broken deterministically anyway).
        scores = [
            torch.rand(w.mask.shape, generator=generator, dtype=torch.float64, device=gen_device)
            for w in ws
        ]
        picked = ops.global_topk_masks(scores, [w.mask.to(gen_device) for w in ws], keep)
        new = [m.to(w.mask.device) for m, w in zip(picked, ws)]
    return _set_masks(ws, new)


# --------------------------------------------------------------------------- schedule


def imp_schedule(rate: float, target: float) -> list[float]:
    """Per-round sparsities of iterative magnitude pruning at ``rate`` per round.

    Round ``r`` reaches ``1 - (1 - rate) ** r`` (rounded to 12 decimals: 0.2, 0.36, 0.488,
    ...) while that is below ``target``; the last round is clipped so that the list ends
    exactly at ``target``. Values within 1e-9 of ``target`` count as reaching it, so float
    noise never adds a spurious round: ``imp_schedule(0.2, 0.36) == [0.2, 0.36]``.
    """
    for label, v in (("rate", rate), ("target", target)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{label} must be a number in (0, 1), got {v!r}")
        if not (0.0 < float(v) < 1.0):
            raise ValueError(f"{label} must be in (0, 1), got {v!r}")
    rate, target = float(rate), float(target)
    rounds = math.log1p(-target) / math.log1p(-rate)
    if rounds > _MAX_ROUNDS:
        raise ValueError(
            f"rate={rate!r} needs about {rounds:.3g} rounds to reach target={target!r}; "
            f"more than {_MAX_ROUNDS} rounds is not a usable schedule"
        )
    out: list[float] = []
    r = 1
    while True:
        s = round(1.0 - (1.0 - rate) ** r, 12)
        if s >= target - 1e-9:
            out.append(target)
            return out
        out.append(s)
        r += 1


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    shape: tuple[int, ...]
    total: int
    zeros: int  # pruned entries (mask == False)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "total": self.total,
            "zeros": self.zeros,
            "sparsity": self.sparsity,
        }


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity per prunable layer, over the prunable weights and over all parameters.

    ``zeros`` counts pruned entries (mask == False). ``overall_sparsity`` is the pruned
    entries of every lthgan masked layer in the model over all parameter entries
    (``model.parameters()``, each shared tensor counted once; buffers excluded).
    """

    layers: tuple[LayerSparsity, ...]
    total_params: int
    overall_pruned: int
    selection: dict = field(default_factory=dict)

    @property
    def prunable_total(self) -> int:
        return sum(l.total for l in self.layers)

    @property
    def prunable_zeros(self) -> int:
        return sum(l.zeros for l in self.layers)

    @property
    def prunable_sparsity(self) -> float:
        t = self.prunable_total
        return self.prunable_zeros / t if t else 0.0

    @property
    def overall_sparsity(self) -> float:
        return self.overall_pruned / self.total_params if self.total_params else 0.0

    def to_dict(self) -> dict:
        return {
            "layers": [l.to_dict() for l in self.layers],
            "prunable_total": self.prunable_total,
            "prunable_zeros": self.prunable_zeros,
            "prunable_sparsity": self.prunable_sparsity,
            "total_params": self.total_params,
            "overall_pruned": self.overall_pruned,
            "overall_sparsity": self.overall_sparsity,
            "selection": dict(self.selection),
        }

    def to_json(self, path) -> None:
        """Write :meth:`to_dict` as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    def table(self) -> str:
        """A fixed-width text table: one row per prunable layer, then the totals."""
        rows = [(l.name or "<root>", "x".join(map(str, l.shape)), l.total, l.zeros, l.sparsity) for l in self.layers]
        rows.append(("prunable (total)", "", self.prunable_total, self.prunable_zeros, self.prunable_sparsity))
        rows.append(("all parameters", "", self.total_params, self.overall_pruned, self.overall_sparsity))
        head = ("layer", "shape", "total", "pruned", "sparsity")
        cells = [head] + [(a, b, f"{c:,}", f"{d:,}", f"{100 * e:.2f}%") for a, b, c, d, e in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(5)]

        def fmt(r):
            return "  ".join(
                r[i].ljust(widths[i]) if i < 2 else r[i].rjust(widths[i]) for i in range(5)
            ).rstrip()

        rule = "  ".join("-" * w for w in widths)
        lines = [fmt(cells[0]), rule] + [fmt(r) for r in cells[1:-2]] + [rule] + [fmt(r) for r in cells[-2:]]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def sparsity_report(model: nn.Module, **sel) -> SparsityReport:
    """Measure ``model``'s sparsity from its masks. ``sel``: ``types=``, ``exclude=``."""
    ws = prunable(model, **sel)
    layers = tuple(
        LayerSparsity(w.name, tuple(w.mask.shape), w.mask.numel(), _zeros(w.mask)) for w in ws
    )
    total_params = sum(p.numel() for p in model.parameters())
    overall_pruned = sum(_zeros(m.mask) for _, m in masked_modules(model))
    return SparsityReport(layers, total_params, overall_pruned, _describe_selection(sel))


def _describe_selection(sel: dict) -> dict:
    """The selection arguments in JSON-ready form."""
    types = sel.get("types", "conv")
    if not isinstance(types, str):
        types = [t.__qualname__ for t in _resolve_types(types)]
    return {"types": types, "exclude": list(_resolve_exclude(sel.get("exclude", ())))}


# --------------------------------------------------------------------------- optimizers


def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Forget every per-parameter state (Adam's moments and step count, SGD momentum).

    Param groups, learning rates and hyper-parameters are kept; the optimizer restarts as if
    freshly built on the same tensors. Returns the optimizer.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    optimizer.state.clear()
    return optimizer


def zero_pruned_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> int:
    """Zero the optimizer's per-parameter state tensors at the pruned entries of ``model``.

    For every lthgan masked layer whose raw weight the optimizer holds state for, each state
    tensor of the weight's shape (Adam's ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``, SGD's
    ``momentum_buffer``, ...) is set to 0 where the mask is False; scalar entries such as
    ``step`` are left alone. Returns the number of state tensors changed.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    changed = 0
    with torch.no_grad():
        for _, module in masked_modules(model):
            w = raw_weight(module)
            state = optimizer.state.get(w)
            if not state:
                continue
            pruned = None
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == w.shape:
                    if pruned is None:
                        pruned = ~module.mask
                    value.masked_fill_(pruned.to(value.device), 0)
                    changed += 1
    return changed
