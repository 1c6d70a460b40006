"""How much colour a CycleGAN level's translations carry, against the real images of each domain.

On `digits` ↔ `digits-m`, A2B digit-FID (on the bundled digits classifier's features) rises with
the colour of the translations: an A2B generator that copies the white digit onto a flat
background can score a *lower* A2B FID than one that paints the photo texture. This script puts
a number on what the samples show: the colourfulness of Hasler and Süsstrunk (2003),
σ_rgyb + 0.3 μ_rgyb on 0–255 RGB, per image, mean ± sd over the first N test images of each
direction's source translated by the level's generator (EMA where kept, as the evaluation uses),
and of the real test images of both domains (grey `digits`: 0). Beside it, the share of each
direction's outputs that the classifier's domain head puts in the target domain ("in target"),
and the level's FID and label kept per direction from its metrics.

    python scripts/translation_colour.py RUN/dense RUN/round-02 [...] [--n 300]

Every level must be a finished level folder (or a checkpoint inside one) of the same data.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from lthgan import gans
from lthgan.gans.cyclegan import translate
from lthgan.metrics import load_digits_classifier
from lthgan.search.checkpoints import model_from_checkpoint
from lthgan.search.errors import RunDirError, SearchError
from lthgan.search.evaluation import load_eval_data
from lthgan.search.rundir import Level, eval_checkpoints
from lthgan.search.verdict import direction_fids


def colourfulness(images: torch.Tensor) -> torch.Tensor:
    """Hasler–Süsstrunk colourfulness of each of ``images`` (N, 3, H, W, float in [-1, 1]):
    sqrt(σ_rg² + σ_yb²) + 0.3 sqrt(μ_rg² + μ_yb²), with rg = R − G and yb = (R + G)/2 − B on
    0–255 values. 0 for a grey image."""
    x = (images.double().clamp(-1, 1) + 1) * 127.5
    r, g, b = x[:, 0].flatten(1), x[:, 1].flatten(1), x[:, 2].flatten(1)
    rg, yb = r - g, 0.5 * (r + g) - b
    std = (rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False)).sqrt()
    mean = (rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2).sqrt()
    return std + 0.3 * mean


@torch.no_grad()
def in_domain(images: torch.Tensor, domain: int, net=None) -> float:
    """Share of ``images`` the bundled digits classifier's domain head assigns to ``domain``
    (0: plain digits, 1: digits over photos)."""
    net = net or load_digits_classifier()
    return (net.domain_logits(images.float()).argmax(1) == domain).float().mean().item()


def _ms(v: torch.Tensor) -> str:
    return f"{v.mean().item():.1f} ± {v.std().item():.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("levels", nargs="+", type=Path, help="finished levels of a CycleGAN run (or checkpoints)")
    ap.add_argument("--n", type=int, default=300, help="test images per direction (the evaluation's 300)")
    a = ap.parse_args(argv)
    rows, data, spec, pairs, net = [], None, None, [], load_digits_classifier()
    for p in a.levels:
        try:
            task, models, _ = model_from_checkpoint(eval_checkpoints(p)[-1])
        except (SearchError, RunDirError) as e:  # one line, as the CLI says it
            print(f"error: {e}", file=sys.stderr)
            return 2
        metrics = _metrics(p)
        if set(models) != {"G_AB", "G_BA"} or metrics is None:
            print(f"{p}: not a finished CycleGAN level (generators {sorted(models)}, "
                  f"metrics {'found' if metrics else 'missing'})", file=sys.stderr)
            return 2
        if data is not None and metrics["data"] != spec:
            print(f"{p}: data {metrics['data']!r}, the levels before it {spec!r}", file=sys.stderr)
            return 2
        if data is None:
            spec = metrics["data"]
            data = load_eval_data(gans.family(task.name), spec, task.config.resolution)
            src = [d.all()[:a.n].float() for d in data.sources]
            print(f"Colourfulness (Hasler–Süsstrunk, 0–255 RGB), mean ± sd over {len(src[0])} test images per "
                  f"direction, data {spec}. Real test images: A {_ms(colourfulness(src[0]))}, "
                  f"B {_ms(colourfulness(src[1]))}; the domain head puts {in_domain(src[0], 0, net):.1%} of A "
                  f"in A and {in_domain(src[1], 1, net):.1%} of B in B.\n")
        ab, ba = translate(models["G_AB"], src[0]), translate(models["G_BA"], src[1])
        col_ab = colourfulness(ab)
        dirs = metrics.get("directions") or {}
        fid, kept = direction_fids(metrics), {d: v.get("label_kept") for d, v in dirs.items()}
        rows.append(f"| {p} | {_ms(col_ab)} | {in_domain(ab, 1, net):.1%} | {_ms(colourfulness(ba))} | "
                    f"{in_domain(ba, 0, net):.1%} | "
                    + " | ".join(_f(fid.get(d)) for d in ("A2B", "B2A"))
                    + " | " + " | ".join(_f(kept.get(d)) for d in ("A2B", "B2A")) + " |")
        if fid.get("A2B") is not None:
            pairs.append((col_ab.mean().item(), fid["A2B"]))
    print("| level | A→B colour | A→B in target | B→A colour | B→A in target | FID A2B | FID B2A "
          "| label kept A2B | label kept B2A |\n|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if len(pairs) >= 3:
        from scipy import stats

        rho, pval = stats.spearmanr(*zip(*pairs))
        print(f"\nSpearman correlation of A→B colourfulness with FID A2B over these {len(pairs)} levels: "
              f"{rho:+.2f} (two-sided p {pval:.3g}).")
    return 0


def _metrics(path: Path) -> dict | None:
    """The metrics of the level ``path`` is (or holds the checkpoint of); None where there are none."""
    m = (path if path.is_dir() else path.parent) / Level.METRICS
    return json.loads(m.read_text()) if m.is_file() else None


def _f(v) -> str:
    return "" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    sys.exit(main())
