"""bench/ratios.py turns a pytest-benchmark JSON into the BENCHMARKS.md tables and verdicts."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ratios():
    spec = importlib.util.spec_from_file_location("bench_ratios", ROOT / "bench" / "ratios.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(suite, group, impl, sparsity, median, **info):
    name = f"test_{suite}[{group}-{impl}-{sparsity}]"
    return {"fullname": f"bench/x.py::{name}", "name": name, "group": group,
            "stats": {"median": median},
            "extra_info": {"suite": suite, "impl": impl, "sparsity": sparsity, **info}}


def _doc(rows, device="cpu"):
    return {"machine_info": {"cpu": {"brand_raw": "TestCPU", "count": 2}, "torch": "9.9",
                             "bench_device": device, "bench_preset": "quick"},
            "datetime": "2026-11-25T00:00:00", "commit_info": {"id": "abcdef1234567890"},
            "benchmarks": rows}


def _layer_rows(lthgan_t, hook_t, dense_t=1.0):
    info = dict(case="sngan-conv3x3", mode="fwd+bwd", precision="fp32")
    g = "layers sngan-conv3x3 fwd+bwd fp32"
    rows = [_row("layers", g, "dense", None, dense_t, **info)]
    for s in (0.0, 0.74, 0.9):
        rows.append(_row("layers", g, "lthgan", s, lthgan_t[s], **info))
        rows.append(_row("layers", g, "prune-hook", s, hook_t, **info))
    return rows


def test_layer_ratios_and_verdicts(ratios, tmp_path):
    rows = _layer_rows({0.0: 1.01, 0.74: 1.04, 0.9: 1.02}, hook_t=1.3)
    for i, r in enumerate(rows):
        r["extra_info"]["load1"] = 0.25 * i
    p = tmp_path / "run.json"
    p.write_text(json.dumps(_doc(rows)))
    meta, loaded = ratios.load([p])
    text = ratios.report(meta, loaded)
    assert "TestCPU" in text and "torch 9.9" in text and "abcdef123456" in text
    assert "median 0.75, max 1.50" in text  # loads 0, 0.25, ..., 1.5
    # 0.74 row: lthgan/dense 1.040, prune-hook/dense 1.300, lthgan/prune-hook 0.800
    assert "| sngan-conv3x3 | fwd+bwd | fp32 | 0.74 | 1000.0 | 1040.0 | 1300.0 | 1.040 | 1.300 | 0.800 |" in text
    assert "**met**: masked layer fwd+bwd ≤ 1.05× dense" in text
    assert "sngan-conv3x3 1.040× (sp0.74)" in text  # the worst sparsity is reported
    assert "**met**: masked layers below prune-hook everywhere: 3 of 3" in text


def test_layer_target_missed_on_gpu_threshold(ratios, tmp_path):
    rows = _layer_rows({0.0: 1.01, 0.74: 1.04, 0.9: 1.02}, hook_t=1.02)
    p = tmp_path / "run.json"
    p.write_text(json.dumps(_doc(rows, device="cuda")))
    text = ratios.report(*ratios.load([p]))
    assert "**missed**: masked layer fwd+bwd ≤ 1.03× dense" in text
    assert "**missed**: masked layers below prune-hook everywhere: 1 of 3" in text


def test_topk_rewind_round_and_merge(ratios, tmp_path):
    rows = []
    for s, (lt, kv, tk) in {0.0: (0.1, 0.8, 1.2), 0.74: (0.05, 0.2, 0.3)}.items():
        info = dict(size="11.4M", numel=11372928)
        g = f"topk 11.4M sp{s:g}"
        rows += [_row("topk", g, "lthgan", s, lt, **info), _row("topk", g, "cat+kthvalue", s, kv, **info),
                 _row("topk", g, "cat+topk", s, tk, **info)]
        g = f"rewind 11.4M sp{s:g}"
        rows += [_row("rewind", g, "lthgan", s, 0.010, **info),
                 _row("rewind", g, "load_state_dict", s, 0.012, **info),
                 _row("rewind", g, "foreach_copy+mul", s, 0.020, **info)]
    rinfo = dict(gan="sngan", recipe="paper", iterations=50_000)
    for what, t in {"prune": 0.02, "rewind": 0.01, "ticket-apply": 0.03, "reset": 0.005}.items():
        rows.append(_row("round", "round sngan paper", what, 0.737856, t, **rinfo))
    first = tmp_path / "a.json"
    first.write_text(json.dumps(_doc(rows)))
    text = ratios.report(*ratios.load([first]))
    assert "| 11.4M | 11,372,928 | 0.74 | 50.00 | 200.0 | 300.0 | 4.000 | 6.000 |" in text
    assert "**missed**: global_topk_masks ≥ 5× faster than cat + kthvalue on CPU at 11.4 M: " \
           "slowest 4.00× (sp0.74)" in text
    assert "| 11.4M | 0.74 | 10.00 | 12.00 | 20.00 | 0.500 | 0.833 |" in text
    assert "**met**: rewind_ at least as fast" in text
    assert "n/a (no step of this size measured)" in text
    assert "n/a: pruning + rewinding vs a paper-recipe round" in text

    # a second file adds the paper step: 0.1 s × 50k = 5000 s; (0.02 + 0.01) / 5000 = 6e-4 %
    second = tmp_path / "b.json"
    second.write_text(json.dumps(_doc([_row("round", "round sngan paper", "step", 0.737856, 0.1,
                                            **rinfo)])))
    text = ratios.report(*ratios.load([first, second]))
    assert "**met**: pruning + rewinding ≤ 0.1 % of a paper-recipe round: sngan 0.0006 % " \
           "(with reset 0.0007 %)" in text
    assert "| sngan | paper | 100.0 | 50,000 | 1.39 h |" in text


def test_not_a_benchmark_file(ratios, tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{}")
    with pytest.raises(SystemExit, match="not a pytest-benchmark JSON"):
        ratios.load([p])


# ---- suites 6 and 7: the gradient-penalty and resnet18 steps


def _suite_rows(suite, case, dense, lthgan, hook, sparsities=(0.74,)):
    group = f"{suite} {case} cpu"
    impls = [("dense", None, dense)] + [(i, s, t) for s in sparsities
                                        for i, t in (("lthgan", lthgan), ("prune-hook", hook))]
    return [_row(suite, group, impl, s, median, case=case) for impl, s, median in impls]


def _suite_report(ratios, tmp_path, rows):
    p = tmp_path / "run.json"
    p.write_text(json.dumps(_doc(rows)))
    return ratios.report(*ratios.load([p]))


def test_resnet_and_penalty_rows_and_verdicts(ratios, tmp_path):
    rows = _suite_rows("resnet", "resnet18 8x3x64x64", 0.100, 0.104, 0.131) \
        + _suite_rows("penalty", "wgan-gp critic", 0.200, 0.250, 0.300, sparsities=(0.0, 0.9))
    text = _suite_report(ratios, tmp_path, rows)
    assert "## A resnet18 training step (suite 7)" in text
    assert "| resnet18 8x3x64x64 | 0.74 | 100.0 | 104.0 | 131.0 | 1.040 | 1.310 | 0.794 |" in text
    assert "| wgan-gp critic | 0 | 200.0 | 250.0 | 300.0 | 1.250 | 1.500 | 0.833 |" in text
    assert "| wgan-gp critic | 0.9 | 200.0 | 250.0 | 300.0 | 1.250 | 1.500 | 0.833 |" in text
    assert "**met**: resnet18 training step ≤ 1.05× dense (Adam fused=True): 1.040×" in text
    # overhead 4 % against the hook's 31 %: 0.13 of it
    assert "**met**: masked step overhead < half the prune hook's: worst 0.13 of it" in text
    assert "(no target) gradient-penalty (WGAN-GP) critic step, lthgan/dense: 1.250× (wgan-gp critic sp0)" in text


def test_resnet_misses(ratios, tmp_path):
    text = _suite_report(ratios, tmp_path, _suite_rows("resnet", "resnet18 8x3x64x64", 0.100, 0.120, 0.130))
    assert "**missed**: resnet18 training step ≤ 1.05× dense (Adam fused=True): 1.200×" in text
    assert "**missed**: masked step overhead < half the prune hook's: worst 0.67 of it" in text


def test_no_resnet_rows(ratios, tmp_path):
    text = _suite_report(ratios, tmp_path, _suite_rows("penalty", "c", 1.0, 1.0, 1.0))
    assert "n/a: resnet18 training step vs dense: no resnet rows" in text
