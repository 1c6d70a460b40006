"""IMP against random pruning at each sparsity both reached, paired by seed (seed k of both runs
starts from the same θ0): the mean FID difference ± sd over seeds and a one-sided paired t-test
each way (H1: IMP's FID is lower; H1: random's is). For CycleGAN each direction is tested on its own, as the paper
reports it.

    lthgan report RUN [RUN2]         # writes RUN/summary_seeds.csv
    python scripts/imp_vs_random.py RUN/summary_seeds.csv [RUN2/summary_seeds.csv]

Rows are matched by sparsity (not by round name), so a random baseline may run at another
prune rate (for example 0.36, every second level of IMP at 0.2) in its own run directory.
"""
import csv
import statistics
import sys

from scipy import stats


def load(paths):
    """{(method, sparsity, seed): row} over every csv given (the dense level is skipped)."""
    out = {}
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if r["method"] in ("imp", "random"):
                    out[(r["method"], round(float(r["sparsity_target"]), 6), int(r["seed"]))] = r
    return out


def main(paths):
    rows = load(paths)
    first = next(iter(rows.values()))
    cols = [c for c in first if c.startswith("fid_") and not c.endswith("_sd")] or ["fid"]
    print("| sparsity | FID | seeds | IMP | random | IMP − random (mean ± sd) | p (IMP lower) "
          "| p (random lower) | beyond noise (p < 0.05) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in sorted({s for m, s, _ in rows if m == "imp"}):
        seeds = sorted(k for m, t, k in rows if m == "imp" and t == s and ("random", s, k) in rows)
        if len(seeds) < 2:
            continue
        for c in cols:
            a = [float(rows[("imp", s, k)][c]) for k in seeds]
            b = [float(rows[("random", s, k)][c]) for k in seeds]
            d = [x - y for x, y in zip(a, b)]
            p = stats.ttest_rel(a, b, alternative="less").pvalue
            q = stats.ttest_rel(a, b, alternative="greater").pvalue
            verdict = "IMP better" if p < 0.05 else "random better" if q < 0.05 else "no"
            name = c.replace("fid_", "").upper() if c != "fid" else "FID"
            print(f"| {s:.2%} | {name} | {len(seeds)} | {statistics.mean(a):.3f} ± {statistics.stdev(a):.3f} "
                  f"| {statistics.mean(b):.3f} ± {statistics.stdev(b):.3f} | {statistics.mean(d):+.3f} ± "
                  f"{statistics.stdev(d):.3f} | {p:.3f} | {q:.3f} | {verdict} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/imp_vs_random.py RUN/summary_seeds.csv [MORE.csv ...]")
    main(sys.argv[1:])
