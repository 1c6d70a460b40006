"""lthgan.optim.Adam / AdamW against torch.optim's (foreach=False) on fresh random problems,
and on masked models: pruned entries stay exactly zero and receive no update."""
import copy

import pytest
import torch
import torch.nn.functional as F

import lthgan
from lthgan import ops
from lthgan.optim import Adam, AdamW

pytestmark = pytest.mark.filterwarnings("error")

PAIRS = [(Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)]


def _params(device, dtype=torch.float32):
    shapes = [(7, 5), (3, 4, 3, 3), (11,), (40000,)]  # the last spans several parallel chunks
    return [torch.randn(s, device=device, dtype=dtype) for s in shapes]


def _run(cls, params, groups, steps, grads, **kw):
    ps = [p.clone().requires_grad_(True) for p in params]
    if groups:
        opt = cls([{"params": ps[:2], "lr": 3e-3}, {"params": ps[2:], "weight_decay": 0.05}], **kw)
    else:
        opt = cls(ps, **kw)
    for s in range(steps):
        for p, g in zip(ps, grads[s]):
            p.grad = None if g is None else g.clone()
        opt.step()
    return ps, opt


def _grads(params, steps, sparse_step=None):
    out = []
    for s in range(steps):
        gs = [torch.randn_like(p) for p in params]
        if s == sparse_step:
            gs[1] = None  # a parameter without gradient this step
        out.append(gs)
    return out


def _close(a, b, dtype):
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-13, rtol=1e-12)
    torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("ours,theirs", PAIRS)
@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.1}, {"lr": 0.01, "betas": (0.5, 0.9),
                                                              "eps": 1e-6}])
@pytest.mark.parametrize("groups", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch(device, ours, theirs, kw, groups, dtype):
    params = _params(device, dtype)
    grads = _grads(params, 6, sparse_step=2)
    a, oa = _run(ours, params, groups, 6, grads, **kw)
    b, ob = _run(theirs, params, groups, 6, grads, foreach=False, **kw)
    for pa, pb in zip(a, b):
        _close(pa, pb, dtype)
        _close(oa.state[pa]["exp_avg"], ob.state[pb]["exp_avg"], dtype)
        _close(oa.state[pa]["exp_avg_sq"], ob.state[pb]["exp_avg_sq"], dtype)
        assert oa.state[pa]["step"].item() == ob.state[pb]["step"].item()
        assert oa.state[pa]["step"].dtype == ob.state[pb]["step"].dtype
    assert any((pa - p).abs().max() > 1e-3 for pa, p in zip(a, params))


@pytest.mark.parametrize("ours,theirs", PAIRS)
def test_state_dict_round_trip(device, ours, theirs):
    params = _params(device)
    grads = _grads(params, 6)
    a, oa = _run(ours, params, True, 3, grads, weight_decay=0.01)
    b = [p.detach().clone().requires_grad_(True) for p in a]
    ob = theirs([{"params": b[:2], "lr": 3e-3}, {"params": b[2:], "weight_decay": 0.05}],
                weight_decay=0.01, foreach=False)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # ours -> torch
    c = [p.detach().clone().requires_grad_(True) for p in a]
    oc = ours([{"params": c[:2], "lr": 3e-3}, {"params": c[2:], "weight_decay": 0.05}],
              weight_decay=0.01)
    oc.load_state_dict(copy.deepcopy(ob.state_dict()))  # torch -> ours
    for s in range(3, 6):
        for ps, opt in ((a, oa), (b, ob), (c, oc)):
            for p, g in zip(ps, grads[s]):
                p.grad = g.clone()
            opt.step()
    for pa, pb, pc in zip(a, b, c):
        _close(pa, pb, torch.float32)
        _close(pc, pb, torch.float32)
    assert oa.state_dict()["param_groups"] == ob.state_dict()["param_groups"]


@pytest.mark.parametrize("kw", [{"amsgrad": True}, {"maximize": True},
                                {"lr": torch.tensor(0.01)}])
def test_options_it_does_not_fuse_run_torchs(kw):
    params = _params("cpu")
    grads = _grads(params, 4)
    a, _ = _run(Adam, params, True, 4, grads, **kw)
    b, _ = _run(torch.optim.Adam, params, True, 4, grads, foreach=False, **kw)
    for pa, pb in zip(a, b):
        _close(pa, pb, torch.float32)


def test_bfloat16_params_run_torchs():
    params = _params("cpu", torch.bfloat16)
    grads = _grads(params, 3)
    a, _ = _run(Adam, params, False, 3, grads)
    b, _ = _run(torch.optim.Adam, params, False, 3, grads, foreach=False)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb)


def test_is_a_torch_optimizer_and_works_with_schedulers():
    p = torch.nn.Parameter(torch.randn(3))
    opt = AdamW([p], lr=0.1)
    assert isinstance(opt, torch.optim.AdamW) and isinstance(opt, torch.optim.Optimizer)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert lthgan.optim.Adam is Adam


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_masked_training_keeps_pruned_entries_zero(device, cls, wd):
    # A masked conv + linear model whose pruned weights are zero in storage, as lthgan keeps
    # them. Training must leave them exactly zero, with no gradient and no Adam state there.
    w1 = torch.randn(8, 3, 3, 3, device=device)
    w2 = torch.randn(4, 8 * 6 * 6, device=device) * 0.05
    m1 = torch.rand(w1.shape, device=device) > 0.74
    m2 = torch.rand(w2.shape, device=device) > 0.74
    w1 = torch.where(m1, w1, 0.0).requires_grad_(True)
    w2 = torch.where(m2, w2, 0.0).requires_grad_(True)
    b2 = torch.zeros(4, device=device, requires_grad=True)
    opt = cls([w1, w2, b2], lr=0.01, weight_decay=wd)
    x = torch.randn(16, 3, 6, 6, device=device)
    y = torch.randn(16, 4, device=device)
    ref = [w1.detach().clone(), w2.detach().clone()]
    losses = []
    for _ in range(15):
        opt.zero_grad()
        h = torch.relu(ops.masked_conv2d(x, w1, m1, None, 1, 1))
        loss = F.mse_loss(ops.masked_linear(h.flatten(1), w2, m2, b2), y)
        loss.backward()
        for w, m in ((w1, m1), (w2, m2)):
            assert torch.all(w.grad[~m] == 0), "a gradient reached pruned entries"
            assert w.grad[m].abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    for w, m, w0 in ((w1, m1, ref[0]), (w2, m2, ref[1])):
        assert torch.all(w[~m] == 0), "a pruned weight moved"
        assert not torch.signbit(w[~m]).any(), "a pruned weight became -0"
        st = opt.state[w]
        assert torch.all(st["exp_avg"][~m] == 0) and torch.all(st["exp_avg_sq"][~m] == 0)
        assert (w[m] != w0[m]).float().mean() > 0.9, "kept weights must train"
    assert losses[-1] < 0.8 * losses[0]


def test_bad_arguments_give_clear_errors():
    p = torch.randn(3)
    with pytest.raises(RuntimeError, match=r"exp_avgs\[0\] .* must match params\[0\]"):
        torch.ops.lthgan.adam_step_([p], [p.clone()], [torch.zeros(4)], [torch.zeros(3)],
                                    [torch.tensor(0.0)], 1e-3, 0.9, 0.999, 0.0, 1e-8, False)
    with pytest.raises(RuntimeError, match="five lists must have the same length"):
        torch.ops.lthgan.adam_step_([p], [], [], [], [], 1e-3, 0.9, 0.999, 0.0, 1e-8, False)


def test_opcheck_adam_step():
    p = torch.randn(5, 4)
    args = ([p.clone(), torch.randn(7)], [torch.randn(5, 4), torch.randn(7)],
            [torch.randn(5, 4), torch.zeros(7)], [torch.rand(5, 4), torch.zeros(7)],
            [torch.tensor(2.0), torch.tensor(0.0)], 1e-3, 0.9, 0.999, 0.01, 1e-8, True)
    torch.library.opcheck(torch.ops.lthgan.adam_step_.default, args)


def test_fused_flag_and_grad_scaler_work():
    p = torch.nn.Parameter(torch.randn(4))
    q = p.detach().clone().requires_grad_(True)
    ours = Adam([p], lr=0.1, fused=True)
    theirs = torch.optim.Adam([q], lr=0.1, foreach=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    for _ in range(3):
        for t, opt in ((p, ours), (q, theirs)):
            opt.zero_grad()
            loss = (t * torch.arange(4.0)).sum()
            if opt is ours:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
    torch.testing.assert_close(p, q)
