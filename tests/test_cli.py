"""The lthgan command line: search (with a real SIGKILL and --resume), train, eval, prune,
transfer, report, and the one-line exit-code-2 errors."""
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
from lthgan import search as S
from lthgan.cli import main

from lthgan.ticket import Ticket

from _cli import TINY, invoke, one_error_line

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- search, end to end


@pytest.fixture(scope="module")
def sngan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "sngan"
    r = invoke("search", "--gan", "sngan", *TINY, "--target-sparsity", "0.2", "--seed", "1", "--out", out)
    assert r.exit_code == 0, r.output
    return out, r


def test_search_prints_the_table_and_round_lines(sngan_run):
    out, r = sngan_run
    assert "| level" in r.stdout and "round-01" in r.stdout and "dense" in r.stdout
    assert "round-01: sparsity 20.0" in r.stderr and "FID" in r.stderr
    assert ("MATCHING" in r.stderr) != ("not matching" in r.stderr)
    assert "it/s" in r.stderr or "s/it" in r.stderr  # the progress bar
    assert (out / "summary.md").is_file() and (out / "fid_vs_sparsity.png").is_file()


def test_every_method_from_the_cli(sngan_run):
    out, _ = sngan_run
    for method in ("random", "oneshot", "no-rewind", "random-ticket"):
        r = invoke("search", "--gan", "sngan", *TINY, "--target-sparsity", "0.2", "--seed", "1",
                   "--method", method, "--quiet", "--out", out)
        assert r.exit_code == 0, (method, r.output)
        assert "round-01:" not in r.stderr and "it/s" not in r.stderr, "--quiet: no progress"
        m = json.loads((out / "baselines" / method / "round-01" / "metrics.json").read_text())
        assert m["method"] == method and abs(m["sparsity"] - 0.2) < 1e-3
        assert f"| {method}" in r.stdout  # the parent's table, with the baseline beside IMP
    md = (out / "summary.md").read_text()
    assert all(m in md for m in ("random", "oneshot", "no-rewind", "random-ticket"))


def test_train_eval_prune_transfer(sngan_run, tmp_path):
    out, _ = sngan_run
    r = invoke("train", "--gan", "sngan", *TINY, "--seed", "1", "--quiet", "--out", tmp_path / "dense")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "dense" / "dense" / "DONE").exists() and not (tmp_path / "dense" / "round-01").exists()
    a = json.loads((tmp_path / "dense" / "dense" / "metrics.json").read_text())
    assert a["fid"] == json.loads((out / "dense" / "metrics.json").read_text())["fid"]
    # a search with the same dense settings takes the dense-only run over
    done = (tmp_path / "dense" / "dense" / "DONE").stat().st_mtime_ns
    r = invoke("search", "--gan", "sngan", *TINY, "--seed", "1", "--target-sparsity", "0.2", "--quiet",
               "--out", tmp_path / "dense")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "dense" / "dense" / "DONE").stat().st_mtime_ns == done
    assert json.loads((tmp_path / "dense" / "round-01" / "metrics.json").read_text())["fid"] == \
        json.loads((out / "round-01" / "metrics.json").read_text())["fid"]

    r = invoke("eval", out, "--json")  # every finished level of the run
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["level"] for row in rows] == ["dense", "round-01"]
    for row in rows:
        stored = json.loads((out / row["level"] / "metrics.json").read_text())
        assert row["fid"] == pytest.approx(stored["fid"], rel=1e-6)
        assert row["sparsity"]["G"]["sparsity"] == pytest.approx(stored["sparsity"])

    r = invoke("eval", out / "init", "--json")  # the untrained θ0, as a reference
    assert r.exit_code == 0, r.output
    (untrained,) = json.loads(r.stdout)
    assert untrained["checkpoint"].endswith("init/state.safetensors")
    assert untrained["sparsity"]["G"]["sparsity"] == 0.0
    assert untrained["fid"] != pytest.approx(rows[0]["fid"], rel=1e-3)  # not the trained G
    # no order asserted: 4 tiny iterations are within the noise of θ0 (71.5 vs 67.0 under the
    # old init, 65.0 vs 66.8 under the official SNGAN init of issue 12)

    ticket_file = tmp_path / "t.safetensors"
    r = invoke("prune", out / "dense", "--sparsity", "0.5", "--out", ticket_file)
    assert r.exit_code == 0, r.output
    t = Ticket.load(ticket_file)
    g = [n for n in t.masks if n.startswith("G.") and n != "G.linear"]
    total = sum(t.masks[n].numel() for n in g)
    assert total - sum(int(t.masks[n].sum()) for n in g) == int(0.5 * total + 0.5)
    init = S.load_tensors(out / "init" / "state.safetensors")[0]
    assert torch.equal(t.state["G.conv_out.bias"], init["G.conv_out.bias"])  # rewinds to θ0
    assert "prunable (total)" in r.stdout

    r = invoke("transfer", "--ticket", out / "round-01", "--data", "digits-m", "--iterations", "4",
               "--eval-samples", "64", "--device", "cpu", "--no-dense", "--quiet", "--out", tmp_path / "tr")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "tr" / "round-01" / "metrics.json").read_text())
    assert m["data"] == "digits-m" and m["method"] == "transfer"
    assert m["matching"] is None and not (tmp_path / "tr" / "dense").exists()  # --no-dense: no verdict
    src = Ticket.load(out / "round-01" / "ticket.safetensors")
    got = Ticket.load(tmp_path / "tr" / "round-01" / "ticket.safetensors")
    assert all(torch.equal(got.masks[n], src.masks[n]) for n in src.masks)


def test_report_two_runs(sngan_run, tmp_path):
    out, _ = sngan_run
    rnd = tmp_path / "random"
    r = invoke("search", "--gan", "sngan", *TINY, "--target-sparsity", "0.2", "--seed", "1",
               "--method", "random", "--quiet", "--out", rnd)
    assert r.exit_code == 0
    r = invoke("report", out, rnd, "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert "| run" in r.stdout and "random" in r.stdout and "imp" in r.stdout
    assert (tmp_path / "rep" / "fid_vs_sparsity.png").is_file()
    assert (tmp_path / "rep" / "report.md").read_text().count("round-01") >= 2
    m = json.loads((rnd / "dense" / "metrics.json").read_text())
    m["extractor"] = "inception"
    (rnd / "dense" / "metrics.json").write_text(json.dumps(m))
    one_error_line(invoke("report", out, rnd), "dense of", "is damaged: metrics.json")
    S.RunDir(rnd).level(0).mark_done()  # as if it had been scored with Inception
    one_error_line(invoke("report", out, rnd), "different feature extractors")


def test_cyclegan_search_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no --out: the run goes to runs/GAN-PRESET
    r = invoke("search", "--gan", "cyclegan", *TINY, "--eval-samples", "32", "--target-sparsity", "0.2")
    assert r.exit_code == 0, r.output
    assert "run directory: runs/cyclegan-tiny" in r.stderr
    assert "FID A2B" in r.stdout and "FID B2A" in r.stdout and "label kept" in r.stdout
    m = json.loads((tmp_path / "runs" / "cyclegan-tiny" / "round-01" / "metrics.json").read_text())
    assert m["verdict_on"] == "FID of each of A2B and B2A" and set(m["matching_directions"]) == {"A2B", "B2A"}


# --------------------------------------------------------------------------- resume after SIGKILL


def _cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO), LTHGAN_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "lthgan.cli", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _tensors(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    args = ["search", "--gan", "sngan", "--preset", "tiny", "--iterations", "16", "--checkpoint-every", "4",
            "--target-sparsity", "0.36", "--eval-samples", "64", "--device", "cpu", "--seed", "5", "--quiet"]
    ref = _cli(*args, "--out", tmp_path / "ref")
    victim = _cli(*args, "--out", tmp_path / "run")
    state = tmp_path / "run" / "round-01" / "train_state.pt"
    deadline = time.time() + 300
    while not state.exists():
        assert victim.poll() is None, victim.communicate()
        assert time.time() < deadline, "no in-round checkpoint appeared"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "round-01" / "DONE").exists(), "killed mid-round"
    assert not (tmp_path / "run" / "round-02").exists()

    resumed = _cli("search", "--resume", tmp_path / "run")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "round-01: resuming from iteration" in err
    it = int(err.split("round-01: resuming from iteration ")[1].split("/")[0])
    assert 0 < it < 16 and it % 4 == 0
    ref_out, ref_err = ref.communicate(timeout=600)
    assert ref.returncode == 0, ref_err

    for level in ("dense", "round-01", "round-02"):
        a, b = tmp_path / "ref" / level, tmp_path / "run" / level
        ta, tb = Ticket.load(a / "ticket.safetensors"), Ticket.load(b / "ticket.safetensors")
        assert ta.masks.keys() == tb.masks.keys()
        assert all(torch.equal(ta.masks[n], tb.masks[n]) for n in ta.masks), level
        ca, cb = _tensors(a / "checkpoint.safetensors"), _tensors(b / "checkpoint.safetensors")
        assert ca.keys() == cb.keys()
        assert all(torch.equal(ca[k], cb[k]) for k in ca), level
        ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
        for m in (ma, mb):
            for k in ("train_time_s", "eval_time_s", "time_s"):
                m.pop(k)
        assert ma == mb, level
    assert "| round-02" in out


def test_resume_with_a_changed_config_is_refused(sngan_run):
    out, _ = sngan_run
    line = one_error_line(invoke("search", "--resume", out, "--target-sparsity", "0.5", "--seed", "2"),
                          "--target-sparsity (stored 0.2, given 0.5)", "--seed", "different configuration")
    assert "prune" not in line
    r = invoke("search", "--resume", out, "--quiet")  # unchanged: nothing left to do, same table
    assert r.exit_code == 0 and "| round-01" in r.stdout


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("args, needles", [
    (["search", "--target-sparsity", "1.5"], ["--target-sparsity", "1.5", "0.0<x<1.0"]),
    (["search", "--target-sparsity", "0"], ["--target-sparsity"]),
    (["search", "--prune-rate", "-0.2"], ["--prune-rate"]),
    (["search", "--gan", "stylegan"], ["--gan", "stylegan", "sngan", "cyclegan"]),
    (["search", "--method", "snip"], ["--method", "snip", "imp"]),
    (["search", "--rewind", "iter:abc", "--preset", "tiny", "--out", "{tmp}/x"], ["rewind", "iter:abc"]),
    (["search", "--preset", "tiny", "--data", "folder:{tmp}/missing/A", "--out", "{tmp}/x"],
     ["missing", "does not exist"]),
    (["search", "--preset", "tiny", "--data", "cifar10", "--extractor", "digits", "--out", "{tmp}/x"],
     ["cifar10", "root"]),
    (["search", "--preset", "tiny", "--extractor", "inception", "--out", "{tmp}/x"],
     ["--inception-weights FILE", "never downloads"]),
    (["search", "--preset", "tiny", "--extractor", "inception", "--inception-weights", "{tmp}/no.pth",
      "--out", "{tmp}/x"], ["--inception-weights", "no.pth"]),
    (["search", "--preset", "tiny", "--out", "{tmp}/x", "--resume", "{tmp}/x"], ["--out", "--resume", "not both"]),
    (["search", "--resume", "{tmp}"], ["not a run directory"]),
    (["search", "--preset", "tiny", "--method", "random-ticket", "--out", "{tmp}/x"], ["--masks-from"]),
    (["prune", "{tmp}", "--sparsity", "0.5", "--out", "{tmp}/t"], ["folder without a checkpoint", "expected a checkpoint file"]),
    (["prune", "{tmp}", "--sparsity", "1", "--out", "{tmp}/t"], ["--sparsity"]),
    (["report", "{tmp}"], ["not a run directory"]),
    (["transfer", "--ticket", "{tmp}", "--out", "{tmp}/x"], ["--data is required"]),
    (["eval", "{tmp}/nothing"], ["does not exist"]),
])
def test_errors_are_one_line_with_exit_code_2(args, needles, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached Inception weights
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    one_error_line(invoke(*args), *[n.replace("{tmp}", str(tmp_path)) for n in needles])
    assert not (tmp_path / "x").exists(), "nothing is created for a refused run"


def test_corrupt_run_directory_is_one_line(sngan_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(sngan_run[0], run, ignore=shutil.ignore_patterns("baselines"))
    (run / "config.json").write_text('{"search": {"gan": "sngan", "colour": 3}}')
    one_error_line(invoke("search", "--resume", run), "unknown settings", "colour")
    (run / "config.json").write_text("[1, 2")
    one_error_line(invoke("search", "--resume", run), "config.json is corrupt")
    one_error_line(invoke("report", run), "config.json is corrupt")


def test_help_lists_every_command():
    r = invoke("--help")
    assert r.exit_code == 0
    for c in ("search", "train", "eval", "prune", "transfer", "report", "profile"):
        assert c in r.stdout
    r = invoke("search", "--help")
    for flag in ("--gan", "--data", "--target-sparsity", "--prune-rate", "--method", "--prune-d",
                 "--d-init", "--rewind", "--kd-d", "--layers", "--preset", "--iterations", "--batch-size",
                 "--eval-samples", "--extractor", "--inception-weights", "--seed", "--device", "--amp",
                 "--tolerance", "--checkpoint-every", "--out", "--resume", "--quiet"):
        assert flag in r.stdout, flag


def test_options_are_generated_from_the_config_fields():
    import dataclasses

    cmd = main.commands["search"]
    dests = {p.name for p in cmd.params}
    fields = {f.name for f in dataclasses.fields(S.SearchConfig) if "search" in f.metadata["commands"]}
    assert fields <= dests and dests - fields == {"out", "resume", "quiet"}
    for p in cmd.params:
        if p.name in fields:
            f = next(f for f in dataclasses.fields(S.SearchConfig) if f.name == p.name)
            assert p.default == f.default, p.name
