"""The scripts that turn runs into published tables: scripts/imp_vs_random.py,
scripts/transfer_vs_random.py and scripts/compare_variants.py, on constructed inputs whose verdicts are known."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
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


def variant_run(run: Path, level: str, fids: list[float], **extra) -> Path:
    for k, fid in enumerate(fids):
        d = run / f"seed-{k:02d}" / level
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(dict(seed=k, fid=fid, sparsity=0.45, **extra)))
        (d / "DONE").write_text("{}")
    return run


def test_compare_variants_pairs_seeds_against_the_reference_and_dense(tmp_path):
    run = variant_run(tmp_path / "run", "dense", [5.0, 6.0, 5.5])
    variant_run(run, "round-01", [5.1, 5.8, 5.6], d_init="init", d_sparsity=0.0)
    trained = variant_run(tmp_path / "trained", "round-01", [7.0, 8.1, 7.4], d_init="trained", d_sparsity=0.0)
    pruned = variant_run(tmp_path / "pruned", "round-01", [5.2, 5.7, 5.8], d_init="init", d_sparsity=0.45)
    (pruned / "seed-02" / "round-01" / "DONE").unlink()  # unfinished: seed 2 drops out
    r = script("compare_variants.py", "--dense", run, "--runs", "init", run, "--runs", "trained", trained)
    assert r.returncode == 0, r.stderr
    rows = {row[0]: row for row in table_rows(r.stdout) if row[0] != "run"}
    assert rows["init"][5].startswith("yes") and rows["trained"][5].startswith("no")
    p = stats.ttest_rel([7.0, 8.1, 7.4], [5.1, 5.8, 5.6], alternative="greater").pvalue
    assert rows["trained"][6].startswith("+2.000 ±") and rows["trained"][8] == f"{p:.3f}"
    assert rows["trained"][9] == "higher" and rows["trained"][3] == "trained"
    r = script("compare_variants.py", "--dense", run, "--runs", "init", run, "--runs", "pruned", pruned)
    assert r.returncode == 0, r.stderr
    assert "Seeds [0, 1]" in r.stdout
    rows = {row[0]: row for row in table_rows(r.stdout) if row[0] != "run"}
    assert rows["pruned"][2] == "45.00%" and rows["pruned"][9] == "no"


def test_compare_variants_refuses_a_run_with_no_finished_level(tmp_path):
    run = variant_run(tmp_path / "run", "dense", [5.0, 6.0])
    variant_run(run, "round-01", [5.1, 5.8])
    (tmp_path / "empty").mkdir()
    r = script("compare_variants.py", "--dense", run, "--runs", "init", run, "--runs", "x", tmp_path / "empty")
    assert r.returncode != 0 and "x: no finished round-01" in r.stderr


def test_imp_vs_random_pairs_any_two_methods_with_their_macs(tmp_path):
    # a structural IMP run against its finetune baseline: finetune clearly worse, other widths
    imp, ft = {0: 4.0, 1: 4.4, 2: 4.1}, {0: 6.0, 1: 6.9, 2: 6.3}
    rows = [dict(method="imp", sparsity_target=0.6975, seed=k, fid=v, macs=3.0e6) for k, v in imp.items()]
    rows += [dict(method="finetune", sparsity_target=0.6975, seed=k, fid=v, macs=2.0e6 + k * 3e5)
             for k, v in ft.items()]
    rows += [dict(method="random", sparsity_target=0.6975, seed=k, fid=1.0, macs=3.0e6) for k in imp]
    with open(tmp_path / "s.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "sparsity_target", "seed", "fid", "macs"])
        w.writeheader()
        w.writerows(rows)
    r = script("imp_vs_random.py", "--pair", "imp", "finetune", tmp_path / "s.csv")
    assert r.returncode == 0, r.stderr
    assert "| IMP | finetune |" in r.stdout and "MACs finetune" in r.stdout
    (row,) = table_rows(r.stdout)
    p = stats.ttest_rel(list(imp.values()), list(ft.values()), alternative="less").pvalue
    assert row[:5] == ["69.75%", "FID", "3", "3.00 M", "2.30 M"]
    assert row[-3] == f"{p:.3f}" and row[-1] == "IMP better"
    r = script("imp_vs_random.py", "--pair", "imp", "distill", tmp_path / "s.csv")
    assert r.returncode == 0 and table_rows(r.stdout) == []  # no distill rows: nothing paired


def _colour_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("translation_colour", REPO / "scripts" / "translation_colour.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_colourfulness_against_a_numpy_reference():
    import numpy as np
    import torch

    mod = _colour_module()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 8, 8, generator=g) * 2 - 1
    x[0] = x[0, :1]  # a grey image
    got = mod.colourfulness(x)
    for img, c in zip(x.double().numpy(), got.tolist()):
        r, gg, b = ((img + 1) * 127.5).reshape(3, -1)
        rg, yb = r - gg, 0.5 * (r + gg) - b
        want = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
        assert c == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert got[0] == 0.0 and (got[1:] > 0).all()
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert mod.colourfulness(red).item() == pytest.approx(0.3 * (255 ** 2 + 127.5 ** 2) ** 0.5)


def test_translation_colour_script_on_a_tiny_cyclegan_run(tmp_path):
    import torch

    from lthgan import search as S
    from lthgan.gans.cyclegan import translate

    cfg = S.SearchConfig(gan="cyclegan", target_sparsity=0.2, preset="tiny", iterations=3, eval_samples=16,
                         device="cpu", seed=1)
    run, _ = S.run_search(cfg, tmp_path / "cg", quiet=True)
    r = script("translation_colour.py", run / "dense", run / "round-01", "--n", 16)
    assert r.returncode == 0, r.stderr
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in r.stdout.splitlines()
            if line.startswith(f"| {run}")]
    assert [x[0] for x in rows] == [str(run / "dense"), str(run / "round-01")]
    mod = _colour_module()
    task, models, _ = S.model_from_checkpoint(run / "round-01" / "checkpoint.safetensors")
    data = S.load_eval_data(__import__("lthgan").gans.family("cyclegan"), "digits:digits-m", task.config.resolution)
    ab = translate(models["G_AB"], data.sources[0].all()[:16].float())
    assert rows[1][1] == mod._ms(mod.colourfulness(ab))
    assert rows[1][2] == f"{mod.in_domain(ab, 1):.1%}"
    fid = json.loads((run / "round-01" / "metrics.json").read_text())["directions"]
    assert rows[1][5] == f"{fid['A2B']['fid']:.3f}" and rows[1][6] == f"{fid['B2A']['fid']:.3f}"
    assert rows[1][7] == f"{fid['A2B']['label_kept']:.3f}" and rows[1][8] == f"{fid['B2A']['label_kept']:.3f}"
    assert "Real test images: A 0.0 ± 0.0" in r.stdout  # digits are grey
    real = data.sources
    a_, b_ = real[0].all()[:64].float(), real[1].all()[:64].float()
    assert mod.in_domain(a_, 0) > 0.9 and mod.in_domain(b_, 1) > 0.9 and mod.in_domain(a_, 1) < 0.1
    assert f"{mod.in_domain(real[0].all()[:16].float(), 0):.1%} of A in A" in r.stdout
    bad = script("translation_colour.py", tmp_path / "nowhere")
    assert bad.returncode == 2 and "nowhere" in bad.stderr and "Traceback" not in bad.stderr
    # a checkpoint inside a level reads that level's metrics; levels of other data are refused
    r = script("translation_colour.py", run / "round-01" / "checkpoint.safetensors", "--n", 16)
    assert r.returncode == 0 and f"{fid['A2B']['fid']:.3f}" in r.stdout, r.stderr
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run / "round-01", other)
    m = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**m, "data": "digits-m:digits"}))
    bad = script("translation_colour.py", run / "dense", other, "--n", 16)
    assert bad.returncode == 2 and "digits-m:digits" in bad.stderr and "Traceback" not in bad.stderr
