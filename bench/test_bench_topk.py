"""Suite 2, selection: one IMP pruning step over a whole model's weights.

Given weights and the current masks (0%, 74% or 90% already pruned), keep the largest 80% by
|w| of the surviving entries with one global threshold, and return new bool masks:

* ``lthgan``: ``lthgan.ops.global_topk_masks`` (radix select, no concatenated copy);
* ``cat+kthvalue``: ``torch.cat`` of the scores (pruned entries as -1), ``kthvalue`` for the
  threshold, then one comparison per tensor;
* ``cat+topk``: ``torch.cat`` of the scores, ``topk(keep, sorted=False)`` and a scatter of the
  winners' indices into a flat bool mask split back per tensor.

Sizes: 4.3 M (SNGAN G), 11.4 M (a CycleGAN G) and 28 M weights (both CycleGAN G and D), at
the paper models' layer shapes, normal random weights. All three select the same entries
except among ties at the threshold (millions of fp32 samples do tie); that is checked before
timing.
"""
from __future__ import annotations

import pytest
import torch

from benchutil import SPARSITIES, WEIGHT_SETS, random_masks, random_weights, run
from lthgan import ops

_weights: dict = {}
_cache: dict = {}


def _data(size: str, sparsity: float, device):
    key = (size, sparsity, str(device))
    if key not in _cache:
        _cache.clear()
        shapes = WEIGHT_SETS[size]
        if (size, str(device)) not in _weights:
            _weights.clear()
            _weights[(size, str(device))] = random_weights(shapes, device)
        ws = _weights[(size, str(device))]
        ms = random_masks(shapes, sparsity, device)
        survivors = int(sum(int(m.sum()) for m in ms))
        keep = int(round(0.8 * survivors))
        _cache[key] = (ws, ms, keep)
    return _cache[key]


def _scores(ws, ms) -> torch.Tensor:
    return torch.cat([torch.where(m, w.abs(), -1.0).reshape(-1) for w, m in zip(ws, ms)])


def _split(flat: torch.Tensor, ws) -> list[torch.Tensor]:
    out, start = [], 0
    for w in ws:
        n = w.numel()
        out.append(flat[start:start + n].view(w.shape))
        start += n
    return out


def cat_kthvalue(ws, ms, keep: int) -> list[torch.Tensor]:
    scores = _scores(ws, ms)
    k = scores.numel() - keep  # the k-th smallest is the largest entry that goes
    thr = scores.kthvalue(k).values
    return _split(scores > thr, ws)


def cat_topk(ws, ms, keep: int) -> list[torch.Tensor]:
    scores = _scores(ws, ms)
    idx = scores.topk(keep, sorted=False).indices
    flat = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    flat[idx] = True
    return _split(flat, ws)


IMPLS = {
    "lthgan": lambda ws, ms, keep: ops.global_topk_masks(ws, ms, keep),
    "cat+kthvalue": cat_kthvalue,
    "cat+topk": cat_topk,
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("sparsity", SPARSITIES, ids=lambda s: f"sp{s:g}")
@pytest.mark.parametrize("size", list(WEIGHT_SETS))
def test_select(benchmark, device, size, sparsity, impl):
    ws, ms, keep = _data(size, sparsity, device)
    fn = IMPLS[impl]
    got = torch.cat([m.reshape(-1) for m in fn(ws, ms, keep)])
    want = torch.cat([m.reshape(-1) for m in ops.global_topk_masks(ws, ms, keep)])
    scores = _scores(ws, ms)
    assert int(want.sum()) == keep
    thr = scores[want].min()
    untied = scores != thr
    assert torch.equal(got[untied], want[untied])  # the same selection up to ties
    if impl != "cat+kthvalue":  # `scores > thr` drops every tie at the threshold
        assert int(got.sum()) == keep
    del got, want, scores, untied
    run(benchmark, lambda: fn(ws, ms, keep), device=device, suite="topk",
        group=f"topk {size} sp{sparsity:g}", impl=impl, sparsity=sparsity, size=size,
        numel=sum(w.numel() for w in ws), keep=keep, budget_s=1.5, min_rounds=3)
