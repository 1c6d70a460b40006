"""Suite 4, one training step: a whole SNGAN and CycleGAN iteration (D and G updates),
dense torch vs lthgan-masked vs torch.nn.utils.prune hooks, via ``lthgan.gans`` trainers.

The GAN size is ``--bench-preset`` (default: quick on CPU, paper on CUDA). The generators are
pruned (IMP_G, the paper's default; D stays dense in every row); see
``benchutil.build_variant`` for exactly what each row runs. Training data are random images.
"""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils import prune as tprune

from benchutil import build_variant, impl_rows, make_trainer, pruned_entries_are_zero, run
from lthgan.nn import masked_modules


@pytest.mark.parametrize("impl, sparsity", impl_rows())
@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_step(benchmark, device, preset, precision, gan, impl, sparsity):
    task, masks = build_variant(gan, preset, impl, sparsity, device)
    if impl == "dense":
        assert not masked_modules(task.models)
    if impl == "prune-hook":
        assert any(tprune.is_pruned(task.models[g]) for g in task.generators)
    trainer = make_trainer(task, device, amp="bf16" if precision == "bf16" else None)
    trainer.step()  # optimizer state, allocator warm-up
    run(benchmark, trainer.step, device=device, suite="step",
        group=f"step {gan} {preset} {precision}", impl=impl, sparsity=sparsity, gan=gan,
        preset=preset, precision=precision, budget_s=4.0 if device.type == "cpu" else 3.0,
        min_rounds=5)
    assert all(pruned_entries_are_zero(task.models[g], impl, by_layer) for g, by_layer in masks.items())
