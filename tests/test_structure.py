"""Structural searches (--structure channel): narrower generators round by round, their tickets,
baselines, costs, eval and export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lthgan  # noqa: F401
from lthgan import gans
from lthgan import search as S
from lthgan.search import SearchConfig
from lthgan.ticket import Ticket

from _cli import invoke, one_error_line

TINY = dict(preset="tiny", iterations=4, eval_samples=64, device="cpu", seed=1)


def metrics(run: Path, level: str) -> dict:
    return json.loads((run / level / "metrics.json").read_text())


def kept(run: Path, level: str) -> dict:
    return Ticket.load(run / level / "ticket.safetensors").channels


@pytest.fixture(scope="module")
def channel_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("struct") / "sngan"
    cfg = SearchConfig(gan="sngan", structure="channel", target_sparsity=0.36, **TINY)
    return S.run_search(cfg, out, quiet=True)


def test_rounds_remove_channels_and_rebuild_narrower(channel_run):
    run, rows = channel_run
    groups = gans.family("sngan").channel_groups(gans.default_config("sngan", "tiny"))["G"]
    total = sum(g.size for g in groups if g.prunable)
    k1, k2 = kept(run, "round-01"), kept(run, "round-02")
    for k, target in ((k1, 0.2), (k2, 0.36)):
        left = sum(len(k["G"][g.name]) for g in groups if g.prunable)
        assert total - left == int(target * total + 0.5)
    for g in groups:  # a round keeps a subset of the previous round's channels
        assert set(k2["G"][g.name]) <= set(k1["G"][g.name])
        if not g.prunable:
            assert k2["G"][g.name] == list(range(g.size))
    assert rows[1]["sparsity"] == pytest.approx(0.2, abs=0.5 / total)
    # costs fall round by round, and the models in the checkpoints are physically narrower
    assert rows[0]["macs"] > rows[1]["macs"] > rows[2]["macs"] and rows[0]["params"] > rows[2]["params"]
    assert all(r["latency_cpu_b1_ms"] > 0 and r["latency_cpu_b64_ms"] > 0 for r in rows)
    task, models, _ = S.model_from_checkpoint(run / "round-02" / "checkpoint.safetensors")
    dense, _, _ = S.model_from_checkpoint(run / "dense" / "checkpoint.safetensors")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(task.models["G"]) < n(dense.models["G"]) and n(task.models["D"]) == n(dense.models["D"])
    z = gans.family("sngan").generator_input(task.config, 3)
    assert models["G"](z).shape == (3, 3, 16, 16)


def test_a_round_starts_from_theta0_sliced(channel_run):
    run, _ = channel_run
    from lthgan.search import structure

    t = Ticket.load(run / "round-01" / "ticket.safetensors")
    theta0 = S.load_tensors(run / "init" / "state.safetensors")[0]
    cfg = gans.default_config("sngan", "tiny")
    groups = structure.groups_of(gans.family("sngan"), cfg)
    ref = structure.slim_state(lambda: gans.build("sngan", cfg, seed=0), groups, theta0,
                               structure.kept_from_lists(t.channels))
    assert set(t.state) == {k for k in ref if not k.endswith(".mask")}  # masks travel in t.masks
    assert all(torch.equal(t.state[k], ref[k]) for k in t.state)


def test_structural_report_and_eval(channel_run):
    run, _ = channel_run
    md = (run / "summary.md").read_text()
    assert "MACs/img" in md and "prunable channels removed" in md
    assert (run / "fid_vs_macs.png").read_bytes()[:4] == b"\x89PNG"
    r = invoke("eval", run / "round-02", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["fid"] == pytest.approx(metrics(run, "round-02")["fid"], rel=1e-6)


def test_export_runs_without_lthgan(channel_run, tmp_path):
    run, _ = channel_run
    out = tmp_path / "g.pt2"
    r = invoke("export", run / "round-02", "--out", out)
    assert r.exit_code == 0, r.output
    task, models, _ = S.model_from_checkpoint(run / "round-02" / "checkpoint.safetensors")
    z = gans.family("sngan").generator_input(task.config, 5, seed=4)
    torch.save(z, tmp_path / "z.pt")
    with torch.no_grad():
        want = models["G"].eval()(z)
    code = ("import sys, torch\nsys.modules['lthgan'] = None\n"
            "try:\n    import lthgan\n    raise SystemExit('lthgan imported')\nexcept ImportError:\n    pass\n"
            f"p = {str(out)!r}\n"
            "try:\n    G = torch.export.load(p).module()\nexcept Exception:\n    G = torch.jit.load(p)\n"
            f"z = torch.load({str(tmp_path / 'z.pt')!r})\n"
            f"torch.save(G(z).detach(), {str(tmp_path / 'y.pt')!r})\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert torch.allclose(torch.load(tmp_path / "y.pt"), want, atol=1e-5)
    one_error_line(invoke("export", run, "--out", tmp_path / "x.pt2"), "is a run directory")
    one_error_line(invoke("export", run / "round-01", "--out", tmp_path / "x.pt2", "--generator", "G_AB"),
                   "--generator 'G_AB' is not one of")


def test_baselines_at_the_channel_runs_widths(channel_run):
    run, _ = channel_run
    base = dict(gan="sngan", structure="channel", target_sparsity=0.36, **TINY)
    bdir, rows = S.run_search(SearchConfig(**base, method="small-dense"), run, quiet=True)
    assert bdir.name == "small-dense"
    theta0 = S.load_tensors(run / "init" / "state.safetensors")[0]
    for level in ("round-01", "round-02"):
        assert kept(bdir, level) == kept(run, level), "the same widths and channels"
    t = Ticket.load(bdir / "round-01" / "ticket.safetensors")
    assert not torch.equal(t.state["G.conv_out.bias"], theta0["G.conv_out.bias"]), "a fresh init"
    fdir, frows = S.run_search(SearchConfig(**base, method="finetune"), run, quiet=True)
    d = S.load_checkpoint(run / "dense" / "checkpoint.safetensors")[0]
    t = Ticket.load(fdir / "round-02" / "ticket.safetensors")
    kk = t.channels["G"]
    g = gans.family("sngan").channel_groups(gans.default_config("sngan", "tiny"))["G"]
    # the fine-tuned round starts from the dense trained weights, sliced to its channels
    out_group = next(x for x in g if not x.prunable)
    assert out_group.name in kk and torch.equal(t.state["G.conv_out.bias"], d["G.conv_out.bias"])
    assert frows[2]["sparsity"] == pytest.approx(rows[2]["sparsity"])


def test_cyclegan_channel_search_keeps_its_stream_tied(tmp_path):
    cfg = SearchConfig(gan="cyclegan", structure="channel", target_sparsity=0.2,
                       **{**TINY, "eval_samples": 16})
    run, rows = S.run_search(cfg, tmp_path / "cg", quiet=True)
    task, models, _ = S.model_from_checkpoint(run / "round-01" / "checkpoint.safetensors")
    x = gans.family("cyclegan").generator_input(task.config, 2)
    for g in ("G_AB", "G_BA"):
        assert models[g](x).shape == x.shape
    assert rows[1]["macs"] < rows[0]["macs"]


def test_gamma_l1_is_a_proximal_step():
    task = gans.build("dcgan", "tiny", seed=0)
    data = gans.family("dcgan").data.random(task.config, 0, 16)
    tr = gans.make_trainer(task, data, seed=0)
    gammas = [m.weight for m in task.models["G"].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for p in gammas:
            p.copy_(torch.randn_like(p) * 1e-3)
    before = [p.detach().clone() for p in gammas]
    tr.set_gamma_l1(gammas, 2.0)
    tr._shrink_gammas()
    th = 2.0 * tr.schedulers["G"].get_last_lr()[0]
    for b, p in zip(before, gammas):
        assert torch.equal(p, b.sign() * (b.abs() - th).clamp_min(0))
    assert any((p == 0).any() for p in gammas)


def test_structure_refusals(tmp_path):
    with pytest.raises(S.SearchError, match="prune_d applies to weight pruning") as e:
        S.resolve(SearchConfig(structure="channel", prune_d=True, preset="tiny"))
    assert "structure" in e.value.fields
    with pytest.raises(S.SearchError, match="gamma_l1 applies to structure channel"):
        S.resolve(SearchConfig(gamma_l1=0.5, preset="tiny"))
    with pytest.raises(S.SearchError, match="small-dense applies to structure channel"):
        S.resolve(SearchConfig(method="small-dense", preset="tiny"))
    assert S.resolve(SearchConfig(structure="channel", preset="tiny")).gamma_l1 == 1.0


def test_distill_learns_from_the_dense_generator(channel_run):
    run, _ = channel_run
    base = dict(gan="sngan", structure="channel", target_sparsity=0.36, **TINY)
    bdir, rows = S.run_search(SearchConfig(**base, method="distill", content_weight=2.0), run, quiet=True,
                              max_level=1)
    assert bdir.name == "distill-content-weight-2.0"
    assert rows[1]["final_losses"]["loss_content"] > 0 and "loss_content" not in rows[0]["final_losses"]
    assert kept(bdir, "round-01") is not None


def test_content_networks(tmp_path):
    from lthgan import perceptual
    from lthgan.metrics import MetricsError
    from torchvision.models import vgg16

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d = perceptual.content_network("digits")
    assert d(x).shape == (2, 64, 16, 16) and not any(p.requires_grad for p in d.parameters())
    d.train()
    assert not d.training, "frozen: BatchNorm keeps its statistics"
    w = tmp_path / "vgg16.pth"
    torch.save(vgg16(weights=None).state_dict(), w)
    v = perceptual.content_network("vgg", w)
    assert v(x).shape == (2, 128, 16, 16)
    # the loss has gradients towards the student only
    s = x.clone().requires_grad_(True)
    perceptual.content_loss(v, s, x.flip(0)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"101")
    with pytest.raises(MetricsError, match="junk.pth is not a PyTorch weights file"):
        perceptual.check_vgg_weights(junk)
    with pytest.raises(MetricsError, match="never downloads"):
        perceptual.check_vgg_weights(None)
    one_error_line(invoke("search", "--preset", "tiny", "--method", "distill", "--content-extractor", "vgg",
                          "--out", tmp_path / "x"), "--vgg-weights", "never downloads")
    assert not (tmp_path / "x").exists()


def test_a_structural_ticket_transfers(channel_run, tmp_path):
    run, _ = channel_run
    r = invoke("transfer", "--ticket", run / "round-02", "--data", "digits-m", "--iterations", "2",
               "--eval-samples", "64", "--device", "cpu", "--no-dense", "--quiet", "--out", tmp_path / "tr")
    assert r.exit_code == 0, r.output
    m = metrics(tmp_path / "tr", "round-01")
    assert m["data"] == "digits-m" and m["sparsity"] == pytest.approx(metrics(run, "round-02")["sparsity"])
    assert m["macs"] == pytest.approx(metrics(run, "round-02")["macs"])
    assert kept(tmp_path / "tr", "round-01") == kept(run, "round-02")


def test_dcgan_channel_search(tmp_path):
    cfg = SearchConfig(gan="dcgan", structure="channel", target_sparsity=0.2, **TINY)
    run, rows = S.run_search(cfg, tmp_path / "dc", quiet=True)
    assert rows[1]["macs"] < rows[0]["macs"] and rows[1]["sparsity"] > 0.15
    task, models, _ = S.model_from_checkpoint(run / "round-01" / "checkpoint.safetensors")
    z = gans.family("dcgan").generator_input(task.config, 2)
    assert models["G"](z).shape == (2, 3, 16, 16)


def test_export_speedup_script_times_exported_levels(channel_run):
    run, _ = channel_run
    repo = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, str(repo / "scripts" / "export_speedup.py"), run / "dense",
                        run / "round-02", "--repeats", "2", "--rounds", "1"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "lthgan not importable" in p.stdout
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in p.stdout.splitlines()
            if line.startswith(f"| {run}")]
    assert [r[0] for r in rows] == [str(run / "dense"), str(run / "round-02")]
    dense, slim = metrics(run, "dense"), metrics(run, "round-02")
    assert rows[1][2] == str(slim["macs"]) and rows[1][3] == f"{dense['macs'] / slim['macs']:.2f}x"
    for r in rows:  # speed-up = the reference's time over the level's, for both batch sizes
        for t, s in ((4, 5), (6, 7)):
            assert float(r[t]) > 0 and r[s].endswith("x")
            assert float(r[s][:-1]) == pytest.approx(float(rows[0][t]) / float(r[t]), rel=0.01, abs=0.01)
    assert rows[0][5] == rows[0][7] == "1.00x"
    bad = subprocess.run([sys.executable, str(repo / "scripts" / "export_speedup.py"), run],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "not a finished level" in bad.stderr


def test_fid_vs_macs_script_reads_a_published_table(channel_run, tmp_path):
    """scripts/fid_vs_macs.py: a published report.csv comes back as the same levels the run
    directory gives, and is drawn beside runs only when their GAN, data and extractor agree."""
    import importlib.util

    from lthgan.search import report

    run, _ = channel_run
    repo = Path(__file__).resolve().parents[1]
    pub = tmp_path / "published"
    r = invoke("report", run, "--out", pub)
    assert r.exit_code == 0, r.output
    cfg = json.loads((run / "config.json").read_text())
    (pub / "config.json").write_text(json.dumps(cfg))
    spec = importlib.util.spec_from_file_location("fid_vs_macs", repo / "scripts" / "fid_vs_macs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = mod.published_run(pub, report.load_run(run).label)
    want = report.load_run(run).levels
    assert [lv["level"] for lv in got.levels] == [lv["level"] for lv in want]
    for g, w in zip(got.levels, want):
        assert g["fid"] == pytest.approx(w["fid"], rel=1e-9)
        assert g["sparsity"] == pytest.approx(w["sparsity"], rel=1e-9) and g["macs"] == w["macs"]
        assert g["matching"] == w.get("matching")
    out = tmp_path / "macs.png"
    p = subprocess.run([sys.executable, str(repo / "scripts" / "fid_vs_macs.py"), run, "--published", pub,
                        "--out", out], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"
    cfg["search"]["gan"] = "dcgan"
    (pub / "config.json").write_text(json.dumps(cfg))
    p = subprocess.run([sys.executable, str(repo / "scripts" / "fid_vs_macs.py"), run, "--published", pub,
                        "--out", out], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "not comparable" in p.stderr and "Traceback" not in p.stderr


def test_macs_series_draws_a_shared_dense_once():
    """fid_vs_macs.png: structural levels at their own MACs, unstructured ones at the dense MACs
    without their dense level, and a dense level reused by a baseline not drawn twice."""
    from lthgan.search.plot import macs_series
    from lthgan.search.report import Run

    def run(structure, levels):
        return Run(Path("x"), {"search": {"structure": structure}}, levels, structure)

    dense = {"level": 0, "fid": 5.0, "macs": 8e6, "sparsity": 0.0}
    imp = run("channel", [dense, {"level": 1, "fid": 6.0, "macs": 2e6, "matching": True, "sparsity": 0.5}])
    base = run("channel", [dict(dense), {"level": 1, "fid": 9.0, "macs": 3e6, "matching": False, "sparsity": 0.5}])
    other = run("channel", [dict(dense, fid=5.5), {"level": 1, "fid": 7.0, "macs": 4e6, "sparsity": 0.5}])
    weight = run("weight", [dict(dense, fid=4.0, macs=None), {"level": 1, "fid": 4.5, "sparsity": 0.5}])
    got = {i: (s, pts) for i, s, pts in macs_series([imp, base, other, weight], None)}
    assert got[0] == (True, [(2.0, 6.0, None, True, False), (8.0, 5.0, None, None, True)])
    assert got[1] == (True, [(3.0, 9.0, None, False, False)])  # the parent's dense left out
    assert [p[:2] for p in got[2][1]] == [(4.0, 7.0), (8.0, 5.5)]  # another dense is drawn
    assert got[3] == (False, [(8.0, 4.5, None, None, False)])  # at the dense MACs, no dense point


def test_export_speedup_reads_the_timed_generators_costs(tmp_path):
    """scripts/export_speedup.py reports the params and MACs of the generator it times (CycleGAN
    keeps them per generator), not the sum over both."""
    import importlib.util

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("export_speedup", repo / "scripts" / "export_speedup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    per = {"G_AB": {"params": 10, "macs": 100}, "G_BA": {"params": 20, "macs": 300}}
    (tmp_path / "metrics.json").write_text(json.dumps({"params": 30, "macs": 400, "per_generator": per}))
    assert mod._costs(tmp_path, "G_BA") == per["G_BA"] and mod._costs(tmp_path, "G_AB") == per["G_AB"]
    (tmp_path / "metrics.json").write_text(json.dumps({"params": 30, "macs": 400}))
    assert mod._costs(tmp_path, "G")["macs"] == 400
