"""``lthgan profile --gan``: training steps of a registered GAN family."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .driver import Options, run
from .result import ProfileResult
from .workload import ProfileError, Workload, check_device


def gan_data(gan: str, config, seed: int = 0, n: int = 64):
    """Random training images of ``gan``'s config (one set, or a pair for two domains): data
    loading is not what ``lthgan profile`` and the benchmarks measure."""
    from .. import gans

    return gans.family(gan).data.random(config, seed, n)


def profile_gan(gan: str, *, preset: str = "quick", device: str | torch.device = "cpu",
                sparsity: float = 0.74, steps: int = 5, warmup: int = 1, amp: str | None = None,
                layer_types: str = "conv", prune_d: bool = False, seed: int = 0,
                trace: str | Path | None = None) -> ProfileResult:
    """Profile training steps of the registered GAN family ``gan`` at ``preset``.

    The generators (and with ``prune_d`` the discriminators) are pruned to ``sparsity``, each
    with its own global threshold; the dense twin has plain torch layers everywhere."""
    from .. import gans

    try:
        config = gans.default_config(gan, preset)
    except ValueError as e:
        raise ProfileError(str(e)) from None
    dev = check_device(device)
    data = gan_data(gan, config, seed)
    tasks: dict[int, Any] = {}  # the driver works on modules; each model's task, by id

    def build():
        task = gans.build(gan, config, seed=seed, device=dev)
        tasks[id(task.models)] = task
        names = list(task.generators) + (list(task.discriminators) if prune_d else [])
        return task.models, [task.models[n] for n in names]

    def make_workload(models: nn.Module, groups: list[nn.Module]) -> Workload:
        task = tasks[id(models)]  # the dense twin's ModuleDict is the task's, unmasked in place
        trainer = gans.make_trainer(task, data, iterations=10**6, device=dev, seed=seed, amp=amp)
        return Workload(step=trainer.step, reset=trainer.reset, models=models, prune_groups=groups)

    opts = Options(target=gan, device=dev, preset=preset, amp=amp, layer_types=layer_types,
                   sparsity=sparsity, steps=steps, warmup=warmup,
                   trace=Path(trace) if trace is not None else None)
    return run(build, make_workload, opts)
