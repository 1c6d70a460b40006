"""Masked layers on lthgan's fused ops, model conversion, and masked spectral norm.

``MaskedConv2d``, ``MaskedConvTranspose2d`` and ``MaskedLinear`` subclass their torch
counterparts (same constructors, ``isinstance`` still holds) and add one bool buffer, ``mask``.
Their forward calls ``torch.ops.lthgan.*``, which applies the mask inside the op; their weight
gradient is exactly zero at pruned entries, so pruned weights stay exactly zero under any
optimizer whose update is zero for a zero gradient and zero state (SGD, Adam, AdamW with the
weights kept masked; see :func:`set_mask`).

Spectral norm: use :func:`spectral_norm` (not ``torch.nn.utils.spectral_norm``) on a masked
layer. σ is then that of ``weight * mask``, exactly as a plain-PyTorch spectral norm of the
masked weight, and ``weight`` stays the raw (pre-normalisation) tensor that pruning and
rewinding act on.
"""
from __future__ import annotations

import fnmatch
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import ops

__all__ = [
    "MaskedConv2d",
    "MaskedConvTranspose2d",
    "MaskedLinear",
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
        return self.weight  # the parametrized weight when a torch parametrization is present

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


def is_masked(module: nn.Module) -> bool:
    """True for lthgan's masked layers."""
    return isinstance(module, _MaskedMixin)


def masked_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every masked layer, in ``named_modules()`` order."""
    return [(n, m) for n, m in model.named_modules() if is_masked(m)]


def raw_weight(module: nn.Module) -> Tensor:
    """The trainable tensor behind ``module.weight``: the parametrization's ``original`` under a
    torch parametrization, else ``module.weight`` itself (also under :func:`spectral_norm`,
    which keeps the raw weight at ``module.weight``)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations["weight"].original
    return module.weight


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _check_types(types) -> tuple[type, ...]:
    types = tuple(types) if isinstance(types, (list, tuple)) else (types,)
    for t in types:
        if t not in _MASKED_OF:
            raise ValueError(f"cannot mask layers of type {getattr(t, '__name__', t)!r}; "
                             f"supported: {', '.join(k.__name__ for k in _MASKED_OF)}")
    return types


def _swap(parent: nn.Module, child_name: str, new: nn.Module) -> None:
    if isinstance(parent, (nn.ModuleList, nn.Sequential)) and child_name.isdigit():
        parent[int(child_name)] = new
    else:
        setattr(parent, child_name, new)


def _convert(old: nn.Module, new_cls: type) -> nn.Module:
    """A ``new_cls`` instance sharing ``old``'s parameters, buffers, hooks and parametrizations."""
    new = new_cls.__new__(new_cls)
    new.__dict__ = old.__dict__.copy()
    # fresh containers so the two objects do not alias each other's registries
    for key in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
        if key in old.__dict__:
            new.__dict__[key] = old.__dict__[key].copy()
    return new


@torch.no_grad()
def masked(model: nn.Module, types=(nn.Conv2d, nn.ConvTranspose2d),
           exclude: Sequence[str] = ()) -> nn.Module:
    """Convert ``model``'s layers of ``types`` to lthgan's masked layers, in place, keeping their
    weights (and any parametrization), and return the model. Layers whose qualified name
    matches a pattern in ``exclude`` (fnmatch) stay as they are. Outputs are unchanged: every
    mask starts all True."""
    types = _check_types(types)
    if isinstance(exclude, str):
        exclude = (exclude,)
    targets = []
    for name, mod in model.named_modules():
        if is_masked(mod) or type(mod) not in types or _matches(name, exclude):
            continue
        targets.append((name, mod))
    if not targets:
        return model
    root_swap = None
    for name, mod in targets:
        new = _convert(mod, _MASKED_OF[type(mod)])
        new._init_mask()
        if name == "":
            root_swap = new
            continue
        parent_name, _, child = name.rpartition(".")
        _swap(model.get_submodule(parent_name) if parent_name else model, child, new)
    return root_swap if root_swap is not None else model


@torch.no_grad()
def unmasked(model: nn.Module) -> nn.Module:
    """Plain torch layers with the masks multiplied into the weights, in place; returns the
    model. Spectral norm added by :func:`spectral_norm` is replaced by torch's own on the
    masked weight (σ stays that of the masked weight)."""
    root_swap = None
    for name, mod in list(model.named_modules()):
        if not is_masked(mod):
            continue
        w = raw_weight(mod)
        ops.rewind_([w], [w], [mod.mask])
        plain_cls = _PLAIN_OF[type(mod)]
        new = _convert(mod, plain_cls)
        del new._buffers["mask"]
        sn = getattr(mod, "sn_eps", None) is not None
        if sn:
            u, v = new._buffers.pop("sn_u"), new._buffers.pop("sn_v")
            n_iter, eps = new.__dict__.pop("sn_n_power_iterations"), new.__dict__.pop("sn_eps")
            torch.nn.utils.parametrizations.spectral_norm(new, n_power_iterations=n_iter, eps=eps)
            p = new.parametrizations["weight"][0]
            p._u.copy_(u)
            p._v.copy_(v)
        if name == "":
            root_swap = new
            continue
        parent_name, _, child = name.rpartition(".")
        _swap(model.get_submodule(parent_name) if parent_name else model, child, new)
    return root_swap if root_swap is not None else model


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
