"""The scripts that turn runs into published tables: scripts/imp_vs_random.py and
scripts/transfer_vs_random.py, on constructed inputs whose verdicts are known."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from scipy import stats

REPO = Path(__file__).resolve().parents[1]


def script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def table_rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| sparsity") and not line.startswith("| G ")]


def test_imp_vs_random_pairs_by_sparsity_and_seed(tmp_path):
    # IMP at the 0.2 grid, random at 0.36 in another csv: only 36% pairs; IMP clearly lower there
    imp = {0: 5.0, 1: 6.0, 2: 5.5}
    rnd = {0: 7.1, 1: 8.0, 2: 7.4}
    rows = [dict(method="imp", sparsity_target=0.2, seed=k, fid=9.0) for k in imp]
    rows += [dict(method="imp", sparsity_target=0.36, seed=k, fid=v) for k, v in imp.items()]
    rows += [dict(method="dense", sparsity_target=0.0, seed=k, fid=1.0) for k in imp]
    for name, rs in (("a.csv", rows),
                     ("b.csv", [dict(method="random", sparsity_target=0.36, seed=k, fid=v) for k, v in rnd.items()])):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["method", "sparsity_target", "seed", "fid"])
            w.writeheader()
            w.writerows(rs)
    r = script("imp_vs_random.py", tmp_path / "a.csv", tmp_path / "b.csv")
    assert r.returncode == 0, r.stderr
    (row,) = table_rows(r.stdout)
    p = stats.ttest_rel(list(imp.values()), list(rnd.values()), alternative="less").pvalue
    assert row[0] == "36.00%" and row[2] == "3" and row[-1] == "IMP better"
    assert row[6] == f"{p:.3f}" and row[5].startswith("-2.000 ±")


def transfer_run(root: Path, name: str, seed: int, fid: float, dense: float | None) -> Path:
    run = root / name
    levels = {"round-01": dict(seed=seed, fid=fid, sparsity=0.36, data="digits-m")}
    if dense is not None:
        levels["dense"] = dict(seed=seed, fid=dense, sparsity=0.0, data="digits-m")
    for level, m in levels.items():
        (run / level).mkdir(parents=True)
        (run / level / "metrics.json").write_text(json.dumps(m))
    return run


def test_transfer_vs_random_judges_against_each_seeds_dense(tmp_path):
    dense, imp, rnd = [5.0, 6.0, 5.5], [5.1, 5.8, 5.6], [8.0, 9.5, 8.2]
    a = [transfer_run(tmp_path, f"imp-s{k}", k, imp[k], dense[k]) for k in range(3)]
    b = [transfer_run(tmp_path, f"random-s{k}", k, rnd[k], None) for k in range(3)]
    r = script("transfer_vs_random.py", "--runs", "imp", *a, "--runs", "random", *b)
    assert r.returncode == 0, r.stderr
    rows = {row[0]: row for row in table_rows(r.stdout)}
    assert rows["dense"][2] == "5.500 ± 0.500"
    assert rows["imp"][3] == "yes" and rows["random"][3] == "no"
    p = stats.ttest_rel(rnd, dense, alternative="greater").pvalue
    assert rows["random"][4] == f"{p:.3f}" and rows["random"][1] == "36.00%"
    assert "beyond noise (p < 0.05): imp better" in r.stdout


def test_transfer_vs_random_refuses_an_unfinished_run(tmp_path):
    a = [transfer_run(tmp_path, f"imp-s{k}", k, 5.0 + k, 5.0) for k in range(2)]
    (tmp_path / "random-s0").mkdir()
    r = script("transfer_vs_random.py", "--runs", "imp", *a, "--runs", "random", tmp_path / "random-s0")
    assert r.returncode != 0 and "no round-01/metrics.json" in r.stderr


def test_transfer_vs_random_needs_two_seeds(tmp_path):
    a = [transfer_run(tmp_path, "imp-s0", 0, 5.0, 5.0)]
    r = script("transfer_vs_random.py", "--runs", "imp", *a)
    assert r.returncode != 0 and "two or more seeds" in r.stderr
