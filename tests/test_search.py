"""lthgan.search and lthgan.report at tiny sizes: the flow, masks against plain-PyTorch
references, rewinding, every method and D option, verdicts, refusals, corrupt run dirs.

One IMP search (module fixture) is the parent of the method/variant searches, which run into
its directory as baselines and so reuse its dense level: each costs two short rounds.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import lthgan  # noqa: F401
from lthgan import gans, prune
from lthgan import nn as lnn
from lthgan.search import report as R
from lthgan import search as S
from lthgan.search import SearchConfig
from lthgan.ticket import Ticket

ITER = 4
TINY = dict(preset="tiny", iterations=ITER, eval_samples=64, device="cpu", seed=3)


def quiet_search(cfg, out, **kw):
    return S.run_search(cfg, out, quiet=True, **kw)


# --------------------------------------------------------------------------- helpers


def load_state(path) -> dict[str, torch.Tensor]:
    return S.load_tensors(path)[0]


def ckpt(run: Path, level: str) -> dict[str, torch.Tensor]:
    return S.load_checkpoint(run / level / "checkpoint.safetensors")[0]


def ticket(run: Path, level: str) -> Ticket:
    return Ticket.load(run / level / "ticket.safetensors")


def prunable_names(gan: str, model: str, layers: str = "conv") -> list[str]:
    task = gans.build(gan, gans.default_config(gan, "tiny"))
    return [f"{model}.{w.name}" for w in prune.prunable(task.models[model], types=layers)]


def reference_magnitude(state, masks_before, names, sparsity):
    """Plain PyTorch: keep the P - floor(s P + 0.5) largest |w| among surviving entries of
    ``names`` (one global threshold)."""
    w = torch.cat([state[f"{n}.weight"].abs().flatten() for n in names])
    alive = torch.cat([masks_before[n].flatten() for n in names])
    total = w.numel()
    keep = total - int(math.floor(sparsity * total + 0.5))
    score = torch.where(alive, w, torch.full_like(w, -1.0))
    idx = torch.topk(score, keep).indices
    flat = torch.zeros(total, dtype=torch.bool)
    flat[idx] = True
    out, i = {}, 0
    for n in names:
        k = masks_before[n].numel()
        out[n] = flat[i:i + k].view(masks_before[n].shape)
        i += k
    return out


def all_true(state, names):
    return {n: torch.ones_like(state[f"{n}.weight"], dtype=torch.bool) for n in names}


def masks_of(state: dict, names) -> dict:
    return {n: state[f"{n}.mask"] for n in names}


def pruned_zeros(masks: dict, names) -> tuple[int, int]:
    total = sum(masks[n].numel() for n in names)
    return total - sum(int(masks[n].sum()) for n in names), total


def metrics(run: Path, level: str) -> dict:
    return json.loads((run / level / "metrics.json").read_text())


# --------------------------------------------------------------------------- the IMP parent run


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "sngan"
    cfg = SearchConfig(gan="sngan", target_sparsity=0.36, **TINY)
    run_dir, rows = quiet_search(cfg, out)
    assert run_dir == out
    return out, rows


def test_run_directory_layout(imp_run):
    run, rows = imp_run
    assert [r["name"] for r in rows] == ["dense", "round-01", "round-02"]
    for f in ("config.json", "init/state.safetensors", "init/seed.json", "metrics.jsonl", "summary.md",
              "summary.csv", "fid_vs_sparsity.png"):
        assert (run / f).is_file(), f
    for level in ("dense", "round-01", "round-02"):
        for f in ("ticket.safetensors", "checkpoint.safetensors", "metrics.json", "samples.png",
                  "sparsity_report.json", "DONE"):
            assert (run / level / f).is_file(), (level, f)
        assert not (run / level / "train_state.pt").exists()
        assert (run / level / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "fid_vs_sparsity.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((run / "config.json").read_text())
    assert record["search"] == dataclasses.asdict(SearchConfig(gan="sngan", target_sparsity=0.36, **TINY))
    assert record["resolved"]["schedule"] == [0.2, 0.36]
    assert record["gan_config"]["iterations"] == ITER
    assert record["lthgan_version"] == lthgan.__version__
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines == [metrics(run, l) for l in ("dense", "round-01", "round-02")]


def test_theta0_is_the_seeded_init(imp_run):
    run, _ = imp_run
    task = gans.build("sngan", gans.default_config("sngan", "tiny"), seed=3)
    init = load_state(run / "init" / "state.safetensors")
    assert init.keys() == task.models.state_dict().keys()
    for k, v in task.models.state_dict().items():
        assert torch.equal(init[k], v), k


def test_imp_masks_come_from_the_raw_trained_generator(imp_run):
    run, _ = imp_run
    names = prunable_names("sngan", "G")
    dense = ckpt(run, "dense")
    r1 = reference_magnitude(dense, all_true(dense, names), names, 0.2)
    got1 = masks_of(ckpt(run, "round-01"), names)
    for n in names:
        assert torch.equal(got1[n], r1[n]), n
    assert pruned_zeros(got1, names) == (int(math.floor(0.2 * pruned_zeros(got1, names)[1] + 0.5)),
                                         pruned_zeros(got1, names)[1])
    # round 2 prunes 20% of the survivors of round 1's trained raw G (never its EMA copy)
    prev = ckpt(run, "round-01")
    r2 = reference_magnitude(prev, got1, names, 0.36)
    t2 = ticket(run, "round-02")
    for n in names:
        assert torch.equal(t2.masks[n], r2[n]), n
        assert not (t2.masks[n] & ~got1[n]).any(), "masks never grow back"
    zeros, total = pruned_zeros(t2.masks, names)
    assert zeros == int(math.floor(0.36 * total + 0.5))
    ema = {k[len("eval/G/"):]: v for k, v in S.load_tensors(run / "round-01" / "checkpoint.safetensors")[0].items()
           if k.startswith("eval/G/")}
    assert ema, "the checkpoint keeps the EMA copy that was evaluated"
    for n in names:  # the EMA copy carries the same mask as the raw G
        assert torch.equal(ema[f"{n[2:]}.mask"], got1[n])


def test_rounds_rewind_to_theta0_and_phi0(imp_run):
    run, _ = imp_run
    init = load_state(run / "init" / "state.safetensors")
    for level in ("round-01", "round-02"):
        t = ticket(run, level)
        for k, v in t.state.items():
            assert torch.equal(v, init[k]), (level, k)
        # the trained G starts from θ0 with the pruned entries zeroed (the ticket applied)
        task = gans.build("sngan", gans.default_config("sngan", "tiny"), seed=0)
        t.apply(task.models)
        for n, m in lthgan.nn.masked_modules(task.models):
            w = lthgan.nn.raw_weight(m)
            assert torch.equal(w, torch.where(t.masks[n], init[f"{n}.weight"], torch.zeros(()))), n
        assert all(bool(t.masks[n].all()) for n in t.masks if n.startswith("D.")), "D stays dense"


def test_metrics_are_those_of_the_final_checkpoint(imp_run):
    run, _ = imp_run
    m = metrics(run, "round-02")
    task, models, meta = S.model_from_checkpoint(run / "round-02" / "checkpoint.safetensors")
    assert meta["iteration"] == ITER
    data = gans.family("sngan").load_data("digits", "train", 16)
    row, _ = S.evaluate_models(task, models, data, n_samples=64, extractor="digits", seed=3, device="cpu")
    assert row["fid"] == pytest.approx(m["fid"], rel=1e-6)
    assert m["checkpoint"] == "final" and "no best-of selection" in m["selection"]
    assert m["extractor"] == "digits" and m["directions"]["G"]["extractor"] == "digits"


def test_verdicts_and_sparsity_records(imp_run):
    run, rows = imp_run
    dense = metrics(run, "dense")
    assert dense["matching"] is None and dense["sparsity"] == 0.0
    for level, target in (("round-01", 0.2), ("round-02", 0.36)):
        m = metrics(run, level)
        assert m["dense_fid"] == dense["fid"]
        assert m["matching"] == (m["fid"] <= dense["fid"] + m["tolerance"])
        assert abs(m["sparsity"] - target) < 1e-3 and m["sparsity_target"] == target
        rep = json.loads((run / level / "sparsity_report.json").read_text())["generators"]
        assert m["sparsity"] == rep["prunable_sparsity"]
        # all parameters: the same pruned entries over every parameter of G
        assert m["sparsity_overall"] == pytest.approx(rep["prunable_zeros"] / rep["total_params"])
        assert m["sparsity_overall"] < m["sparsity"]
        assert m["matching_directions"] == {"G": m["matching"]}


def test_summary_table_and_csv(imp_run):
    run, _ = imp_run
    md = (run / "summary.md").read_text()
    for text in ("| level", "round-01", "round-02", "20.00%", "36.00%", "35.99%", "sparsity (all params)", "FID",
                 "digits", "no best-of selection"):
        assert text in md, text
    rows = (run / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("run,run_dir,method,level")
    assert len(rows) == 4
    fids = [float(r.split(",")[rows[0].split(",").index("fid")]) for r in rows[1:]]
    assert fids == pytest.approx([metrics(run, l)["fid"] for l in ("dense", "round-01", "round-02")])


def test_same_out_same_config_skips_finished_levels(imp_run):
    run, rows = imp_run
    before = (run / "round-02" / "DONE").stat().st_mtime_ns
    _, again = quiet_search(SearchConfig(gan="sngan", target_sparsity=0.36, **TINY), run)
    assert again == rows
    assert (run / "round-02" / "DONE").stat().st_mtime_ns == before


def test_changed_config_is_refused_naming_the_keys(imp_run):
    run, _ = imp_run
    with pytest.raises(S.ConfigMismatchError, match="eval_samples") as e:
        quiet_search(SearchConfig(gan="sngan", target_sparsity=0.36, **{**TINY, "eval_samples": 32}), run)
    assert e.value.keys == ["eval_samples"]
    with pytest.raises(S.ConfigMismatchError) as e:
        S.resume_search(run, {"seed": 4, "prune_rate": 0.3}, quiet=True)
    assert e.value.keys == ["prune_rate", "seed"] and "prune_rate" in str(e.value) and "seed" in str(e.value)
    # checkpoint_every does not change results: a resume may change it
    S.resume_search(run, {"checkpoint_every": 1}, quiet=True)


# --------------------------------------------------------------------------- methods and variants


def baseline(imp_run, max_level=None, **kw):
    """A variant of the parent IMP search, run into its directory (it reuses the dense level);
    ``max_level=1`` stops after round 1."""
    run, _ = imp_run
    cfg = SearchConfig(gan="sngan", target_sparsity=0.36, **{**TINY, **kw})
    bdir, rows = quiet_search(cfg, run, max_level=max_level)
    assert bdir.parent == run / "baselines"
    assert json.loads((bdir / "dense" / "DONE").read_text())["note"] == f"copied from {run / 'dense'}"
    assert torch.equal(ckpt(bdir, "dense")["G.conv_out.weight"], ckpt(run, "dense")["G.conv_out.weight"])
    return bdir, rows


def test_another_schedule_is_a_baseline_that_reuses_the_dense_level(imp_run):
    # a coarser grid (here for random pruning) needs no second dense run
    run, rows = imp_run
    cfg = SearchConfig(gan="sngan", target_sparsity=0.5904, prune_rate=0.36, method="random", **TINY)
    bdir, brows = quiet_search(cfg, run, max_level=1)
    assert bdir == run / "baselines" / "random-prune-rate-0.36-target-sparsity-0.5904"
    assert json.loads((bdir / "dense" / "DONE").read_text())["note"] == f"copied from {run / 'dense'}"
    assert brows[0]["fid"] == rows[0]["fid"]
    assert brows[1]["sparsity_target"] == pytest.approx(0.36) and brows[1]["sparsity"] == pytest.approx(0.36, abs=1e-3)
    # resuming it with the parent's schedule is still refused
    with pytest.raises(S.ConfigMismatchError, match="prune_rate"):
        S.resume_search(bdir, {"prune_rate": 0.2}, quiet=True)


def test_random_pruning(imp_run):
    bdir, rows = baseline(imp_run, max_level=1, method="random")
    assert bdir.name == "random"
    names = prunable_names("sngan", "G")
    init = load_state(imp_run[0] / "init" / "state.safetensors")
    imp1 = masks_of(ckpt(imp_run[0], "round-01"), names)
    for level, s in (("round-01", 0.2),):
        t = ticket(bdir, level)
        zeros, total = pruned_zeros(t.masks, names)
        assert zeros == int(math.floor(s * total + 0.5))
        assert t.state.keys() == {k for k in init if not k.endswith(".mask")}
        for k in t.state:
            assert torch.equal(t.state[k], init[k]), "trained from θ0"
    t1 = ticket(bdir, "round-01")
    assert any(not torch.equal(t1.masks[n], imp1[n]) for n in names)
    # a random mask prunes about the same share of every layer (magnitude pruning would not)
    per_layer = [1 - t1.masks[n].float().mean().item() for n in names if t1.masks[n].numel() >= 500]
    assert all(abs(p - 0.2) < 0.1 for p in per_layer)
    assert [r["method"] for r in rows] == ["dense", "random"]
    # the parent's summary now shows the baseline beside IMP
    assert "random" in (imp_run[0] / "summary.md").read_text()


def test_oneshot_prunes_the_dense_generator_to_each_target(imp_run):
    bdir, _ = baseline(imp_run, method="oneshot")
    names = prunable_names("sngan", "G")
    dense = ckpt(imp_run[0], "dense")
    for level, s in (("round-01", 0.2), ("round-02", 0.36)):
        ref = reference_magnitude(dense, all_true(dense, names), names, s)
        t = ticket(bdir, level)
        for n in names:
            assert torch.equal(t.masks[n], ref[n]), (level, n)


def test_no_rewind_keeps_training_the_pruned_weights(imp_run):
    bdir, rows = baseline(imp_run, method="no-rewind")
    names = prunable_names("sngan", "G")
    dense = ckpt(imp_run[0], "dense")
    t1 = ticket(bdir, "round-01")
    for k, v in t1.state.items():  # the state it trains from is the dense trained one
        assert torch.equal(v, dense[k]), k
    t2 = ticket(bdir, "round-02")
    r1 = ckpt(bdir, "round-01")
    ref = reference_magnitude(r1, masks_of(r1, names), names, 0.36)
    for n in names:
        assert torch.equal(t2.masks[n], ref[n])
    assert metrics(bdir, "round-01")["d_init"] == "continue"


def test_random_ticket_uses_the_imp_masks_with_another_init(imp_run):
    run, _ = imp_run
    bdir, _ = baseline(imp_run, max_level=1, method="random-ticket")
    cfg = json.loads((bdir / "config.json").read_text())["search"]
    assert Path(cfg["masks_from"]) == run.resolve()
    init = load_state(run / "init" / "state.safetensors")
    for level in ("round-01",):
        t, imp = ticket(bdir, level), ticket(run, level)
        for n in imp.masks:
            assert torch.equal(t.masks[n], imp.masks[n]), (level, n)
        g_keys = [k for k in t.state if k.startswith("G.") and k.endswith("weight")
                  and not k.split(".")[-2].startswith("b")]  # BN γ is drawn too, but keep to convs
        assert g_keys and all(not torch.equal(t.state[k], init[k]) for k in g_keys), "G gets another init"
        d_keys = [k for k in t.state if k.startswith("D.")]
        # as the official random tickets, D too starts from the other seed's initialisation
        other = gans.build("sngan", gans.default_config("sngan", "tiny"),
                           seed=S.methods.reinit_seed(3)).models.state_dict()
        assert all(torch.equal(t.state[k], other[k]) for k in d_keys), "D starts from the other init"
        assert not all(torch.equal(t.state[k], init[k]) for k in d_keys)


def test_prune_d_with_reseeded_d(imp_run):
    run, _ = imp_run
    bdir, rows = baseline(imp_run, prune_d=True, d_init="reseed")
    assert bdir.name == "imp-d-init-reseed-prune-d-on"
    d_names = prunable_names("sngan", "D")
    init = load_state(run / "init" / "state.safetensors")
    dense = ckpt(run, "dense")
    t1 = ticket(bdir, "round-01")
    ref = reference_magnitude(dense, all_true(dense, d_names), d_names, 0.2)
    for n in d_names:  # D pruned by magnitude of its raw (pre-spectral-norm) trained weights
        assert torch.equal(t1.masks[n], ref[n]), n
    for n in d_names:
        w = t1.state[f"{n}.weight"]
        assert not torch.equal(w, init[f"{n}.weight"]) and not torch.equal(w, dense[f"{n}.weight"])
    m = metrics(bdir, "round-01")
    assert m["d_sparsity"] == pytest.approx(0.2, abs=1e-3) and m["d_init"] == "reseed"
    assert m["d_seed"] != 3
    assert metrics(bdir, "round-02")["d_sparsity"] == pytest.approx(0.36, abs=1e-3)
    # one fixed reseeded D for every round, as the official code's alternative D
    t2 = ticket(bdir, "round-02")
    assert torch.equal(t1.state["D.linear.weight"], t2.state["D.linear.weight"])
    assert metrics(bdir, "round-02")["d_seed"] == m["d_seed"]


def test_reseed_each_draws_a_new_d_every_round(imp_run):
    bdir, _ = baseline(imp_run, d_init="reseed-each")
    t1, t2 = ticket(bdir, "round-01"), ticket(bdir, "round-02")
    assert not torch.equal(t1.state["D.linear.weight"], t2.state["D.linear.weight"])
    assert metrics(bdir, "round-01")["d_seed"] != metrics(bdir, "round-02")["d_seed"]


def test_trained_d_with_distillation(imp_run):
    run, _ = imp_run
    bdir, _ = baseline(imp_run, max_level=1, d_init="trained", kd_d=True)
    dense = ckpt(run, "dense")
    t1 = ticket(bdir, "round-01")
    for k, v in t1.state.items():
        if k.startswith("D."):
            assert torch.equal(v, dense[k]), k
    m = metrics(bdir, "round-01")
    assert "loss_kd" in m["final_losses"] and m["final_losses"]["loss_kd"] >= 0
    assert "loss_kd" not in metrics(bdir, "dense")["final_losses"]


def test_late_rewinding(imp_run):
    run, _ = imp_run
    out = run.parent / "late"
    cfg = SearchConfig(gan="sngan", target_sparsity=0.2, rewind="iter:2", **TINY)
    _, rows = quiet_search(cfg, out)
    snap = load_state(out / "dense" / "rewind.safetensors")
    assert S.load_tensors(out / "dense" / "rewind.safetensors")[1]["iteration"] == 2
    init = load_state(out / "init" / "state.safetensors")
    t = ticket(out, "round-01")
    assert not torch.equal(snap["G.conv_out.weight"], init["G.conv_out.weight"])
    for k, v in t.state.items():
        assert torch.equal(v, snap[k]), k
    # the dense run itself is the same as without late rewinding
    assert torch.equal(ckpt(out, "dense")["G.conv_out.weight"], ckpt(run, "dense")["G.conv_out.weight"])
    assert rows[1]["rewind"] == "iteration 2"
    assert S.resolve(dataclasses.replace(cfg, rewind="frac:0.5")).rewind_iteration == 2
    # the round trains from iteration 2 to the end, its schedule at 2 (as the official code)
    assert rows[1]["start_iteration"] == 2 and rows[1]["iterations"] == ITER
    assert rows[0]["start_iteration"] == 0
    task = gans.build("sngan", gans.default_config("sngan", "tiny"), seed=3)
    task.models.load_state_dict(dict(t.state), strict=False)
    for n, m in lnn.masked_modules(task.models):
        m.set_mask(t.masks[n], apply=True)
    data = gans.family("sngan").load_data("digits", "train", 16)
    trainer = gans.make_trainer(task, data, iterations=ITER, seed=3)
    trainer.reset(start_iteration=2)
    trainer.train()
    final = ckpt(out, "round-01")
    assert all(torch.equal(v, final[k]) for k, v in task.models.state_dict().items())


def test_conv_plus_linear_prunes_the_linear_layer(imp_run):
    bdir, _ = baseline(imp_run, max_level=1, layers="conv+linear")
    names = prunable_names("sngan", "G", "conv+linear")
    assert "G.linear" in names
    t = ticket(bdir, "round-01")
    zeros, total = pruned_zeros(t.masks, names)
    assert zeros == int(math.floor(0.2 * total + 0.5))
    assert not bool(t.masks["G.linear"].all())


def test_report_across_runs_and_extractor_refusal(imp_run, tmp_path):
    run, _ = imp_run
    other = tmp_path / "random"
    _, rows = quiet_search(SearchConfig(gan="sngan", target_sparsity=0.2, method="random", **TINY), other)
    text, where = R.compare([run, other], tmp_path / "cmp")
    assert where == tmp_path / "cmp"
    assert "| run" in text and "random" in text and "imp" in text
    csv_rows = (tmp_path / "cmp" / "report.csv").read_text().splitlines()
    # parent (3 levels) + its baselines + the separate random run (2 levels)
    assert sum(1 for r in csv_rows if str(other) in r) == 2
    assert (tmp_path / "cmp" / "fid_vs_sparsity.png").read_bytes()[:4] == b"\x89PNG"
    m = json.loads((other / "round-01" / "metrics.json").read_text())
    assert m["extractor_weights"].startswith("sha256:") and m["feature_layer_fid"] == "128"
    # the same extractor with other weights (e.g. a retrained digits classifier) is refused too
    m2 = dict(m, extractor_weights="sha256:" + "0" * 64)
    (other / "round-01" / "metrics.json").write_text(json.dumps(m2))
    with pytest.raises(S.RunDirError, match="round-01 of .* is damaged: metrics.json"):
        R.compare([run, other], tmp_path / "cmp2")  # an edited level is caught by its manifest
    S.RunDir(other).level(1).mark_done()  # as if it had been scored so
    with pytest.raises(R.ReportError, match="different feature extractors.*weights sha256:0000"):
        R.compare([run, other], tmp_path / "cmp2")
    m["extractor"] = "inception"
    (other / "round-01" / "metrics.json").write_text(json.dumps(m))
    S.RunDir(other).level(1).mark_done()
    with pytest.raises(R.ReportError, match="different feature extractors"):
        R.compare([run, other], tmp_path / "cmp3")


# --------------------------------------------------------------------------- CycleGAN


def test_cyclegan_search(tmp_path):
    cfg = SearchConfig(gan="cyclegan", target_sparsity=0.2, **{**TINY, "eval_samples": 48})
    run, rows = quiet_search(cfg, tmp_path / "cg")
    assert [r["name"] for r in rows] == ["dense", "round-01"]
    dense = ckpt(run, "dense")
    t = ticket(run, "round-01")
    for g in ("G_AB", "G_BA"):  # each generator with its own global threshold
        names = prunable_names("cyclegan", g)
        ref = reference_magnitude(dense, all_true(dense, names), names, 0.2)
        for n in names:
            assert torch.equal(t.masks[n], ref[n]), n
        zeros, total = pruned_zeros(t.masks, names)
        assert zeros == int(math.floor(0.2 * total + 0.5))
    m = metrics(run, "round-01")
    assert set(m["directions"]) == {"A2B", "B2A"}
    assert m["fid"] == pytest.approx((m["directions"]["A2B"]["fid"] + m["directions"]["B2A"]["fid"]) / 2)
    assert m["verdict_on"] == "FID of each of A2B and B2A"
    dense_m = metrics(run, "dense")
    assert m["matching"] == all(m["directions"][d]["fid"] <= dense_m["directions"][d]["fid"] for d in ("A2B", "B2A"))
    assert 0.0 <= m["label_kept"] <= 1.0
    assert m["directions"]["A2B"]["n_fake"] == 48
    md = (run / "summary.md").read_text()
    assert "FID A2B" in md and "FID B2A" in md and "each direction (A2B, B2A) is judged on its own FID" in md


# --------------------------------------------------------------------------- config, errors


def test_resolve_defaults_and_schedule():
    res = S.resolve(SearchConfig(gan="cyclegan", preset="tiny"))
    assert res.target_sparsity == 0.74 and res.data == "digits:digits-m" and res.extractor == "digits"
    assert res.schedule[-2:] == [0.737856, 0.74] and len(res.schedule) == 7
    res = S.resolve(SearchConfig(gan="sngan", preset="paper", batch_size=32))
    assert res.target_sparsity == 0.67232 and res.schedule[-1] == 0.67232 and len(res.schedule) == 5
    assert (res.gan_config.d_batch, res.gan_config.g_batch) == (32, 64)
    assert res.iterations == 50_000 and res.checkpoint_every == 5000 and res.eval_samples == 50_000
    assert S.resolve(SearchConfig(data="cifar10", preset="tiny")).extractor == "inception"
    assert S.resolve(SearchConfig(method="no-rewind", preset="tiny")).d_init == "continue"


@pytest.mark.parametrize("kw, match", [
    (dict(target_sparsity=1.5), "target_sparsity must be a number in \\(0, 1\\), got 1.5"),
    (dict(target_sparsity=0.0), "target_sparsity"),
    (dict(prune_rate=1.0), "prune_rate must be a number in \\(0, 1\\), got 1.0"),
    (dict(gan="biggan"), "unknown gan 'biggan'; expected one of sngan, cyclegan, dcgan"),
    (dict(method="lottery"), "unknown method 'lottery'"),
    (dict(d_init="best"), "unknown d_init 'best'"),
    (dict(rewind="iter:x"), "rewind must be init, iter:K"),
    (dict(rewind="frac:1.5"), "rewind must be init"),
    (dict(method="no-rewind", d_init="trained"), "d_init trained has no effect with method no-rewind"),
    (dict(masks_from="x"), "masks_from applies to methods that reuse another run's masks"),
    (dict(iterations=0), "iterations must be an integer >= 1, got 0"),
    (dict(eval_samples=1), "eval_samples must be an integer >= 2, got 1"),
    (dict(gan="cyclegan", data="digits"), "needs two domains"),
    (dict(device="meta"), "device 'meta' is not supported; expected cpu, cuda or cuda:N"),
    (dict(rewind="iter:20"), "a round has only 20 iterations"),
])
def test_bad_settings_raise_clear_errors(kw, match):
    with pytest.raises(S.SearchError, match=match) as e:
        S.resolve(SearchConfig(preset="tiny", **kw))
    assert set(e.value.fields) & set(kw), "the error names the setting at fault"


def test_missing_data_and_inception_weights_fail_before_any_run(tmp_path, monkeypatch):
    with pytest.raises(S.SearchError, match="does not exist"):
        S.run_search(SearchConfig(preset="tiny", data=f"folder:{tmp_path}/nowhere/A"), tmp_path / "r1")
    assert not (tmp_path / "r1").exists()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(S.SearchError, match="pass inception_weights FILE"):
        S.run_search(SearchConfig(preset="tiny", extractor="inception"), tmp_path / "r2")
    assert not (tmp_path / "r2").exists()


def test_random_ticket_needs_an_imp_run(tmp_path):
    with pytest.raises(S.SearchError, match="needs masks_from"):
        quiet_search(SearchConfig(method="random-ticket", target_sparsity=0.2, **TINY), tmp_path / "rt")


def test_corrupt_run_directories(imp_run, tmp_path):
    run, _ = imp_run
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(S.RunDirError, match="config.json is corrupt"):
        S.resume_search(bad, quiet=True)
    with pytest.raises(S.RunDirError, match="not a run directory"):
        S.resume_search(tmp_path, quiet=True)
    # a damaged checkpoint is caught by its checksum, not silently used
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("baselines"))
    p = copy / "round-01" / "checkpoint.safetensors"
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF
    p.write_bytes(bytes(data))
    shutil.rmtree(copy / "round-02")
    with pytest.raises(S.RunDirError, match="round-01 of .* is damaged: checkpoint.safetensors has changed"):
        S.resume_search(copy, quiet=True)
    # a level finished by lthgan 0.1 (DONE a timestamp) is checked by its files' own checksums
    (copy / "round-01" / "DONE").write_text("2026-11-30T10:00:00\n")
    with pytest.raises(S.RunDirError, match="round-01 of .* is damaged: .*checksum"):
        S.resume_search(copy, quiet=True)
    # a non-empty folder that is not a run directory is not overwritten
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(S.RunDirError, match="not a run directory"):
        quiet_search(SearchConfig(**TINY), tmp_path / "junk")
