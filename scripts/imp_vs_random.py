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


def compare(a, b) -> tuple[float, float, str]:
    """Paired one-sided t-tests of two lists of FIDs (same seeds, same order): (p that a is lower,
    p that b is lower, the verdict at 95%)."""
    p = stats.ttest_rel(a, b, alternative="less").pvalue
    q = stats.ttest_rel(a, b, alternative="greater").pvalue
    return p, q, ("first better" if p < 0.05 else "second better" if q < 0.05 else "no")


def mean_sd(xs, sign: bool = False) -> str:
    m = f"{statistics.mean(xs):+.3f}" if sign else f"{statistics.mean(xs):.3f}"
    return f"{m} ± {statistics.stdev(xs):.3f}"


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
            p, q, verdict = compare(a, b)
            verdict = verdict.replace("first", "IMP").replace("second", "random")
            name = c.replace("fid_", "").upper() if c != "fid" else "FID"
            print(f"| {s:.2%} | {name} | {len(seeds)} | {mean_sd(a)} | {mean_sd(b)} "
                  f"| {mean_sd([x - y for x, y in zip(a, b)], sign=True)} | {p:.3f} | {q:.3f} | {verdict} |")

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/imp_vs_random.py RUN/summary_seeds.csv [MORE.csv ...]")
    main(sys.argv[1:])
