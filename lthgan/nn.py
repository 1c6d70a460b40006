"""Masked layers on lthgan's fused ops, model conversion, and masked spectral norm.

``MaskedConv2d``, ``MaskedConvTranspose2d`` and ``MaskedLinear`` subclass their torch
counterparts (same constructors, ``isinstance`` still holds) and add one bool buffer, ``mask``.
Their forward calls ``torch.ops.lthgan.*``, which applies the mask inside the op; their weight
gradient is exactly zero at pruned entries, so pruned weights stay exactly zero under any
optimizer whose update is zero for a zero gradient and zero state (SGD, Adam, AdamW with the
weights kept masked; see :func:`set_mask`).

Conversion (:func:`masked`) keeps a torch parametrization of the weight
(``torch.nn.utils.parametrizations.spectral_norm``, ``weight_norm``, ...): the layer then
computes with ``parametrized(weight * mask) * mask``, which is ``parametrized(weight) * mask``
because pruned raw weights are kept zero, and no gradient reaches a pruned raw weight. A module
registered under several names is converted once and stays shared. Loading a state dict
re-zeroes the pruned entries of the raw weight, whatever the loaded weight holds there.

Spectral norm: use :func:`spectral_norm` (not ``torch.nn.utils.spectral_norm``) on a masked
layer. σ is then that of ``weight * mask``, exactly as a plain-PyTorch spectral norm of the
masked weight, and ``weight`` stays the raw (pre-normalisation) tensor that pruning and
rewinding act on.
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import ops

__all__ = [
    "MASKABLE_TYPES",
    "MaskedConv2d",
    "MaskedConvTranspose2d",
    "MaskedLinear",
    "built_class",
    "is_masked",
    "masked",
    "masked_modules",
    "raw_weight",
    "spectral_norm",
    "unmasked",
]


class _MaskedMixin:
    """Shared mask handling of the masked layers."""

    mask: Tensor

    def _init_mask(self) -> None:
        w = raw_weight(self)
        self.register_buffer("mask", torch.ones(w.shape, dtype=torch.bool, device=w.device))
        self.register_load_state_dict_post_hook(_rezero_after_load)

    @torch.no_grad()
    def set_mask(self, mask: Tensor, apply: bool = True) -> None:
        """Copy ``mask`` into the ``mask`` buffer in place (its identity is kept, so optimizers,
        hooks and parametrizations that hold it stay valid). With ``apply``, the pruned entries
        of the raw weight are set to exactly 0 in place."""
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if mask.shape != self.mask.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)} but {type(self).__name__}'s "
                             f"weight has shape {tuple(self.mask.shape)}")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        self.mask.copy_(mask)
        if apply:
            w = raw_weight(self)
            ops.rewind_([w], [w], [self.mask])

    def _masked_weight_source(self) -> Tensor:
        if getattr(self, "sn_eps", None) is not None:
            return _sn_weight(self)
        if parametrize.is_parametrized(self, "weight"):
            return _parametrized_masked_weight(self)
        return self.weight

    def effective_weight(self) -> Tensor:
        """The weight the layer computes with: masked, and spectrally normalised if enabled."""
        w = self._masked_weight_source()
        return w * self.mask.to(w.dtype)

    def extra_repr(self) -> str:  # type: ignore[override]
        base = super().extra_repr()  # type: ignore[misc]
        n = self.mask.numel()
        kept = int(self.mask.sum()) if n else 0
        return f"{base}, sparsity={1 - kept / n:.4f}" if n else base


class MaskedConv2d(_MaskedMixin, nn.Conv2d):
    """``nn.Conv2d`` whose weight is masked inside the fused op ``lthgan::masked_conv2d``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, input: Tensor) -> Tensor:
        if self.padding_mode != "zeros":
            x = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        elif isinstance(self.padding, str):
            x = F.pad(input, self._reversed_padding_repeated_twice) if self.padding == "same" else input
            padding = (0, 0)
        else:
            x, padding = input, self.padding
        return ops.masked_conv2d(x, self._masked_weight_source(), self.mask, self.bias,
                                 self.stride, padding, self.dilation, self.groups)


class MaskedConvTranspose2d(_MaskedMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` whose weight is masked inside ``lthgan::masked_conv_transpose2d``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        num_spatial_dims = 2
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size,
            num_spatial_dims, self.dilation)
        return ops.masked_conv_transpose2d(input, self._masked_weight_source(), self.mask,
                                           self.bias, self.stride, self.padding, output_padding,
                                           self.groups, self.dilation)


class MaskedLinear(_MaskedMixin, nn.Linear):
    """``nn.Linear`` whose weight is masked inside ``lthgan::masked_linear``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, input: Tensor) -> Tensor:
        return ops.masked_linear(input, self._masked_weight_source(), self.mask, self.bias)


_MASKED_OF = {
    nn.Conv2d: MaskedConv2d,
    nn.ConvTranspose2d: MaskedConvTranspose2d,
    nn.Linear: MaskedLinear,
}
_PLAIN_OF = {v: k for k, v in _MASKED_OF.items()}
#: the torch layer classes :func:`masked` converts (exactly these classes, not subclasses)
MASKABLE_TYPES: tuple[type[nn.Module], ...] = tuple(_MASKED_OF)


def is_masked(module: nn.Module) -> bool:
    """True for lthgan's masked layers."""
    return isinstance(module, _MaskedMixin)


def masked_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every masked layer, in ``named_modules()`` order."""
    return [(n, m) for n, m in model.named_modules() if is_masked(m)]


def raw_weight(module: nn.Module) -> Tensor:
    """The trainable tensor behind ``module.weight``: under a torch parametrization the
    parametrization's ``original`` (with several originals, as under ``weight_norm``'s
    ``(g, v)``, the one of most entries: ``v``), else ``module.weight`` itself (also under
    :func:`spectral_norm`, which keeps the raw weight at ``module.weight``)."""
    if parametrize.is_parametrized(module, "weight"):
        return _weight_original(module.parametrizations["weight"])
    return module.weight


def _originals(plist) -> list[Tensor]:
    if plist.is_tensor:
        return [plist.original]
    return [getattr(plist, f"original{i}") for i in range(plist.ntensors)]


def _weight_original(plist) -> Tensor:
    originals = _originals(plist)
    return max(originals, key=lambda t: t.numel())  # the first of the largest


def _parametrized_masked_weight(module: nn.Module) -> Tensor:
    """``parametrized(raw * mask)``: the parametrization chain of ``module.weight`` evaluated on
    the masked raw weight, so that no gradient reaches a pruned raw entry (torch's spectral
    norm, say, would otherwise send one through σ). Equal to ``module.weight`` while the pruned
    raw entries are zero. torch's parametrization cache (``parametrize.cached()``) is not used."""
    plist = module.parametrizations["weight"]
    raw = _weight_original(plist)
    mask = module.mask
    args = [t * mask if t is raw else t for t in _originals(plist)]
    x = plist[0](*args)
    for i in range(1, len(plist)):
        x = plist[i](x)
    return x


def _rezero_after_load(module: nn.Module, incompatible_keys) -> None:
    """``load_state_dict`` post hook of the masked layers: a loaded weight may carry non-zero
    entries at pruned positions; set them back to 0 (runs after the layer's own tensors and
    its parametrization's originals are loaded)."""
    if is_masked(module):
        with torch.no_grad():
            w = raw_weight(module)
            ops.rewind_([w], [w], [module.mask])


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _check_types(types) -> tuple[type, ...]:
    types = tuple(types) if isinstance(types, (list, tuple)) else (types,)
    for t in types:
        if t not in _MASKED_OF:
            raise ValueError(f"cannot mask layers of type {getattr(t, '__name__', t)!r}; "
                             f"supported: {', '.join(k.__name__ for k in _MASKED_OF)} "
                             "(subclasses of these, such as MultiheadAttention's out_proj, "
                             "are left as they are)")
    return types


def built_class(module: nn.Module) -> type:
    """The class ``module`` was built as: under a torch parametrization, the class that
    ``register_parametrization`` subclassed (``ParametrizedConv2d`` -> ``Conv2d``).

    ``masked`` converts a layer when its built class is exactly one of its ``types``, and
    ``lthgan.prune`` selects plain layers by the same rule. A subclass is not converted: its
    forward may not call the layer's own (``nn.MultiheadAttention`` reads ``out_proj.weight``
    directly, so a mask on ``out_proj`` would never be applied)."""
    cls = type(module)
    if parametrize.is_parametrized(module):
        cls = cls.__bases__[0]
    return cls


def _check_convertible(name: str, module: nn.Module) -> None:
    """Refuse, with one clear line, a layer whose weight cannot be masked faithfully."""
    shown = name or "<root>"
    for hook in module._forward_pre_hooks.values():
        kind = type(hook).__name__
        if kind in ("SpectralNorm", "WeightNorm"):
            raise ValueError(
                f"layer {shown!r} ({type(module).__name__}) has torch's hook-based {kind} "
                f"(torch.nn.utils.{'spectral' if kind == 'SpectralNorm' else 'weight'}_norm), "
                "which lthgan.nn.masked cannot keep; use the parametrization "
                "(torch.nn.utils.parametrizations.*) or lthgan.nn.spectral_norm after masked(), "
                "or leave the layer out with exclude=[...]")
    if not parametrize.is_parametrized(module, "weight"):
        return
    plist = module.parametrizations["weight"]
    raw = _weight_original(plist)
    same = [t for t in _originals(plist) if t.numel() == raw.numel()]
    modes = [(m, m.training) for m in module.modules()]
    try:  # eval mode: torch's spectral norm does no power iteration there
        module.eval()
        with torch.no_grad():
            shape = module.weight.shape
    finally:
        for m, training in modes:
            m.training = training
    if len(same) != 1 or raw.shape != shape or not isinstance(raw, nn.Parameter):
        raise ValueError(
            f"layer {shown!r} ({type(module).__name__}): its weight parametrization has no single "
            f"original of the weight's shape {list(shape)} (originals: "
            f"{[list(t.shape) for t in _originals(plist)]}), so there is no raw weight to mask; "
            "leave the layer out with exclude=[...]")


def _swap(parent: nn.Module, child_name: str, new: nn.Module) -> None:
    if isinstance(parent, (nn.ModuleList, nn.Sequential)) and child_name.isdigit():
        parent[int(child_name)] = new
    else:
        setattr(parent, child_name, new)


def _convert(old: nn.Module, new_cls: type) -> nn.Module:
    """A ``new_cls`` instance sharing ``old``'s parameters, buffers, hooks and parametrizations
    (under a parametrization, a parametrized subclass of ``new_cls``, made as torch makes it)."""
    new = new_cls.__new__(new_cls)
    new.__dict__ = old.__dict__.copy()
    # fresh containers so the two objects do not alias each other's registries
    for key in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
        if key in old.__dict__:
            new.__dict__[key] = old.__dict__[key].copy()
    if parametrize.is_parametrized(old):
        # torch's own steps of register_parametrization (private helpers, no public API)
        parametrize._inject_new_class(new)
        for tensor_name in new.parametrizations:
            parametrize._inject_property(new, tensor_name)
    return new


def _replace_modules(model: nn.Module,
                     replacement: Callable[[nn.Module, list[str]], nn.Module | None]) -> nn.Module:
    """Swap each module of ``model`` for ``replacement(module, names)`` where that is not None,
    at every name the module is registered under (``names``): a shared module is replaced
    once and stays shared. Returns the root (replaced when the model itself is)."""
    names: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        names.setdefault(id(mod), []).append(name)
        modules[id(mod)] = mod
    swaps = []
    for key, mod in modules.items():
        new = replacement(mod, names[key])
        if new is not None:
            swaps.extend((name, new) for name in names[key])
    root = model
    for name, new in swaps:
        if name == "":
            root = new
            continue
        parent_name, _, child = name.rpartition(".")
        _swap(model.get_submodule(parent_name) if parent_name else model, child, new)
    return root


@torch.no_grad()
def masked(model: nn.Module, types=(nn.Conv2d, nn.ConvTranspose2d),
           exclude: Sequence[str] = ()) -> nn.Module:
    """Convert ``model``'s layers of ``types`` to lthgan's masked layers, in place, keeping their
    weights (and any parametrization), and return the model. Layers whose qualified name
    matches a pattern in ``exclude`` (fnmatch) stay as they are. Outputs are unchanged: every
    mask starts all True.

    A layer is converted when the class it was built as (:func:`built_class`) is exactly one of
    ``types``; subclasses stay as they are. A module registered under several names is
    converted once, is left out if any of its names is excluded, and stays shared. A layer with
    torch's hook-based ``spectral_norm``/``weight_norm``, or a weight parametrization without a
    single original of the weight's shape, raises ValueError naming it."""
    types = _check_types(types)
    if isinstance(exclude, str):
        exclude = (exclude,)

    def replacement(mod: nn.Module, names: list[str]) -> nn.Module | None:
        if is_masked(mod) or built_class(mod) not in types:
            return None
        if any(_matches(name, exclude) for name in names):
            return None
        _check_convertible(names[0], mod)
        new = _convert(mod, _MASKED_OF[built_class(mod)])
        new._init_mask()
        return new

    return _replace_modules(model, replacement)


@torch.no_grad()
def unmasked(model: nn.Module) -> nn.Module:
    """Plain torch layers with the masks multiplied into the weights, in place; returns the
    model. Spectral norm added by :func:`spectral_norm` is replaced by torch's own on the
    masked weight (σ stays that of the masked weight); a torch parametrization is kept."""

    def replacement(mod: nn.Module, names: list[str]) -> nn.Module | None:
        return _plain(mod) if is_masked(mod) else None

    return _replace_modules(model, replacement)


def _plain(mod: nn.Module) -> nn.Module:
    w = raw_weight(mod)
    ops.rewind_([w], [w], [mod.mask])
    new = _convert(mod, _PLAIN_OF[built_class(mod)])
    del new._buffers["mask"]
    hooks = new._load_state_dict_post_hooks
    for key in [k for k, h in hooks.items() if h is _rezero_after_load]:
        del hooks[key]
    if getattr(mod, "sn_eps", None) is not None:
        u, v = new._buffers.pop("sn_u"), new._buffers.pop("sn_v")
        n_iter, eps = new.__dict__.pop("sn_n_power_iterations"), new.__dict__.pop("sn_eps")
        torch.nn.utils.parametrizations.spectral_norm(new, n_power_iterations=n_iter, eps=eps)
        p = new.parametrizations["weight"][0]
        p._u.copy_(u)
        p._v.copy_(v)
    return new

# ---------------------------------------------------------------------------------------------
# spectral norm of the masked weight


def spectral_norm(module: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12) -> nn.Module:
    """Spectral normalisation of a masked layer's ``weight * mask`` (SNGAN's discriminator).

    Use this instead of ``torch.nn.utils.spectral_norm`` on lthgan layers: torch's would
    normalise the unmasked weight, so its σ would count pruned entries. Here the layer's
    effective weight is ``(weight * mask) / σ(weight * mask)``: exactly torch's spectral norm
    applied to the masked weight. ``module.weight`` stays the raw trainable tensor (so masks,
    magnitude pruning and rewinding see the pre-normalisation weights, as in the paper's
    IMP_GD), the power-iteration vectors are the buffers ``sn_u``/``sn_v`` (saved in the state
    dict, updated in training mode only), and ``module.effective_weight()`` returns the
    normalised masked weight. Pruned entries get an exactly zero gradient, so they stay zero.
    """
    if not is_masked(module):
        raise TypeError(f"lthgan.nn.spectral_norm needs an lthgan masked layer, got "
                        f"{type(module).__name__}; convert the model with lthgan.nn.masked() "
                        "first")
    if getattr(module, "sn_eps", None) is not None:
        raise ValueError(f"spectral norm is already applied to this {type(module).__name__}")
    if parametrize.is_parametrized(module, "weight"):
        raise ValueError(f"this {type(module).__name__}'s weight has a torch parametrization "
                         "already; lthgan.nn.spectral_norm needs a plain masked layer")
    if isinstance(n_power_iterations, bool) or int(n_power_iterations) <= 0:
        raise ValueError(f"n_power_iterations must be a positive int, got {n_power_iterations!r}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    module.sn_n_power_iterations = int(n_power_iterations)
    module.sn_eps = float(eps)
    with torch.no_grad():
        mat = _sn_matrix(module, module.weight * module.mask)
        h, w = mat.shape
        u = F.normalize(mat.new_empty(h).normal_(0, 1), dim=0, eps=eps)
        v = F.normalize(mat.new_empty(w).normal_(0, 1), dim=0, eps=eps)
        module.register_buffer("sn_u", u)
        module.register_buffer("sn_v", v)
        _power_iteration(module, mat, 15)
    return module


def _sn_matrix(module: nn.Module, w: Tensor) -> Tensor:
    # torch's convention: dim 1 for transposed convolutions, dim 0 otherwise
    if isinstance(module, nn.ConvTranspose2d):
        w = w.transpose(0, 1)
    return w.flatten(1)


@torch.no_grad()
def _power_iteration(module: nn.Module, mat: Tensor, n: int) -> None:
    u, v = module.sn_u, module.sn_v
    for _ in range(n):
        u = F.normalize(torch.mv(mat, v), dim=0, eps=module.sn_eps, out=u)
        v = F.normalize(torch.mv(mat.t(), u), dim=0, eps=module.sn_eps, out=v)


def _sn_weight(module: nn.Module) -> Tensor:
    w = module.weight
    mat = _sn_matrix(module, w * module.mask)
    if module.training:
        _power_iteration(module, mat.detach(), module.sn_n_power_iterations)
    u = module.sn_u.clone(memory_format=torch.contiguous_format)
    v = module.sn_v.clone(memory_format=torch.contiguous_format)
    sigma = torch.vdot(u, torch.mv(mat, v))
    return w / sigma
