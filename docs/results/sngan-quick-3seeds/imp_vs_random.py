"""IMP against random pruning, level by level, paired by seed (the two share each seed's θ0 and
dense level): mean FID difference ± sd and a one-sided paired t-test (H1: IMP's FID < random's).

    python imp_vs_random.py RUN_DIR/summary_seeds.csv      # after `lthgan report RUN_DIR`
"""
import csv
import statistics
import sys

from scipy import stats


def rows(path, method):
    out = {}
    for r in csv.DictReader(open(path)):
        if r["method"] == method:
            out[(r["name"], int(r["seed"]))] = (float(r["sparsity_target"]), float(r["fid"]))
    return out


imp = rows(sys.argv[1], "imp")
rnd = rows(sys.argv[1], "random")
print("| level | sparsity | seeds | FID IMP − random (mean ± sd) | one-sided paired t-test p | IMP better beyond noise (p < 0.05) |")
print("|---|---|---|---|---|---|")
for level in sorted({n for n, _ in imp}):
    seeds = sorted(s for n, s in imp if n == level and (n, s) in rnd)
    if len(seeds) < 2:
        continue
    a = [imp[(level, s)][1] for s in seeds]
    b = [rnd[(level, s)][1] for s in seeds]
    d = [x - y for x, y in zip(a, b)]
    p = stats.ttest_rel(a, b, alternative="less").pvalue
    print(f"| {level} | {imp[(level, seeds[0])][0]:.2%} | {len(seeds)} | {statistics.mean(d):+.3f} ± "
          f"{statistics.stdev(d):.3f} | {p:.3f} | {'yes' if p < 0.05 else 'no'} |")
