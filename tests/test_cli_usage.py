"""What new users hit, each now one line on stderr with exit code 2, before anything trains and
with nothing lost; and the DCGAN family through every command."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import lthgan  # noqa: F401
from lthgan import gans
from lthgan import search as S
from lthgan._io import atomic_write_text
from lthgan.ticket import Ticket

from _cli import TINY, invoke, one_error_line

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny SNGAN search (dense and round-01), with its stderr."""
    out = tmp_path_factory.mktemp("usage") / "sngan"
    r = invoke("search", "--gan", "sngan", *TINY, "--target-sparsity", "0.2", "--out", out)
    assert r.exit_code == 0, r.output
    return out, r


def copy_of(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("baselines", ".lock"))
    return to


# --------------------------------------------------------------------------- 1. prune -> transfer


def test_a_pruned_ticket_carries_its_model_and_transfer_checks_it_first(run, tmp_path):
    out, _ = run
    t_file = tmp_path / "t.safetensors"
    r = invoke("prune", out / "dense", "--sparsity", "0.5", "--prune-d", "--out", t_file)
    assert r.exit_code == 0, r.output
    t = Ticket.load(t_file)
    tiny = dataclasses.asdict(gans.default_config("sngan", "tiny"))
    assert t.provenance["gan"] == "sngan" and t.provenance["gan_config"]["g_channels"] == tiny["g_channels"]
    assert abs(t.provenance["sparsity"] - 0.5) < 1e-3, "the ticket's sparsity is its generator's, not D's too"
    r = invoke("transfer", "--ticket", t_file, "--data", "digits-m", "--iterations", "2", "--eval-samples",
               "64", "--device", "cpu", "--no-dense", "--quiet", "--out", tmp_path / "tr")
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "tr" / "config.json").read_text())
    assert cfg["gan_config"]["g_channels"] == tiny["g_channels"], "the ticket's model, not the paper preset's"
    # a ticket whose masks do not fit the model it names is refused before anything trains
    quick = dataclasses.asdict(gans.default_config("sngan", "quick"))
    Ticket(t.masks, t.state, dict(t.provenance, gan_config=quick)).save(tmp_path / "bad.safetensors")
    one_error_line(invoke("transfer", "--ticket", tmp_path / "bad.safetensors", "--data", "digits-m",
                          "--out", tmp_path / "tr2"), "--ticket", "does not fit the sngan model")
    assert not (tmp_path / "tr2").exists()


# --------------------------------------------------------------------------- 2. unwritable output


def test_output_under_a_file_is_one_line(run, tmp_path):
    out, _ = run
    f = tmp_path / "file"
    f.write_text("x")
    one_error_line(invoke("search", *TINY, "--out", f / "sub"), "is a file, not a folder")
    one_error_line(invoke("search", *TINY, "--out", f), "is a file")
    one_error_line(invoke("report", out, "--out", f / "rep"), "is a file, not a folder")
    one_error_line(invoke("prune", out / "dense", "--sparsity", "0.5", "--out", f / "t.safetensors"),
                   "is a file, not a folder")
    one_error_line(invoke("search", "--resume", f), "is a file")
    assert f.read_text() == "x"


def test_read_only_output_is_one_line(run, tmp_path, monkeypatch):
    """A folder lthgan may not write in. Tests run as root, who may write anywhere, so the
    permission error the probe gets from the file system is raised for it here."""
    out, _ = run
    ro = tmp_path / "ro"
    ro.mkdir()
    ro_run = copy_of(out, tmp_path / "ro-run")
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **kw):
        if dir is not None and Path(dir).resolve() in (ro.resolve(), ro_run.resolve()):
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    one_error_line(invoke("search", *TINY, "--out", ro / "x"), f"cannot write in {ro}: Permission denied")
    one_error_line(invoke("report", out, "--out", ro), "Permission denied")
    one_error_line(invoke("prune", out / "dense", "--sparsity", "0.5", "--out", ro / "t.safetensors"),
                   "Permission denied")
    one_error_line(invoke("search", "--resume", ro_run), "Permission denied")
    assert not (ro / "x").exists()


# --------------------------------------------------------------------------- 3-6. settings


@pytest.mark.parametrize("args, needles", [
    (["--device", "meta"], ["--device 'meta' is not supported; expected cpu, cuda or cuda:N"]),
    (["--eval-samples", "1"], ["--eval-samples", "1 is not in the range x>=2"]),
    (["--data", "cifar10", "--data-root", "{tmp}", "--extractor", "digits"],
     ["cifar-10-batches-py does not exist", "--download"]),
])
def test_bad_settings_fail_before_training(args, needles, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    one_error_line(invoke("search", "--preset", "tiny", *args, "--out", tmp_path / "x"), *needles)
    assert not (tmp_path / "x").exists()


def test_garbage_inception_weights_are_checked_up_front(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"101")
    one_error_line(invoke("search", "--preset", "tiny", "--extractor", "inception", "--inception-weights",
                          junk, "--out", tmp_path / "x"),
                   "--inception-weights", "junk.pth is not a PyTorch weights file", "Inception-v3")
    assert not (tmp_path / "x").exists()
    one_error_line(invoke("eval", tmp_path, "--eval-samples", "1"), "--eval-samples")


def test_download_is_a_flag():
    assert "--download" in invoke("search", "--help").stdout


# --------------------------------------------------------------------------- 7. the lock


def test_a_run_directory_in_use_is_refused(run, tmp_path):
    out, _ = run
    held = copy_of(out, tmp_path / "held")
    with S.RunDir(held).lock():
        one_error_line(invoke("search", "--resume", held), "in use by another lthgan process",
                       f"(pid {os.getpid()})")
        one_error_line(invoke("search", "--gan", "sngan", *TINY, "--target-sparsity", "0.2", "--out", held),
                       "in use")  # the same search continued through --out
    r = invoke("search", "--resume", held, "--quiet")  # the lock is free again
    assert r.exit_code == 0, r.output


def test_a_lock_left_by_a_killed_process_does_not_block(run, tmp_path):
    held = copy_of(run[0], tmp_path / "held")
    code = (f"import os, lthgan.search as S\nwith S.RunDir({str(held)!r}).lock():\n"
            "    print('locked', flush=True)\n    os.kill(os.getpid(), 9)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    stdout, _ = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL and "locked" in stdout
    assert (held / ".lock").read_text().strip() == str(p.pid), "the dead process's lock file is still there"
    r = invoke("search", "--resume", held, "--quiet")
    assert r.exit_code == 0, r.output


# --------------------------------------------------------------------------- 8. damaged levels


def test_a_truncated_ticket_is_named_by_resume_report_and_eval(run, tmp_path):
    bad = copy_of(run[0], tmp_path / "bad")
    ticket = bad / "round-01" / "ticket.safetensors"
    with open(ticket, "r+b") as f:
        f.truncate(1000)
    for args in (["search", "--resume", bad], ["report", bad], ["eval", bad], ["eval", bad / "round-01"]):
        one_error_line(invoke(*args), "round-01 of", "is damaged: ticket.safetensors has 1000 bytes")


# --------------------------------------------------------------------------- 9, 10. defaults, SIGINT


def test_the_default_preset_follows_the_device(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("train", "--iterations", "2", "--eval-samples", "64", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "preset: quick" in r.stderr and "run directory: runs/sngan-quick" in r.stderr
    cfg = json.loads((tmp_path / "runs" / "sngan-quick" / "config.json").read_text())
    assert cfg["search"]["preset"] == "quick" and cfg["gan_config"]["g_channels"] == 32
    assert S.default_preset("cpu") == "quick" and S.default_preset("cuda") == "paper"


def _lthgan(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "lthgan.cli", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_sigint_says_how_to_resume_the_real_run(tmp_path):
    out = tmp_path / "interrupted"
    # a suite started in the background by a non-interactive shell inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: give the child the terminal's default
    p = _lthgan("search", "--preset", "tiny", "--iterations", "100000", "--checkpoint-every", "5",
                "--device", "cpu", "--out", out,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not (out / "dense" / "train_state.pt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert f"interrupted; continue with: lthgan search --resume {out}" in err
    assert "Traceback" not in err and "RUN_DIR" not in err


# --------------------------------------------------------------------------- 11-14


def test_profile_on_the_cpu_prints_no_profiler_chatter():
    p = _lthgan("profile", "--gan", "sngan", "--preset", "tiny", "--steps", "1", "--warmup", "0")
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert "time per step" in out
    assert "USDT" not in err and "ERROR" not in err and "gpuGetDeviceCount" not in err, err


def test_run_files_follow_the_umask(run, tmp_path):
    out, _ = run
    mask = os.umask(0)
    os.umask(mask)
    for f in (out / "config.json", out / "round-01" / "ticket.safetensors", out / "summary.md"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640


def test_help_is_true_for_each_command():
    texts = {c: invoke(c, "--help").stdout for c in ("search", "train", "transfer", "eval", "prune")}
    assert not any("PAPER.md" in t for t in texts.values())
    assert "baselines" in texts["search"] and "baselines" not in texts["train"]
    assert "baseline" not in texts["transfer"] and "transferred ticket" in texts["transfer"]
    for m in S.methods.names():
        assert m in texts["search"], m  # every method is described


def test_eval_says_what_a_file_is(run):
    out, _ = run
    one_error_line(invoke("eval", out / "round-01" / "ticket.safetensors"), "is an lthgan ticket",
                   "expected a checkpoint file")
    one_error_line(invoke("eval", out / "config.json"), "is a run's configuration", "expected a checkpoint")
    one_error_line(invoke("eval", out / "summary.md"), "is not an lthgan checkpoint")


def test_whole_search_progress_line(run):
    _, r = run
    assert "[level 1/2] dense" in r.stderr
    assert "[level 2/2] round-01; ETA" in r.stderr and "for the 1 level left" in r.stderr


# --------------------------------------------------------------------------- DCGAN, end to end


def test_dcgan_through_every_command(tmp_path):
    out = tmp_path / "dcgan"
    r = invoke("search", "--gan", "dcgan", *TINY, "--target-sparsity", "0.36", "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "round-02" / "metrics.json").read_text())
    assert m["gan"] == "dcgan" and abs(m["sparsity"] - 0.36) < 1e-3 and m["fid"] > 0
    assert (out / "round-02" / "samples.png").read_bytes()[:4] == b"\x89PNG"
    r = invoke("search", "--gan", "dcgan", *TINY, "--target-sparsity", "0.36", "--method", "random",
               "--quiet", "--out", out)
    assert r.exit_code == 0 and "| random" in r.stdout, r.output
    r = invoke("train", "--gan", "dcgan", *TINY, "--quiet", "--out", tmp_path / "dense")
    assert r.exit_code == 0 and (tmp_path / "dense" / "dense" / "DONE").exists(), r.output
    r = invoke("eval", out, "--json")
    assert r.exit_code == 0, r.output
    assert [row["level"] for row in json.loads(r.stdout)] == ["dense", "round-01", "round-02"]
    r = invoke("prune", out / "dense", "--sparsity", "0.5", "--method", "layerwise", "--out", tmp_path / "t.st")
    assert r.exit_code == 0, r.output
    r = invoke("transfer", "--ticket", out / "round-02", "--data", "digits-m", "--iterations", "2",
               "--eval-samples", "64", "--device", "cpu", "--quiet", "--out", tmp_path / "tr")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "tr" / "round-01" / "metrics.json").read_text())["gan"] == "dcgan"
    r = invoke("report", out, "--out", tmp_path / "rep")
    assert r.exit_code == 0 and (tmp_path / "rep" / "report.md").is_file(), r.output
    r = invoke("profile", "--gan", "dcgan", "--preset", "tiny", "--steps", "1", "--warmup", "0")
    assert r.exit_code == 0 and "time per step" in r.stdout, r.output
