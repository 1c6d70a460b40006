"""Two gloo processes under torchrun: weights and masks stay identical across ranks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lthgan.gans import dist

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def test_dist_helpers_outside_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init_from_env("cpu") is False
    assert (dist.rank(), dist.world_size(), dist.is_main_process()) == (0, 1, True)
    m = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in m.parameters()]
    dist.broadcast_module_(m)
    dist.barrier()
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}]
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        dist.env_world_size()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "_dist_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


def _load(path):
    return torch.load(path, weights_only=True)


def test_two_gloo_ranks_agree_on_weights_and_masks(two_ranks):
    a, b = _load(two_ranks / "sngan_rank0.pt"), _load(two_ranks / "sngan_rank1.pt")
    # each rank started from its own seed and masks: rank 0's were broadcast
    for k, v in a["theta0"].items():
        assert torch.equal(v, b["theta0"][k]), k
    masks = [k for k in a["models"] if k.endswith(".mask")]
    assert masks and any(not bool(a["models"][k].all()) for k in masks)
    for k, v in a["models"].items():
        if "running_" in k or "num_batches" in k:
            continue  # BN statistics are rank 0's after each forward's broadcast
        assert torch.equal(v, b["models"][k]), k
    for pa, pb in zip(a["ema_params"], b["ema_params"]):
        assert torch.equal(pa, pb)
    # they trained (and the pruned weights stayed zero)
    assert any(not torch.equal(a["models"][k], a["theta0"][k]) for k in a["models"] if k.endswith("weight"))
    for k in masks:
        w = a["models"][k[: -len("mask")] + "weight"]
        assert bool((w[~a["models"][k]] == 0).all())
    # each rank drew its own data; losses are averaged across ranks
    assert not torch.equal(a["perm"], b["perm"])
    assert a["losses"] == b["losses"]

    c, d = _load(two_ranks / "cyclegan_rank0.pt"), _load(two_ranks / "cyclegan_rank1.pt")
    for k, v in c["models"].items():
        assert torch.equal(v, d["models"][k]), k


def test_only_rank0_writes_checkpoints_holding_both_ranks_state(two_ranks):
    assert (two_ranks / "sngan_ckpt_rank0.pt").exists()
    assert not (two_ranks / "sngan_ckpt_rank1.pt").exists()
    ck = _load(two_ranks / "sngan_ckpt_rank0.pt")
    assert ck["world_size"] == 2 and len(ck["local"]) == 2 and ck["iteration"] == 1
    assert not torch.equal(ck["local"][0]["gen"], ck["local"][1]["gen"])
