"""Worker for tests/test_dist.py, launched by ``torchrun --standalone --nproc_per_node 2``.

Each rank builds the tiny SNGAN and CycleGAN from a DIFFERENT seed and with different
random masks, so only rank 0's broadcast can make them agree; trains a few steps under
DDP (gloo), rewinds, resets and trains on; then saves what it holds for the test to compare.
Usage: python _dist_worker.py OUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from _gan_data import TinyImageSet
from lthgan import gans
from lthgan import nn as lnn
from lthgan._io import atomic_write
from lthgan.gans import dist


def prune_randomly(model, share, seed):
    g = torch.Generator().manual_seed(seed)
    for _, m in lnn.masked_modules(model):
        m.set_mask(torch.rand(m.mask.shape, generator=g) >= share)


def save(obj, path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    assert dist.init_from_env("cpu")
    r, w = dist.rank(), dist.world_size()
    assert w == 2 and dist.is_main_process() == (r == 0)

    # ---------------- SNGAN
    task = gans.build("sngan", "tiny", seed=10 + r)
    prune_randomly(task.models, 0.3, seed=20 + r)
    tr = gans.make_trainer(task, TinyImageSet(32, 16, seed=3), seed=5)
    assert tr.distributed and tr.d_batch == task.config.d_batch // 2
    theta0 = task.initial_state()  # after make_trainer: rank 0's θ0 on every rank
    first_perm = None
    losses = []
    for i in range(3):
        losses.append(tr.step())
        if i == 0:
            first_perm = tr.sampler.perm.clone()
    task.models.load_state_dict(theta0)  # rewind
    tr.reset()
    losses.append(tr.step())
    state = tr.state_dict()  # collective
    if dist.is_main_process():
        save(state, out / f"sngan_ckpt_rank{r}.pt")
    save({"models": {k: v.clone() for k, v in task.models.state_dict().items()},
          "ema_params": [p.detach().clone() for p in tr.ema.parameters()],
          "theta0": theta0, "perm": first_perm, "losses": losses},
         out / f"sngan_rank{r}.pt")

    # ---------------- CycleGAN (its generators run twice per backward under DDP)
    ctask = gans.build("cyclegan", "tiny", seed=30 + r)
    prune_randomly(ctask.models, 0.3, seed=40 + r)
    ctr = gans.make_trainer(ctask, (TinyImageSet(16, 16, seed=6), TinyImageSet(16, 16, seed=7)), seed=5)
    for _ in range(2):
        ctr.step()
    save({"models": {k: v.clone() for k, v in ctask.models.state_dict().items()}}, out / f"cyclegan_rank{r}.pt")
    dist.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
