"""IMP against random pruning (or any two methods, ``--pair A B``) at each sparsity both
reached, paired by seed (seed k of both runs starts from the same θ0): the mean FID difference
± sd over seeds and a one-sided paired t-test each way (H1: IMP's FID is lower; H1: random's
is). For CycleGAN each direction is tested on its own, as the paper reports it. Where the rows
carry MACs per image (structural runs), the table gives both methods' mean MACs.

    lthgan report RUN [RUN2]         # writes RUN/summary_seeds.csv
    python scripts/imp_vs_random.py RUN/summary_seeds.csv [RUN2/summary_seeds.csv]
    python scripts/imp_vs_random.py --pair imp finetune RUN/summary_seeds.csv   # a structural baseline

Rows are matched by sparsity (not by round name), so a random baseline may run at another
prune rate (for example 0.36, every second level of IMP at 0.2) in its own run directory.
"""
import argparse
import csv
import statistics

from scipy import stats


def load(paths, methods=("imp", "random")):
    """{(method, sparsity, seed): row} of ``methods`` over every csv given (the dense level is skipped)."""
    out = {}
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if r["method"] in methods:
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


def _macs(rows, method, s, seeds) -> str:
    vals = [rows[(method, s, k)].get("macs") for k in seeds]
    return f"{statistics.mean(float(v) for v in vals) / 1e6:.2f} M" if all(vals) else ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csvs", nargs="+", help="summary_seeds.csv files (lthgan report writes them)")
    ap.add_argument("--pair", nargs=2, default=("imp", "random"), metavar=("A", "B"),
                    help="the two methods compared (default: imp random)")
    args = ap.parse_args(argv)
    rows = load(args.csvs, args.pair)
    a_name, b_name = args.pair
    a_label, b_label = ({"imp": "IMP"}.get(n, n) for n in args.pair)
    if not rows:
        raise SystemExit(f"no rows of method {a_name} or {b_name} in {', '.join(args.csvs)}")
    first = next(iter(rows.values()))
    cols = [c for c in first if c.startswith("fid_") and not c.endswith("_sd")] or ["fid"]
    with_macs = any(r.get("macs") for r in rows.values())
    macs_head = f" MACs {a_label} | MACs {b_label} |" if with_macs else ""
    print(f"| sparsity | FID | seeds |{macs_head} {a_label} | {b_label} | {a_label} − {b_label} (mean ± sd) "
          f"| p ({a_label} lower) | p ({b_label} lower) | beyond noise (p < 0.05) |")
    print("|---|---|---|" + ("---|---|" if with_macs else "") + "---|---|---|---|---|---|")
    for s in sorted({s for m, s, _ in rows if m == a_name}):
        seeds = sorted(k for m, t, k in rows if m == a_name and t == s and (b_name, s, k) in rows)
        if len(seeds) < 2:
            continue
        macs = f" {_macs(rows, a_name, s, seeds)} | {_macs(rows, b_name, s, seeds)} |" if with_macs else ""
        for c in cols:
            a = [float(rows[(a_name, s, k)][c]) for k in seeds]
            b = [float(rows[(b_name, s, k)][c]) for k in seeds]
            p, q, verdict = compare(a, b)
            verdict = verdict.replace("first better", f"{a_label} better").replace("second better", f"{b_label} better")
            name = c.replace("fid_", "").upper() if c != "fid" else "FID"
            print(f"| {s:.2%} | {name} | {len(seeds)} |{macs} {mean_sd(a)} | {mean_sd(b)} "
                  f"| {mean_sd([x - y for x, y in zip(a, b)], sign=True)} | {p:.3f} | {q:.3f} | {verdict} |")


if __name__ == "__main__":
    main()
