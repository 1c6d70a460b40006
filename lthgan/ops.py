"""Python face of ``torch.ops.lthgan``: wrappers, fake (meta) kernels and vmap rules.

The kernels and their autograd live in the compiled core (``csrc/``; autograd in
``csrc/autograd/``, so C++ programs get it too and Python adds nothing per call). Here each op
gets
- a wrapper that takes ints or tuples the way ``torch.nn.functional`` does,
- a fake kernel so the op traces under ``torch.compile`` / ``torch.export``,
- a batching rule for ``torch.func.vmap``.

First-order backward is ONE op (``masked_convolution_backward`` or ``masked_linear_backward``)
that returns grad_input, the already-masked grad_weight and grad_bias; with
``create_graph=True`` the backward is built from differentiable ATen ops, so gradient
penalties and ``torch.autograd.gradgradcheck`` see the derivatives of ``op(x, w * m, b)``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loads the library that defines torch.ops.lthgan)

__all__ = [
    "masked_conv2d",
    "masked_conv_transpose2d",
    "masked_linear",
    "global_topk_masks",
    "rewind_",
]

_lib = torch.ops.lthgan
IntOrPair = Union[int, Sequence[int]]


def _pair(v: IntOrPair, name: str) -> list[int]:
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    if isinstance(v, int):
        return [v, v]
    try:
        vals = [int(x) for x in v]
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    if len(vals) == 1:
        return vals * 2
    if len(vals) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {tuple(vals)}")
    return vals


# ---------------------------------------------------------------------------------------------
# wrappers


def masked_conv2d(input: Tensor, weight: Tensor, mask: Tensor, bias: Optional[Tensor] = None,
                  stride: IntOrPair = 1, padding: IntOrPair = 0, dilation: IntOrPair = 1,
                  groups: int = 1) -> Tensor:
    """``F.conv2d(input, weight * mask, bias, ...)`` with the mask applied inside the op."""
    if isinstance(padding, str):
        raise ValueError(
            f"padding={padding!r}: string padding is handled by lthgan.nn.MaskedConv2d; "
            "pass explicit ints here")
    return _lib.masked_conv2d(input, weight, mask, bias, _pair(stride, "stride"),
                              _pair(padding, "padding"), _pair(dilation, "dilation"), int(groups))


def masked_conv_transpose2d(input: Tensor, weight: Tensor, mask: Tensor,
                            bias: Optional[Tensor] = None, stride: IntOrPair = 1,
                            padding: IntOrPair = 0, output_padding: IntOrPair = 0,
                            groups: int = 1, dilation: IntOrPair = 1) -> Tensor:
    """``F.conv_transpose2d(input, weight * mask, bias, ...)`` with the mask applied inside."""
    return _lib.masked_conv_transpose2d(
        input, weight, mask, bias, _pair(stride, "stride"), _pair(padding, "padding"),
        _pair(output_padding, "output_padding"), int(groups), _pair(dilation, "dilation"))


def masked_linear(input: Tensor, weight: Tensor, mask: Tensor,
                  bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(input, weight * mask, bias)`` with the mask applied inside the op."""
    return _lib.masked_linear(input, weight, mask, bias)


def global_topk_masks(weights: Sequence[Tensor], masks: Sequence[Tensor], keep: int) -> list[Tensor]:
    """New bool masks keeping exactly ``keep`` entries in total: the largest ``|w|`` among the
    entries still set in ``masks``, with one global threshold over all tensors.

    Ties at the threshold go to the earlier tensor, then the lower flat index, so the result is
    a pure function of the inputs. NaN is an error; ``keep`` must lie in [0, set entries].
    """
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise TypeError(f"keep must be an int, got {keep!r}")
    weights, masks = list(weights), list(masks)
    if not weights and not masks and keep == 0:
        return []
    return list(_lib.global_topk_masks(weights, masks, keep))


def rewind_(weights: Sequence[Tensor], sources: Sequence[Tensor],
            masks: Sequence[Optional[Tensor]]) -> None:
    """In place: ``weights[i] = where(masks[i], sources[i], 0)``, or a plain copy where
    ``masks[i]`` is None. One fused pass; tensor identity and storage are kept. All arguments
    are checked before anything is written."""
    weights = list(weights)
    with torch.no_grad():
        _lib.rewind_(weights, list(sources), list(masks))


# ---------------------------------------------------------------------------------------------
# fake kernels


def _fake_weight(input: Tensor, weight: Tensor) -> Tensor:
    return weight.new_empty(weight.shape, dtype=input.dtype)


def _fake_bias(input: Tensor, bias: Optional[Tensor]) -> Optional[Tensor]:
    return None if bias is None else bias.new_empty(bias.shape, dtype=input.dtype)


def _check_mask_like(op: str, weight: Tensor, mask: Tensor) -> None:
    torch._check(mask.dtype == torch.bool,
                 lambda: f"lthgan.{op}: mask must be a bool tensor, got dtype {mask.dtype}")
    torch._check(mask.shape == weight.shape,
                 lambda: f"lthgan.{op}: mask has shape {tuple(mask.shape)} but weight has shape "
                         f"{tuple(weight.shape)}; they must match")


@torch.library.register_fake("lthgan::masked_conv2d")
def _(input, weight, mask, bias, stride, padding, dilation, groups):
    _check_mask_like("masked_conv2d", weight, mask)
    return torch.nn.functional.conv2d(input, _fake_weight(input, weight), _fake_bias(input, bias),
                                      stride, padding, dilation, groups)


@torch.library.register_fake("lthgan::masked_conv_transpose2d")
def _(input, weight, mask, bias, stride, padding, output_padding, groups, dilation):
    _check_mask_like("masked_conv_transpose2d", weight, mask)
    return torch.nn.functional.conv_transpose2d(
        input, _fake_weight(input, weight), _fake_bias(input, bias), stride, padding,
        output_padding, groups, dilation)


@torch.library.register_fake("lthgan::masked_linear")
def _(input, weight, mask, bias):
    _check_mask_like("masked_linear", weight, mask)
    return torch.nn.functional.linear(input, _fake_weight(input, weight), _fake_bias(input, bias))


def _empty_like_placeholder(t: Tensor) -> Tensor:
    return t.new_empty((0,))


@torch.library.register_fake("lthgan::masked_convolution_backward")
def _(grad_output, input, weight, mask, has_bias, stride, padding, dilation, transposed,
      output_padding, groups, output_mask):
    gi = torch.empty_like(input) if output_mask[0] else _empty_like_placeholder(input)
    gw = torch.empty_like(weight) if output_mask[1] else _empty_like_placeholder(weight)
    if output_mask[2] and has_bias:
        n = weight.shape[1] * groups if transposed else weight.shape[0]
        gb = weight.new_empty((n,))
    else:
        gb = _empty_like_placeholder(weight)
    return gi, gw, gb


@torch.library.register_fake("lthgan::masked_linear_backward")
def _(grad_output, input, weight, mask, has_bias, output_mask):
    gi = torch.empty_like(input) if output_mask[0] else _empty_like_placeholder(input)
    gw = torch.empty_like(weight) if output_mask[1] else _empty_like_placeholder(weight)
    gb = weight.new_empty((weight.shape[0],)) if (output_mask[2] and has_bias) \
        else _empty_like_placeholder(weight)
    return gi, gw, gb


@torch.library.register_fake("lthgan::global_topk_masks")
def _(weights, masks, keep):
    return [torch.empty_like(m, dtype=torch.bool) for m in masks]


@torch.library.register_fake("lthgan::rewind_")
def _(weights, sources, masks):
    return None


@torch.library.register_fake("lthgan::adam_step_")
def _(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, weight_decay, eps,
      decoupled):
    return None


# ---------------------------------------------------------------------------------------------
# vmap (torch.func): batching rules for the three layer ops. Autograd is in C++
# (csrc/autograd/), so torch.func.grad needs nothing here; under grad, the backward of
# higher order is built from ATen ops that have their own batching rules.


def _bdim_first(t: Optional[Tensor], bdim: Optional[int], size: int) -> Optional[Tensor]:
    if t is None:
        return None
    if bdim is None:
        return t.expand(size, *t.shape)
    return t.movedim(bdim, 0)


def _batch_size(args, in_dims) -> int:
    return next(a.shape[d] for a, d in zip(args, in_dims) if d is not None and a is not None)


def _vmap_layer(call, n_tensor_args: int, feature_dims: int):
    """A batching rule: one call with the vmapped dimension folded into the batch dimension of
    the input when only the input is batched; one call per sample otherwise (a batched weight,
    mask or bias: a different layer per sample)."""

    def rule(info, in_dims, *args):
        tensors, rest = list(args[:n_tensor_args]), args[n_tensor_args:]
        dims = in_dims[:n_tensor_args]
        size = _batch_size(tensors, dims)
        x = _bdim_first(tensors[0], dims[0], size)
        if all(d is None for d in dims[1:]):
            if x.dim() == feature_dims + 1:      # per sample unbatched: the vmap dim is the batch
                return call(x, *tensors[1:], *rest), 0
            lead = x.shape[:2]
            out = call(x.reshape(-1, *x.shape[2:]), *tensors[1:], *rest)
            return out.reshape(*lead, *out.shape[1:]), 0
        ts = [_bdim_first(t, d, size) for t, d in zip(tensors, dims)]
        outs = [call(*(None if t is None else t[i] for t in ts), *rest) for i in range(size)]
        return torch.stack(outs), 0

    return rule


torch.library.register_vmap("lthgan::masked_conv2d", _vmap_layer(_lib.masked_conv2d, 4, 3))
torch.library.register_vmap("lthgan::masked_conv_transpose2d",
                            _vmap_layer(_lib.masked_conv_transpose2d, 4, 3))


def _vmap_linear(info, in_dims, input, weight, mask, bias):
    if in_dims[1] is None and in_dims[2] is None and in_dims[3] is None:
        # linear acts on the last dimension: the vmapped one, moved to the front, is just
        # another batch dimension.
        return _lib.masked_linear(input.movedim(in_dims[0], 0), weight, mask, bias), 0
    return _vmap_layer(_lib.masked_linear, 4, 1)(info, in_dims, input, weight, mask, bias)


torch.library.register_vmap("lthgan::masked_linear", _vmap_linear)
