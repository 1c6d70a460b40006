"""Channel pruning: structural tickets that make a generator physically smaller.

A GAN family declares its generators' :class:`ChannelGroup` s (``Family.channel_groups``):
channels that must be kept or removed together because layers share them (a conv's outputs,
the norm over them, the next layers' inputs; every layer adding into a residual stream).
On top of that, for one generator and its groups:

- :func:`scores`: one score per channel, the |γ| of the group's affine norm, else the L1
  norm of its filters; :func:`select` removes ``n_prune`` channels globally, lowest score
  first, with γ- and L1-scored groups put on one scale (see its docstring);
  :func:`channel_share` is the share of prunable channels removed;
- :func:`slice_model` builds the narrower model, :func:`mask_channels` the same function at
  full width with the removed channels zeroed (the two agree in eval mode);
- :func:`count` (parameters, MACs per image), :func:`latency_ms`, and :func:`export` /
  :func:`load_exported`: a standalone ``torch.export`` (or TorchScript) file that runs
  without lthgan.

This package depends on :mod:`lthgan.nn` only; the families (:mod:`lthgan.gans`) import it.
"""
from __future__ import annotations

from .groups import KINDS, ChannelGroup, Slice, channel_share, check_groups, check_kept, scores, select
from .measure import FORMATS, count, export, exported_format, latency_ms, load_exported
from .surgery import mask_channels, slice_model

__all__ = [
    "KINDS", "FORMATS", "Slice", "ChannelGroup", "check_groups", "check_kept", "scores", "select",
    "channel_share", "slice_model", "mask_channels", "count", "latency_ms", "export",
    "load_exported", "exported_format",
]
