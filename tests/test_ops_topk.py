"""global_topk_masks and rewind_ against plain-PyTorch references."""
import subprocess
import sys
import textwrap

import pytest
import torch

from lthgan import ops

# A warning is a bug (GUIDE.md): e.g. "autograd kernel was not registered".
pytestmark = pytest.mark.filterwarnings("error")


def reference_topk(weights, masks, keep):
    """Plain reference: stable sort of |w| (descending) over candidates in (tensor, index)
    order; ties therefore go to the earlier tensor, then the lower flat index."""
    vals, pos = [], []
    for t, (w, m) in enumerate(zip(weights, masks)):
        idx = torch.nonzero(m.flatten().cpu(), as_tuple=True)[0]
        vals.append(w.flatten().cpu().double().abs()[idx])
        pos.extend((t, int(i)) for i in idx)
    outs = [torch.zeros(w.shape, dtype=torch.bool) for w in weights]
    if not pos or keep == 0:
        return outs
    allv = torch.cat(vals)
    order = torch.sort(-allv, stable=True).indices[:keep]
    for o in order.tolist():
        t, i = pos[o]
        outs[t].view(-1)[i] = True
    return outs


def _check(weights, masks, keep):
    got = ops.global_topk_masks(weights, masks, keep)
    ref = reference_topk(weights, masks, keep)
    assert len(got) == len(weights)
    for g, r, w in zip(got, ref, weights):
        assert g.dtype == torch.bool and g.shape == w.shape and g.device == w.device
        assert torch.equal(g.cpu(), r), "mask differs from the reference"
    assert sum(int(g.sum()) for g in got) == keep
    return got


DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_many_small_plus_one_large(device, dtype):
    shapes = [(3,), (2, 5), (7, 1, 3), (1,), (4, 4, 3, 3)] * 4 + [(300, 257)]
    ws = [torch.randn(s, device=device).to(dtype) for s in shapes]
    ms = [torch.rand(s, device=device) > 0.2 for s in shapes]
    total = sum(int(m.sum()) for m in ms)
    for keep in (1, 17, total // 3, total - 1):
        _check(ws, ms, keep)


@pytest.mark.parametrize("dtype", DTYPES)
def test_heavy_ties(device, dtype):
    # quantised values: every threshold lands inside a large group of ties
    ws = [torch.randint(-3, 4, s, device=device).to(dtype) * 0.5 for s in [(50, 40), (33,), (7, 7)]]
    ms = [torch.rand(w.shape, device=device) > 0.1 for w in ws]
    total = sum(int(m.sum()) for m in ms)
    for keep in (1, 5, total // 2, total - 3):
        _check(ws, ms, keep)
    # all equal
    eq = [torch.full(s, -1.25, device=device, dtype=dtype) for s in [(10, 10), (5,)]]
    full = [torch.ones(w.shape, dtype=torch.bool, device=device) for w in eq]
    got = _check(eq, full, 37)
    assert got[0].flatten()[:37].all() and not got[0].flatten()[37:].any() and not got[1].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(device, dtype):
    tiny = torch.finfo(dtype).tiny
    w = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), tiny / 4, -tiny / 2, 1.0, -1.0,
                      tiny, 3.0], device=device).to(dtype)
    m = torch.ones_like(w, dtype=torch.bool)
    for keep in range(0, 11):
        _check([w], [m], keep)


def test_keep_zero_and_all_and_partial_masks(device):
    ws = [torch.randn(20, 30, device=device), torch.randn(45, device=device)]
    ms = [torch.rand(w.shape, device=device) > 0.5 for w in ws]
    total = sum(int(m.sum()) for m in ms)
    got = _check(ws, ms, 0)
    assert not any(g.any() for g in got)
    got = _check(ws, ms, total)
    assert all(torch.equal(g, m) for g, m in zip(got, ms))
    # pruned entries never come back, even if they are the largest
    ws[0][~ms[0]] = 1e9
    got = _check(ws, ms, total // 2)
    assert not got[0][~ms[0]].any()


def test_mixed_dtypes_one_threshold(device):
    ws = [torch.randn(100, device=device), torch.randn(60, device=device).half(),
          torch.randn(70, device=device, dtype=torch.float64)]
    ms = [torch.ones(w.shape, dtype=torch.bool, device=device) for w in ws]
    _check(ws, ms, 77)


def test_large_random_matches_reference(device):
    ws = [torch.randn(n, device=device) for n in (200_000, 70_001, 5)]
    ms = [torch.rand(w.shape, device=device) > 0.25 for w in ws]
    total = sum(int(m.sum()) for m in ms)
    _check(ws, ms, int(total * 0.8))


def test_deterministic_across_calls_and_thread_counts(device):
    ws = [torch.randint(-20, 20, (400, 300), device=device).float() for _ in range(3)]
    ms = [torch.rand(w.shape, device=device) > 0.3 for w in ws]
    keep = 100_000
    first = ops.global_topk_masks(ws, ms, keep)
    for _ in range(3):
        again = ops.global_topk_masks(ws, ms, keep)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    if device.type == "cpu":
        old = torch.get_num_threads()
        try:
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                again = ops.global_topk_masks(ws, ms, keep)
                assert all(torch.equal(a, b) for a, b in zip(first, again))
        finally:
            torch.set_num_threads(old)


def test_errors(device):
    w = torch.randn(10, device=device)
    m = torch.ones(10, dtype=torch.bool, device=device)
    w_nan = w.clone()
    w_nan[3] = float("nan")
    with pytest.raises(RuntimeError, match="NaN"):
        ops.global_topk_masks([w_nan], [m], 2)
    with pytest.raises(RuntimeError, match=r"keep=11 is more than the 10 entries"):
        ops.global_topk_masks([w], [m], 11)
    with pytest.raises(RuntimeError, match="keep must be >= 0"):
        ops.global_topk_masks([w], [m], -1)
    with pytest.raises(RuntimeError, match="must be a bool tensor"):
        ops.global_topk_masks([w], [m.float()], 1)
    with pytest.raises(RuntimeError, match=r"masks\[0\] has shape"):
        ops.global_topk_masks([w], [m[:5]], 1)
    with pytest.raises(RuntimeError, match="got 1 weights but 2 masks"):
        ops.global_topk_masks([w], [m, m], 1)
    with pytest.raises(RuntimeError, match="must be float32"):
        ops.global_topk_masks([torch.arange(10, device=device)], [m], 1)


def test_threads_in_subprocess_agree():
    # a fresh interpreter with a different intra-op thread count gives identical masks
    code = textwrap.dedent("""
        import sys, torch, lthgan
        torch.set_num_threads(int(sys.argv[1]))
        g = torch.Generator().manual_seed(5)
        ws = [torch.randn(n, generator=g) for n in (300_000, 1_000, 77_777)]
        ws[1][:500] = 0.125
        ms = [torch.rand(w.shape, generator=g) > 0.2 for w in ws]
        out = lthgan.ops.global_topk_masks(ws, ms, 150_000)
        print(sum(int(o.view(-1).nonzero().sum()) * (i + 1) for i, o in enumerate(out)))
    """)
    res = [subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True,
                          check=True).stdout.strip() for n in (1, 2)]
    assert res[0] == res[1] and res[0]


# ------------------------------------------------------------------------------------- rewind_


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_rewind_values_and_identity(device, dtype):
    ws = [torch.randn(s, device=device).to(dtype) for s in [(5, 3, 3, 3), (17,), (4, 9)]]
    srcs = [torch.randn_like(w) for w in ws]
    srcs[0][0, 0, 0, 0] = float("inf")
    ms = [torch.rand(ws[0].shape, device=device) > 0.4, None, torch.rand(ws[2].shape, device=device) > 0.6]
    ms[0][0, 0, 0, 0] = False
    ptrs = [w.data_ptr() for w in ws]
    ids = [id(w) for w in ws]
    ops.rewind_(ws, srcs, ms)
    assert [w.data_ptr() for w in ws] == ptrs and [id(w) for w in ws] == ids
    assert torch.equal(ws[0], torch.where(ms[0], srcs[0], torch.zeros((), device=device, dtype=dtype)))
    assert torch.equal(ws[1], srcs[1])
    assert torch.equal(ws[2], torch.where(ms[2], srcs[2], torch.zeros((), device=device, dtype=dtype)))
    assert not torch.isnan(ws[0]).any()


def test_rewind_parameters_keep_optimizer_valid(device):
    p = torch.nn.Parameter(torch.randn(6, 6, device=device))
    opt = torch.optim.Adam([p], lr=0.1)
    src = torch.randn(6, 6, device=device)
    m = torch.rand(6, 6, device=device) > 0.5
    ops.rewind_([p], [src], [m])
    assert opt.param_groups[0]["params"][0] is p
    assert torch.equal(p.detach(), torch.where(m, src, torch.zeros((), device=device)))
    assert p.requires_grad


def test_rewind_noncontiguous_weight(device):
    base = torch.randn(8, 6, device=device)
    w = base.t()
    src = torch.randn(6, 8, device=device)
    m = torch.rand(6, 8, device=device) > 0.5
    ops.rewind_([w], [src], [m])
    assert torch.equal(base.t(), torch.where(m, src, torch.zeros((), device=device)))


def test_rewind_errors_before_writing(device):
    w1, w2 = torch.randn(4, device=device), torch.randn(3, device=device)
    before = [w1.clone(), w2.clone()]
    good = torch.randn(4, device=device)
    cases = [
        ([w1, w2], [good, torch.randn(5, device=device)], [None, None], r"sources\[1\] has shape"),
        ([w1, w2], [good, torch.randn(3, device=device, dtype=torch.float64)], [None, None], r"sources\[1\] has dtype"),
        ([w1, w2], [good], [None, None], "same length"),
        ([w1, w2], [good, torch.randn(3, device=device)], [None, torch.ones(3, device=device)], r"masks\[1\] must be a bool"),
        ([w1, w2], [good, torch.randn(3, device=device)], [None, torch.ones(2, dtype=torch.bool, device=device)], r"masks\[1\] has shape"),
        ([w1, w1], [good, good], [None, None], "share storage"),
    ]
    for weights, sources, masks, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            ops.rewind_(weights, sources, masks)
        assert torch.equal(w1, before[0]) and torch.equal(w2, before[1]), "nothing may be written"


def test_empty_lists_give_empty_masks():
    assert ops.global_topk_masks([], [], 0) == []
    assert torch.ops.lthgan.global_topk_masks([], [], 0) == []
    with pytest.raises(RuntimeError, match="keep must be 0 when there are no weights, got 3"):
        torch.ops.lthgan.global_topk_masks([], [], 3)
    with pytest.raises(RuntimeError, match="keep must be 0 when there are no weights, got 2"):
        ops.global_topk_masks([], [], 2)
    w = torch.randn(0, 3)  # tensors with no entries still go to their device's kernel
    assert ops.global_topk_masks([w], [torch.ones(0, 3, dtype=torch.bool)], 0)[0].shape == (0, 3)
