#!/usr/bin/env python
"""Train the digits classifier that lthgan's ``digits`` metrics use, and write its weights.

    python scripts/train_digits_classifier.py [--epochs 20] [--seed 0] [--out PATH]

Data: the train splits (data seed 0) of ``digits`` and ``digits-m``, plus the same training digits
blended over photo patches drawn anew every epoch (other ``digits-m`` blend seeds, train digits
only, so the test digits are never seen), with random shifts of up to 2 pixels. Two heads on the
shared 128-d features learn the digit class and the domain (plain digits or over photos), so
that FID on those features sees both. Reports both accuracies on both test splits and
writes ``lthgan/assets/digits_classifier.safetensors`` (atomically). Deterministic for a given seed
and thread count; a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import lthgan  # noqa: F401
except ModuleNotFoundError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lthgan import data, digits
from lthgan._io import atomic_write_bytes
from lthgan.metrics import DIGITS_WEIGHTS, DigitsClassifier

DATA_SEED = 0          # the split the accuracy is reported on; the training digits are its train split
RESOLUTION = 32
MIN_ACCURACY = 0.97


def fixed_training_set() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 images, digit labels and domain labels (0: digits, 1: digits-m) of the digits +
    digits-m train splits, and the train digits' indices."""
    digits = data.load("digits", "train", RESOLUTION, seed=DATA_SEED)
    digits_m = data.load("digits-m", "train", RESOLUTION, seed=DATA_SEED)
    domains = torch.cat([torch.zeros(len(digits), dtype=torch.long), torch.ones(len(digits_m), dtype=torch.long)])
    return (torch.cat([digits.images, digits_m.images]), torch.cat([digits.labels, digits_m.labels]),
            domains, digits.source_index)


def fresh_backgrounds(train_idx: torch.Tensor, k: int) -> torch.Tensor:
    """The training digits blended over new photo patches (blend seed 1000 + k; train digits only,
    so the test digits are never seen)."""
    return digits.digits_m_all.__wrapped__(RESOLUTION, 1000 + k)[train_idx]


def shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (zero padding), per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]


@torch.no_grad()
def accuracy(net: DigitsClassifier, s: data.ImageSet) -> float:
    net.eval()
    pred = torch.cat([net(s.all()[i:i + 1000]).argmax(1) for i in range(0, len(s), 1000)])
    return float((pred == s.labels).float().mean())


@torch.no_grad()
def domain_accuracy(net: DigitsClassifier, s: data.ImageSet, domain: int) -> float:
    net.eval()
    pred = torch.cat([net.domain_logits(s.all()[i:i + 1000]).argmax(1) for i in range(0, len(s), 1000)])
    return float((pred == domain).float().mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--fresh-backgrounds", type=int, default=1,
                   help="copies of the training digits over new photo patches, drawn anew each epoch")
    p.add_argument("--domain-weight", type=float, default=1.0,
                   help="weight of the domain head's loss (plain digits vs digits over photos)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DIGITS_WEIGHTS)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    fixed_images, fixed_labels, fixed_domains, train_idx = fixed_training_set()
    train_labels = fixed_labels[: len(train_idx)]
    labels = torch.cat([fixed_labels] + [train_labels] * args.fresh_backgrounds)
    domains = torch.cat([fixed_domains] + [torch.ones(len(train_idx), dtype=torch.long)] * args.fresh_backgrounds)
    n = labels.shape[0]
    tests = {name: data.load(name, "test", RESOLUTION, seed=DATA_SEED) for name in ("digits", "digits-m")}
    print(f"training on {n} images per epoch ({args.fresh_backgrounds} x {len(train_idx)} over fresh "
          f"backgrounds), testing on {', '.join(f'{k}: {len(v)}' for k, v in tests.items())}", flush=True)

    net = DigitsClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = math.ceil(n / args.batch_size)
    total = args.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.15)
    for epoch in range(args.epochs):
        fresh = [fresh_backgrounds(train_idx, epoch * args.fresh_backgrounds + j)
                 for j in range(args.fresh_backgrounds)]
        x_all = torch.cat([fixed_images] + fresh).float().div_(127.5).sub_(1.0)
        net.train()
        perm = torch.randperm(n, generator=g)
        loss_sum = 0.0
        for i in range(0, n, args.batch_size):
            idx = perm[i:i + args.batch_size]
            x = shift(x_all[idx], 2, g)
            feats = net.features(x)
            loss = (F.cross_entropy(net.head(feats), labels[idx], label_smoothing=0.05)
                    + args.domain_weight * F.cross_entropy(net.domain_head(feats), domains[idx],
                                                           label_smoothing=0.05))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * idx.numel()
        if epoch % 3 == 2 or epoch == args.epochs - 1:
            accs = {k: accuracy(net, v) for k, v in tests.items()}
            daccs = {k: domain_accuracy(net, v, d) for d, (k, v) in enumerate(tests.items())}
            print(f"epoch {epoch + 1:3d}  loss {loss_sum / n:.4f}  "
                  + "  ".join(f"test acc {k} {a:.4f}" for k, a in accs.items())
                  + "  " + "  ".join(f"domain acc {k} {a:.4f}" for k, a in daccs.items())
                  + f"  ({time.time() - t0:.0f} s)", flush=True)

    net.eval()
    accs = {k: accuracy(net, v) for k, v in tests.items()}
    daccs = {k: domain_accuracy(net, v, d) for d, (k, v) in enumerate(tests.items())}
    from safetensors.torch import save

    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    meta = {
        "arch": "lthgan.metrics.DigitsClassifier",
        "trained_by": "scripts/train_digits_classifier.py",
        "args": json.dumps({k: v for k, v in vars(args).items() if k != "out"}),
        "data_seed": str(DATA_SEED),
        "test_accuracy": json.dumps(accs),
        "test_domain_accuracy": json.dumps(daccs),
        "torch": torch.__version__,
    }
    atomic_write_bytes(args.out, save(state, metadata=meta))
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1024:.0f} KiB, {sum(v.numel() for v in state.values())} values); "
          f"test accuracy: " + ", ".join(f"{k} {a:.4f}" for k, a in accs.items())
          + "; domain accuracy: " + ", ".join(f"{k} {a:.4f}" for k, a in daccs.items())
          + f"; {time.time() - t0:.0f} s")
    low = {k: a for k, a in accs.items() if a < MIN_ACCURACY}
    low.update({f"domain {k}": a for k, a in daccs.items() if a < MIN_ACCURACY})
    if low:
        print(f"WARNING: test accuracy below {MIN_ACCURACY}: {low}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
