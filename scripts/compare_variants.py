"""Variants of a several-seed search at one level, paired by seed: each against dense (the
search's matching rule) and against the first variant (one-sided paired t-tests each way). For
ablations such as where D starts (``--d-init``) or whether D is pruned (``--prune-d``).

    lthgan search ... --seeds 3 --out RUN                                   # the reference
    lthgan search ... --seeds 3 --d-init trained --out RUN                  # a baseline of RUN
    python scripts/compare_variants.py --dense RUN --level round-01 \\
        --runs init RUN --runs trained RUN/baselines/imp-...-d-init-trained

Each run directory holds ``seed-KK/LEVEL/metrics.json``; the dense FIDs come from
``--dense``'s ``seed-KK/dense``. Seed k of every run starts from the same θ0, so the seeds pair.
Prints a markdown table.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imp_vs_random import compare, mean_sd  # noqa: E402

from lthgan.search.rundir import Level  # noqa: E402
from lthgan.search.verdict import paired_test  # noqa: E402


def per_seed(run: Path, level: str) -> dict[int, dict]:
    """{seed: metrics} of ``level`` in every ``seed-KK`` of ``run`` that finished it."""
    out = {}
    for seed_dir in sorted(run.glob("seed-*")):
        f = seed_dir / level / Level.METRICS
        if f.is_file() and (seed_dir / level / Level.DONE).is_file():
            out[int(seed_dir.name.split("-")[1])] = json.loads(f.read_text())
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dense", type=Path, required=True, help="the run directory holding seed-KK/dense")
    ap.add_argument("--level", default="round-01", help="the level compared (default round-01)")
    ap.add_argument("--runs", nargs=2, action="append", required=True, metavar=("LABEL", "RUN"),
                    help="a label and its several-seed run directory; the first is the reference")
    args = ap.parse_args(argv)
    dense = {k: m["fid"] for k, m in per_seed(args.dense, "dense").items()}
    runs = {label: per_seed(Path(run), args.level) for label, run in args.runs}
    for label, by_seed in runs.items():
        if not by_seed:
            sys.exit(f"{label}: no finished {args.level} in {dict(args.runs)[label]}")
    seeds = sorted(set(dense).intersection(*[set(r) for r in runs.values()]))
    if len(seeds) < 2:
        sys.exit(f"need two or more seeds with dense and every run at {args.level}; have {seeds}")
    d = [dense[k] for k in seeds]
    (ref_label, ref), *_ = runs.items()
    a = [ref[k]["fid"] for k in seeds]
    print(f"Seeds {seeds}, level {args.level}; dense FID {mean_sd(d)}. A run matches unless a one-sided "
          "paired t-test says, at 95%, that its FID is above dense.\n")
    print(f"| run | G sparsity | D sparsity | d_init | FID | matching (p) | − {ref_label} | "
          f"p (lower than {ref_label}) | p (higher) | beyond noise (p < 0.05) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, by_seed in runs.items():
        f = [by_seed[k]["fid"] for k in seeds]
        ok, p = paired_test(f, d)
        m0 = by_seed[seeds[0]]
        cells = [label, f"{m0['sparsity']:.2%}", f"{m0.get('d_sparsity') or 0.0:.2%}",
                 str(m0.get("d_init") or ""), mean_sd(f), f"{'yes' if ok else 'no'} ({p:.3f})"]
        if label == ref_label:
            cells += ["", "", "", ""]
        else:
            lo, hi, verdict = compare(f, a)
            verdict = {"first better": "lower", "second better": "higher"}.get(verdict, "no")
            cells += [mean_sd([x - y for x, y in zip(f, a)], sign=True), f"{lo:.3f}", f"{hi:.3f}", verdict]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
