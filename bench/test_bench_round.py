"""Suite 5, overhead of one IMP round: pruning, rewinding and resetting, against the round's
training time.

For each GAN at ``--bench-preset`` (quick on CPU, paper on CUDA), with the generators at
67.23% sparsity (five rounds of 20%), the rows are:

* ``step``: one training step of the masked GAN (a round is ``iterations`` of them);
* ``prune``: the next round's selection, ``lthgan.prune.global_magnitude`` on every generator
  (67.23% -> 73.79%; weights and masks are restored, untimed, before each round);
* ``rewind``: every parameter of every model back to θ0 in one ``lthgan.ops.rewind_`` call
  (masked weights to ``where(mask, θ0, 0)``), buffers copied;
* ``ticket-apply``: the same through ``lthgan.ticket.Ticket.apply`` (validation included);
* ``reset``: ``Trainer.reset()``: fresh optimizers and schedulers, EMA := G, history
  buffers emptied (after an untimed training step, so there is optimizer state to drop).

``bench/ratios.py`` reports (prune + rewind [+ reset]) / (step × iterations) for the preset's
round. Off the paper preset, the same one-off rows are also measured at the paper's model
sizes (their ``reset`` then drops an empty optimizer state), and with
``LTHGAN_BENCH_PAPER_STEP=1`` one paper-size step too (minutes on CPU), which gives the
paper-recipe share.
"""
from __future__ import annotations

import os

import pytest
import torch

from benchutil import build_variant, make_trainer, run
from lthgan.prune import global_magnitude
from lthgan.profile import Rewinder
from lthgan.ticket import Ticket

PRIOR = 1 - 0.8 ** 5  # 0.67232
TARGET = 1 - 0.8 ** 6  # 0.737856
WHATS = ["step", "prune", "rewind", "ticket-apply", "reset"]


@pytest.mark.parametrize("what", WHATS)
@pytest.mark.parametrize("recipe", ["bench", "paper"])
@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_round(benchmark, device, preset, gan, recipe, what):
    size = preset if recipe == "bench" else "paper"
    if recipe == "paper" and preset == "paper":
        pytest.skip("the bench preset is already paper")
    if recipe == "paper" and what == "step" and device.type == "cpu" \
            and os.environ.get("LTHGAN_BENCH_PAPER_STEP") != "1":
        pytest.skip("a paper-size step takes minutes on CPU; set LTHGAN_BENCH_PAPER_STEP=1")

    task, _ = build_variant(gan, size, "lthgan", PRIOR, device)
    models = task.models
    groups = [models[g] for g in task.generators]
    info = dict(gan=gan, recipe=size, iterations=int(task.config.iterations),
                sparsity_from=PRIOR, sparsity_to=TARGET)
    common = dict(device=device, suite="round", group=f"round {gan} {size}", impl=what,
                  sparsity=TARGET, **info)

    if what == "step":
        global_magnitude_all(groups, TARGET)
        trainer = make_trainer(task, device)
        trainer.step()
        big = size == "paper" and device.type == "cpu"
        run(benchmark, trainer.step, budget_s=4.0, min_rounds=1 if big else 5, **common)
        return

    if what == "prune":
        saved_w = [[t.detach().clone() for t in g.parameters()] for g in groups]
        saved_m = [[m.mask.clone() for _, m in _masked(g)] for g in groups]

        def setup():
            with torch.no_grad():
                for g, ws, ms in zip(groups, saved_w, saved_m):
                    for t, s in zip(g.parameters(), ws):
                        t.copy_(s)
                    for (_, layer), m in zip(_masked(g), ms):
                        layer.set_mask(m, apply=False)

        run(benchmark, lambda: global_magnitude_all(groups, TARGET), setup=setup,
            budget_s=2.0, min_rounds=5, **common)
        return

    global_magnitude_all(groups, TARGET)
    if what == "rewind":
        rewinder = Rewinder(models)  # θ0 = the pruned initial state
        run(benchmark, rewinder, budget_s=2.0, min_rounds=5, **common)
        return
    if what == "ticket-apply":
        ticket = Ticket.from_model(models)
        run(benchmark, lambda: ticket.apply(models), budget_s=2.0, min_rounds=5, **common)
        return
    if what == "reset":
        trainer = make_trainer(task, device)
        step_first = not (size == "paper" and device.type == "cpu")

        def one_step():
            trainer.step()

        run(benchmark, trainer.reset, setup=one_step if step_first else None,
            budget_s=2.0, min_rounds=5, optimizer_state="after a step" if step_first else "empty",
            **common)
        return
    raise AssertionError(what)


def _masked(model):
    from lthgan.nn import masked_modules

    return masked_modules(model)


def global_magnitude_all(groups, sparsity: float) -> None:
    for g in groups:
        global_magnitude(g, sparsity)
