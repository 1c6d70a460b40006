"""Python face of ``torch.ops.lthgan``: wrappers, fake (meta) kernels and autograd.

The kernels live in the compiled core (``csrc/``). Here each op gets
- a wrapper that takes ints or tuples the way ``torch.nn.functional`` does,
- a fake kernel so the op traces under ``torch.compile`` / ``torch.export``,
- autograd: the backward is ONE op (``masked_convolution_backward`` or
  ``masked_linear_backward``) that returns grad_input, the already-masked grad_weight and
  grad_bias; no mask-multiply node appears in the autograd graph.
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
    return list(_lib.global_topk_masks(list(weights), list(masks), keep))


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


# ---------------------------------------------------------------------------------------------
# autograd: one backward op per layer family


def _setup_conv(ctx, inputs, output):
    input, weight, mask, bias = inputs[:4]
    ctx.save_for_backward(input, weight, mask)
    ctx.has_bias = bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _grads(ctx, gi, gw, gb):
    need = ctx.needs_input_grad
    gi = gi if need[0] else None
    gw = gw if need[1] else None
    if need[3] and ctx.has_bias:
        gb = gb if gb.dtype == ctx.bias_dtype else gb.to(ctx.bias_dtype)
    else:
        gb = None
    return gi, gw, gb


def _conv2d_setup(ctx, inputs, output):
    _setup_conv(ctx, inputs, output)
    _, _, _, _, stride, padding, dilation, groups = inputs
    ctx.args = (stride, padding, dilation, False, [0, 0], groups)


def _conv2d_backward(ctx, grad_output):
    input, weight, mask = ctx.saved_tensors
    stride, padding, dilation, transposed, output_padding, groups = ctx.args
    need = ctx.needs_input_grad
    gi, gw, gb = _lib.masked_convolution_backward(
        grad_output, input, weight, mask, ctx.has_bias, stride, padding, dilation, transposed,
        output_padding, groups, [need[0], need[1], need[3] and ctx.has_bias])
    gi, gw, gb = _grads(ctx, gi, gw, gb)
    return gi, gw, None, gb, None, None, None, None


def _conv_transpose2d_setup(ctx, inputs, output):
    _setup_conv(ctx, inputs, output)
    _, _, _, _, stride, padding, output_padding, groups, dilation = inputs
    ctx.args = (stride, padding, dilation, True, output_padding, groups)


def _conv_transpose2d_backward(ctx, grad_output):
    gi, gw, _, gb, *_ = _conv2d_backward(ctx, grad_output)
    return gi, gw, None, gb, None, None, None, None, None


def _linear_setup(ctx, inputs, output):
    _setup_conv(ctx, inputs, output)


def _linear_backward(ctx, grad_output):
    input, weight, mask = ctx.saved_tensors
    need = ctx.needs_input_grad
    gi, gw, gb = _lib.masked_linear_backward(grad_output, input, weight, mask, ctx.has_bias,
                                             [need[0], need[1], need[3] and ctx.has_bias])
    gi, gw, gb = _grads(ctx, gi, gw, gb)
    return gi, gw, None, gb


torch.library.register_autograd("lthgan::masked_conv2d", _conv2d_backward,
                                setup_context=_conv2d_setup)
torch.library.register_autograd("lthgan::masked_conv_transpose2d", _conv_transpose2d_backward,
                                setup_context=_conv_transpose2d_setup)
torch.library.register_autograd("lthgan::masked_linear", _linear_backward,
                                setup_context=_linear_setup)
