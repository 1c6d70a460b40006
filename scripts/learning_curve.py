"""Learning curve of one dense GAN run: digit-FID / IS (and label kept for CycleGAN) of the
evaluated models every K iterations, with the untrained model as the first row.

This is how the quick presets were chosen (see BENCHMARKS.md, "Quick presets"): a preset
must be past the noisy early part of its curve within the time budget, so that a round's
final checkpoint says something about its mask and not about where in an oscillation it
stopped.

    python scripts/learning_curve.py --gan sngan --preset quick --set iterations=1000 --every 100
    python scripts/learning_curve.py --gan cyclegan --preset quick --set iterations=2000 --every 250

With --ticket FILE (a round's ``ticket.safetensors``, and the search's --seed plus the seed
index under --seeds), the curve is that round's: its masks and start state are applied to every
model before training, as the search does, so a ticket's curve can be laid beside the dense one.

Prints one line per evaluation and, with --json FILE, writes all rows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch

from lthgan import gans, search
from lthgan.search.methods import generator_sparsity
from lthgan.ticket import Ticket, TicketError


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.startswith("(") and text.endswith(")"):
        return tuple(float(x) for x in text[1:-1].split(","))
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gan", choices=gans.FAMILIES, required=True)
    p.add_argument("--preset", default="quick", choices=gans.PRESETS)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field (repeatable), e.g. iterations=1000")
    p.add_argument("--every", type=int, default=100, help="evaluate every K iterations")
    p.add_argument("--eval-samples", type=int, default=None,
                   help="images per evaluation (default: the search's, for the preset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the rows to this file")
    p.add_argument("--ticket", default=None, metavar="FILE",
                   help="train this ticket (masks and start state) instead of the dense model")
    args = p.parse_args(argv)

    cfg = gans.default_config(args.gan, args.preset)
    fields = {}
    for item in args.set:
        if "=" not in item:
            p.error(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        fields[k] = _value(v)
    try:
        cfg = dataclasses.replace(cfg, **fields)
    except (TypeError, ValueError) as e:
        p.error(f"--set: {e}")

    res = search.resolve(search.SearchConfig(gan=args.gan, preset=args.preset).validate())
    train = search.load_train_data(res.family, res.data, cfg.resolution)
    evald = search.load_eval_data(res.family, res.data, cfg.resolution, train=train)

    task = gans.build(args.gan, cfg, seed=args.seed)
    sparsity = 0.0
    if args.ticket:
        try:
            ticket = Ticket.load(args.ticket)
            ticket.apply(task.models)
        except (OSError, TicketError) as e:
            p.error(f"--ticket {args.ticket}: {e}")
        sparsity = generator_sparsity(ticket.masks, task, res.config.layers)
    trainer = gans.make_trainer(task, train, iterations=cfg.iterations, seed=args.seed)
    trainer.reset()
    rows = []

    def score(t_train):
        row, _ = search.evaluate_models(task, trainer.eval_models(), evald,
                                        n_samples=args.eval_samples or res.eval_samples,
                                        extractor="digits", seed=args.seed)
        out = {"iteration": trainer.iteration, "train_s": round(t_train, 1), "fid": row["fid"],
               "is": row["is_mean"], "label_kept": row.get("label_kept")}
        if "directions" in row and len(row["directions"]) > 1:
            out.update({f"fid_{d}": m["fid"] for d, m in row["directions"].items()})
        rows.append(out)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}),
              flush=True)

    print(f"# {args.gan} {args.preset} ticket={args.ticket} sparsity={sparsity:.4f} "
          f"{json.dumps(dataclasses.asdict(cfg))}", flush=True)
    t_train = 0.0
    score(t_train)
    while trainer.iteration < trainer.iterations:
        t0 = time.time()
        trainer.step()
        t_train += time.time() - t0
        if trainer.iteration % args.every == 0 or trainer.iteration == trainer.iterations:
            score(t_train)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": dataclasses.asdict(cfg), "threads": torch.get_num_threads(),
                       "ticket": args.ticket, "sparsity": sparsity, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
