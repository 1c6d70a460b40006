"""Adam and AdamW on lthgan's fused step (``torch.ops.lthgan.adam_step_``).

Drop-in for ``torch.optim.Adam`` / ``torch.optim.AdamW``: same constructor, param groups,
state (``step``, ``exp_avg``, ``exp_avg_sq``) and ``state_dict`` (one loads into the other).
A group of dense float32/float64 parameters with float hyper-parameters goes through one
fused pass per element (CPU: vectorised and parallel; CUDA: one kernel per tensor). Options
the fused step does not take (amsgrad, maximize, capturable, differentiable, tensor lr or
betas, sparse gradients, half precision) run torch's own implementation for that group.

For a pruned weight (gradient masked to zero by lthgan's layers, moments zero) the Adam
update is exactly zero, so pruned entries stay exactly zero: on CPU the branch-free arithmetic
gives them a zero update (a skip test cost more than it saved at unstructured sparsity), and
the CUDA kernel skips them.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import ops as _ops  # noqa: F401  (loads torch.ops.lthgan)

__all__ = ["Adam", "AdamW"]

_FAST_DTYPES = (torch.float32, torch.float64)


def _step_dtype() -> torch.dtype:
    # as torch.optim: state["step"] is float64 when the default dtype is float64
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _fast_group(group: dict[str, Any]) -> bool:
    if group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]:
        return False
    if isinstance(group["lr"], Tensor) or any(isinstance(b, Tensor) for b in group["betas"]):
        return False
    return True


def _fast_param(p: Tensor, device: torch.device) -> bool:
    g = p.grad
    return (p.dtype in _FAST_DTYPES and p.device == device and not g.is_sparse
            and g.dtype == p.dtype and p.is_contiguous() and g.is_contiguous()
            and not torch.is_complex(p))


class _FusedAdamMixin:
    """The step of Adam and AdamW: fused groups here, the rest through torch's step."""

    _decoupled_default = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        # torch sets this for fused=True, and GradScaler then hands the step its scale; this
        # step takes none, so GradScaler unscales the gradients itself first.
        self._step_supports_amp_scaling = False

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        slow = []
        for group in self.param_groups:
            if not _fast_group(group) or not self._fused_group_step(group):
                slow.append(group)
        if slow:
            self._torch_step(slow)
        return loss

    def _fused_group_step(self, group: dict[str, Any]) -> bool:
        """Runs the fused step on `group`; False (nothing done) if a parameter needs torch's."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return True
        device = params[0].device
        if not all(_fast_param(p, device) for p in params):
            return False
        grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
        state = self.state
        for p in params:
            st = state[p]
            if len(st) == 0:
                st["step"] = torch.tensor(0.0, dtype=_step_dtype())
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            m, v = st["exp_avg"], st["exp_avg_sq"]
            if not (m.is_contiguous() and v.is_contiguous() and m.device == device):
                return False
            grads.append(p.grad)
            exp_avgs.append(m)
            exp_avg_sqs.append(v)
            steps.append(st["step"])
        beta1, beta2 = group["betas"]
        decoupled = bool(group.get("decoupled_weight_decay", self._decoupled_default))
        torch.ops.lthgan.adam_step_(params, grads, exp_avgs, exp_avg_sqs, steps,
                                    float(group["lr"]), float(beta1), float(beta2),
                                    float(group["weight_decay"]), float(group["eps"]), decoupled)
        return True

    def _torch_step(self, groups: list[dict[str, Any]]) -> None:
        # torch's own step over these groups only: the state (keyed by parameter) is shared.
        everything = self.param_groups
        self.param_groups = groups
        try:
            super().step()  # type: ignore[misc]
        finally:
            self.param_groups = everything


class Adam(_FusedAdamMixin, torch.optim.Adam):
    """``torch.optim.Adam`` with lthgan's fused step (see the module docstring)."""


class AdamW(_FusedAdamMixin, torch.optim.AdamW):
    """``torch.optim.AdamW`` with lthgan's fused step (see the module docstring)."""

    _decoupled_default = True
