"""Issue 12's search side: schedules that show where matching ends, the FID reference set,
several seeds judged together, and per-direction verdicts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lthgan  # noqa: F401
from lthgan import gans
from lthgan import search as S
from lthgan.search import SearchConfig
from lthgan.search import report as R

REPO = Path(__file__).resolve().parents[1]
TINY = dict(preset="tiny", iterations=4, eval_samples=64, device="cpu")


def metrics(run: Path, level: str) -> dict:
    return json.loads((run / level / "metrics.json").read_text())


# --------------------------------------------------------------------------- schedules


def test_default_targets_end_on_the_papers_rounds():
    sn = S.resolve(SearchConfig(gan="sngan", preset="tiny"))
    assert sn.schedule == [0.2, 0.36, 0.488, 0.5904, 0.67232], "round 5 at 67.232%, not clipped at 67%"
    cg = S.resolve(SearchConfig(gan="cyclegan", preset="tiny"))
    assert cg.schedule[-2:] == [0.737856, 0.74] and len(cg.schedule) == 7, "--target-sparsity 0.74 ends at 74%"


def test_until_unmatched_continues_the_imp_series():
    res = S.resolve(SearchConfig(gan="sngan", preset="tiny", until_unmatched=True))
    targets = dict(S.level_targets(res))
    assert targets[5] == 0.67232 and targets[6] == pytest.approx(0.737856) and targets[10] == pytest.approx(0.89263, abs=1e-5)
    assert max(targets.values()) <= 0.99 and len(targets) == 21
    plain = dict(S.level_targets(S.resolve(SearchConfig(gan="sngan", preset="tiny"))))
    assert max(plain) == 5


def test_until_unmatched_stops_after_the_first_unmatched_round(tmp_path):
    cfg = SearchConfig(gan="sngan", target_sparsity=0.2, until_unmatched=True, seed=2, **TINY)
    run, rows = S.run_search(cfg, tmp_path / "u", quiet=True)
    rounds = rows[1:]
    past = rounds[1:]  # the rounds after the target's
    assert all(r["matching_any"] for r in past[:-1]), "it went on only while rounds matched"
    assert (not past or not past[-1]["matching_any"]) or past[-1]["sparsity"] > 0.98
    if not past:
        assert not rounds[0]["matching_any"]
    md = (run / "summary.md").read_text()
    assert "Largest matching sparsity" in md and "then on while rounds match" in md
    # resuming a finished until_unmatched search runs nothing more
    _, again = S.resume_search(run, quiet=True)
    assert [r["name"] for r in again] == [r["name"] for r in rows]


# --------------------------------------------------------------------------- CycleGAN's reference


@pytest.fixture(scope="module")
def cyclegan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cg") / "cg"
    cfg = SearchConfig(gan="cyclegan", target_sparsity=0.2, **{**TINY, "eval_samples": 32})
    return S.run_search(cfg, out, quiet=True)


def test_cyclegan_fid_against_the_target_domains_training_images(cyclegan_run):
    run, rows = cyclegan_run
    train_a, train_b = gans.family("cyclegan").load_data("digits:digits-m", "train", 16)
    m = rows[1]
    assert m["reference"] == "train"
    assert m["n_real"] == {"A2B": len(train_b), "B2A": len(train_a)} and m["n_fake"] == {"A2B": 32, "B2A": 32}
    md = (run / "summary.md").read_text()
    assert "judged against the target domain's train images" in md and "32/" in md
    # the verdict is per direction, as the paper reports them
    dense = metrics(run, "dense")
    for d in ("A2B", "B2A"):
        assert m["matching_directions"][d] == (m["directions"][d]["fid"] <= dense["directions"][d]["fid"])
    assert m["matching"] == all(m["matching_directions"].values())


def test_fid_reference_test_split(tmp_path):
    cfg = SearchConfig(gan="cyclegan", target_sparsity=0.2, fid_reference="test", **{**TINY, "eval_samples": 32})
    _, rows = S.run_search(cfg, tmp_path / "t", quiet=True, max_level=0)
    test_a, test_b = gans.family("cyclegan").load_data("digits:digits-m", "test", 16)
    assert rows[0]["reference"] == "test" and rows[0]["n_real"] == {"A2B": len(test_b), "B2A": len(test_a)}


def test_inception_fid_on_few_images_is_flagged():
    assert S.evaluation.fid_size_note("inception", 1000, 5000) is not None
    assert "2048" in S.evaluation.fid_size_note("inception", 5000, 140)
    assert S.evaluation.fid_size_note("inception", 2048, 2048) is None
    assert S.evaluation.fid_size_note("digits", 64, 64) is None


# --------------------------------------------------------------------------- several seeds


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds") / "imp"
    cfg = SearchConfig(gan="sngan", target_sparsity=0.2, seeds=2, seed=5, **TINY)
    run, rows = S.run_search(cfg, out, quiet=True)
    return run, rows, cfg


def test_each_seed_is_its_own_search(seeds_run, tmp_path):
    run, rows, cfg = seeds_run
    assert [r["name"] for r in rows] == ["dense", "round-01"] and rows[1]["seeds"] == 2
    for k in (0, 1):
        sub = run / f"seed-{k:02d}"
        assert json.loads((sub / "config.json").read_text())["search"]["seed"] == 5 + k
        assert (sub / "round-01" / "DONE").exists()
    # seed 1 of the several-seed search is exactly the single search of seed 6
    _, single = S.run_search(SearchConfig(gan="sngan", target_sparsity=0.2, seed=6, **TINY), tmp_path / "s6",
                             quiet=True)
    a = S.load_checkpoint(run / "seed-01" / "round-01" / "checkpoint.safetensors")[0]
    b = S.load_checkpoint(tmp_path / "s6" / "round-01" / "checkpoint.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert single[1]["fid"] == metrics(run / "seed-01", "round-01")["fid"]


def test_the_verdict_is_the_paired_test_over_seeds(seeds_run):
    run, rows, _ = seeds_run
    lvl = [metrics(run / f"seed-{k:02d}", "round-01")["fid"] for k in (0, 1)]
    dense = [metrics(run / f"seed-{k:02d}", "dense")["fid"] for k in (0, 1)]
    ok, p = S.paired_test(lvl, dense)
    assert rows[1]["matching"] == ok and rows[1]["p_values"] == {"G": p}
    assert rows[1]["fid"] == pytest.approx(sum(lvl) / 2)
    assert rows[1]["fid_sd"] == pytest.approx(abs(lvl[0] - lvl[1]) / 2 ** 0.5)
    md = (run / "summary.md").read_text()
    assert "2 seeds; a level matches unless a one-sided paired t-test" in md
    assert f"{rows[1]['fid']:.3f} ± {rows[1]['fid_sd']:.3f}" in md
    seeds_csv = (run / "summary_seeds.csv").read_text().splitlines()
    assert len(seeds_csv) == 1 + 4 and "seed-01" in seeds_csv[-1]


def test_a_baseline_of_a_several_seed_run_reuses_each_seeds_dense(seeds_run):
    run, _, cfg = seeds_run
    bdir, rows = S.run_search(SearchConfig(**{**cfg.__dict__, "method": "random"}), run, quiet=True)
    assert bdir == run / "baselines" / "random" and rows[1]["seeds"] == 2
    for k in (0, 1):
        a = S.load_checkpoint(run / f"seed-{k:02d}" / "dense" / "checkpoint.safetensors")[0]
        b = S.load_checkpoint(bdir / f"seed-{k:02d}" / "dense" / "checkpoint.safetensors")[0]
        assert all(torch.equal(a[x], b[x]) for x in a)
    runs = R.load_runs([run])
    assert [r.label for r in runs] == ["imp", "random"]
    assert "| random" in R.markdown_table(runs)


def _start_tiny_search(out, iterations: int, **popen) -> subprocess.Popen:
    """A 2-seed tiny search in a process of its own, checkpointing every 5 iterations."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    args = [sys.executable, "-m", "lthgan.cli", "search", "--preset", "tiny", "--iterations", str(iterations),
            "--checkpoint-every", "5", "--eval-samples", "64", "--device", "cpu", "--target-sparsity", "0.2",
            "--seeds", "2", "--quiet", "--out", str(out)]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)


def _wait_for(path, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline:
        time.sleep(0.2)


def test_a_killed_several_seed_search_resumes(tmp_path):
    out = tmp_path / "killed"
    p = _start_tiny_search(out, 60, start_new_session=True)
    _wait_for(out / "seed-00" / "round-01" / "train_state.pt")
    os.killpg(p.pid, signal.SIGKILL)  # the coordinator and its workers
    p.wait()
    assert not (out / "seed-00" / "round-01" / "DONE").exists()
    run, rows = S.resume_search(out, quiet=True)
    assert [r["name"] for r in rows] == ["dense", "round-01"] and rows[1]["seeds"] == 2


def _workers_of(out) -> list[int]:
    """Pids of the seed workers running in ``out`` (read from /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"lthgan.search.worker" in cmd and any(str(out).encode() in c for c in cmd):
            pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_sigterm_to_the_coordinator_stops_its_workers(tmp_path):
    # `kill PID` of the coordinator alone (no process group) must not leave a worker training on
    out = tmp_path / "termed"
    p = _start_tiny_search(out, 400)
    _wait_for(out / "seed-00" / "dense" / "train_state.pt")
    assert _workers_of(out), "a worker is training"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM and b"Traceback" not in err
    deadline = time.time() + 30
    while _workers_of(out) and time.time() < deadline:
        time.sleep(0.2)
    left = _workers_of(out)
    for pid in left:  # do not leave them running when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, "no worker is left training after the coordinator stopped"
    assert not (out / "seed-00" / "dense" / "DONE").exists()


def test_several_seeds_refusals(seeds_run, tmp_path):
    run, _, cfg = seeds_run
    with pytest.raises(S.SearchError, match="holds 2 seed\\(s\\), this search 1") as e:
        S.run_search(SearchConfig(gan="sngan", target_sparsity=0.2, method="random-ticket",
                                  masks_from=str(run), **TINY), tmp_path / "rt", quiet=True)
    assert "seeds" in e.value.fields
    with pytest.raises(S.ConfigMismatchError, match="seeds"):
        S.resume_search(run, {"seeds": 3}, quiet=True)
