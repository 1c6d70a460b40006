"""Transferred tickets against each other and against dense on the new data, paired by seed.

Each run is an ``lthgan transfer`` run directory (its ``round-01`` is the transferred ticket);
at least one run of each seed must hold the dense model trained on the new data (``dense/``,
the default ``--dense``), and the runs of that seed without one are judged against it.

    lthgan transfer --ticket IMP_RUN/seed-00/round-01 --data digits-m --seed 0 --out t/imp-s0
    lthgan transfer --ticket RANDOM_RUN/seed-00/round-01 --data digits-m --seed 0 --no-dense --out t/random-s0
    ...
    python scripts/transfer_vs_random.py --runs imp t/imp-s0 t/imp-s1 t/imp-s2 \\
        --runs random t/random-s0 t/random-s1 t/random-s2

Prints a markdown table: the dense FID, each kind's FID (mean ± sd over seeds) with the search's
matching rule (a one-sided paired t-test at 95%, lthgan.search.verdict.paired_test), and the
first two kinds against each other with one-sided paired t-tests each way.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imp_vs_random import compare, mean_sd  # noqa: E402

from lthgan.search.verdict import paired_test  # noqa: E402


def metrics(run: Path, level: str) -> dict | None:
    f = run / level / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", action="append", required=True, metavar=("LABEL", "RUN"),
                    help="a label and its transfer run directories (one per seed)")
    args = ap.parse_args(argv)
    kinds, dense = {}, {}
    for label, *runs in args.runs:
        kinds[label] = {}
        for r in map(Path, runs):
            m = metrics(r, "round-01")
            if m is None:
                sys.exit(f"{r}: no round-01/metrics.json (an unfinished transfer run?)")
            kinds[label][m["seed"]] = m
            d = metrics(r, "dense")
            if d is not None:
                dense[m["seed"]] = d["fid"]
    seeds = sorted(set(dense).intersection(*[set(k) for k in kinds.values()]))
    if len(seeds) < 2:
        sys.exit(f"need two or more seeds with a dense run and every kind; have {seeds}")
    d = [dense[k] for k in seeds]
    print(f"Seeds {seeds}; data {next(iter(kinds.values()))[seeds[0]]['data']}.\n")
    print("| G | sparsity | FID (mean ± sd) | matching dense | p (worse than dense) |")
    print("|---|---|---|---|---|")
    print(f"| dense | 0% | {mean_sd(d)} | | |")
    fids = {}
    for label, by_seed in kinds.items():
        fids[label] = [by_seed[k]["fid"] for k in seeds]
        ok, p = paired_test(fids[label], d)
        sp = sum(by_seed[k]["sparsity"] for k in seeds) / len(seeds)
        print(f"| {label} | {sp:.2%} | {mean_sd(fids[label])} | {'yes' if ok else 'no'} | {p:.3f} |")
    if len(fids) >= 2:
        (la, a), (lb, b) = list(fids.items())[:2]
        p, q, verdict = compare(a, b)
        verdict = verdict.replace("first", la).replace("second", lb)
        print(f"\n{la} − {lb}: {mean_sd([x - y for x, y in zip(a, b)], sign=True)} FID; "
              f"p ({la} lower) {p:.3f}, p ({lb} lower) {q:.3f}; beyond noise (p < 0.05): {verdict}.")


if __name__ == "__main__":
    main()
