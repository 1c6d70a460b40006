"""Masked conv / conv-transpose / linear ops against plain PyTorch references."""
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

from lthgan import ops

# A warning is a bug (GUIDE.md): e.g. "autograd kernel was not registered".
pytestmark = pytest.mark.filterwarnings("error")


def _mask(shape, device, p=0.5):
    return torch.rand(shape, device=device) > p


def _check_grads(out, ref, tensors, ref_tensors, atol, rtol):
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, tensors, g)
    ref_grads = torch.autograd.grad(ref, ref_tensors, g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    return grads


CONV_CASES = [
    # (cin, cout, k, stride, padding, dilation, groups)
    (4, 6, 3, 1, 1, 1, 1),
    (4, 6, 3, 2, 0, 1, 1),
    (4, 8, 1, 1, 0, 1, 1),
    (4, 8, 4, 2, 1, 1, 2),
    (8, 8, 7, 1, 3, 1, 4),
    (4, 4, 3, 1, 1, 2, 1),
    (8, 4, 3, 2, 3, 2, 4),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_masked_conv2d_matches_reference(device, case, dtype, bias):
    cin, cout, k, s, p, d, g = case
    x = torch.randn(3, cin, 13, 11, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(cout, cin // g, k, k, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(cout, device=device, dtype=dtype, requires_grad=True) if bias else None
    m = _mask(w.shape, device)
    out = ops.masked_conv2d(x, w, m, b, s, p, d, g)
    ref = F.conv2d(x, w * m, b, s, p, d, g)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out, ref, **tol)
    ts = [x, w] + ([b] if bias else [])
    _, gw, *_ = _check_grads(out, ref, ts, ts, **tol)
    assert torch.all(gw[~m] == 0), "grad_weight must be exactly zero at pruned entries"
    assert gw[m].abs().sum() > 0


@pytest.mark.parametrize("k,s,p,op,d,g", [
    (3, 1, 1, 0, 1, 1), (4, 2, 1, 0, 1, 1), (3, 2, 1, 1, 1, 1), (1, 1, 0, 0, 1, 2),
    (3, 2, 0, 1, 2, 1), (7, 1, 3, 0, 1, 4), (4, 2, 3, 1, 1, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_conv_transpose2d_matches_reference(device, k, s, p, op, d, g, dtype):
    cin, cout = 8, 4
    x = torch.randn(2, cin, 9, 7, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(cin, cout // g, k, k, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(cout, device=device, dtype=dtype, requires_grad=True)
    m = _mask(w.shape, device)
    out = ops.masked_conv_transpose2d(x, w, m, b, s, p, op, g, d)
    ref = F.conv_transpose2d(x, w * m, b, s, p, op, g, d)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out, ref, **tol)
    _, gw, _ = _check_grads(out, ref, [x, w, b], [x, w, b], **tol)
    assert torch.all(gw[~m] == 0)


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (7,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_linear_matches_reference(device, shape, dtype):
    x = torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(6, 7, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(6, device=device, dtype=dtype, requires_grad=True)
    m = _mask(w.shape, device)
    out = ops.masked_linear(x, w, m, b)
    ref = F.linear(x, w * m, b)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out, ref, **tol)
    _, gw, _ = _check_grads(out, ref, [x, w, b], [x, w, b], **tol)
    assert torch.all(gw[~m] == 0)


def test_noncontiguous_and_channels_last_inputs(device):
    w = torch.randn(6, 4, 3, 3, device=device, requires_grad=True)
    m = _mask(w.shape, device)
    base = torch.randn(2, 4, 10, 12, device=device)
    for x in (base.to(memory_format=torch.channels_last), base.transpose(2, 3), base[:, :, ::2, 1::2]):
        x = x.detach().requires_grad_(True)
        out = ops.masked_conv2d(x, w, m, None, 1, 1, 1, 1)
        ref = F.conv2d(x, w * m, None, 1, 1)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        _, gw = _check_grads(out, ref, [x, w], [x, w], atol=1e-4, rtol=1e-4)
        assert torch.all(gw[~m] == 0)
    # a non-contiguous weight view and mask
    wt = torch.randn(3, 3, 4, 6, device=device).permute(3, 2, 0, 1).requires_grad_(True)
    mt = _mask((3, 3, 4, 6), device).permute(3, 2, 0, 1)
    out = ops.masked_conv2d(base, wt, mt, None, 1, 0, 1, 1)
    torch.testing.assert_close(out, F.conv2d(base, wt * mt), atol=1e-4, rtol=1e-4)


def test_unbatched_input(device):
    x = torch.randn(4, 8, 8, device=device, requires_grad=True)
    w = torch.randn(5, 4, 3, 3, device=device, requires_grad=True)
    m = _mask(w.shape, device)
    out = ops.masked_conv2d(x, w, m, None, 1, 1, 1, 1)
    ref = F.conv2d(x, w * m, None, 1, 1)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    _check_grads(out, ref, [x, w], [x, w], atol=1e-4, rtol=1e-4)


def test_pruned_inf_weight_gives_zero_not_nan(device):
    w = torch.randn(4, 3, 3, 3, device=device)
    w[0, 0, 0, 0] = float("inf")
    m = torch.ones_like(w, dtype=torch.bool)
    m[0, 0, 0, 0] = False
    x = torch.randn(1, 3, 5, 5, device=device)
    out = ops.masked_conv2d(x, w, m, None, 1, 1, 1, 1)
    assert torch.isfinite(out).all()


def test_gradcheck_float64(device):
    x = torch.randn(2, 4, 5, 5, device=device, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, device=device, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, device=device, dtype=torch.float64, requires_grad=True)
    m = _mask(w.shape, device)
    assert torch.autograd.gradcheck(lambda x, w, b: ops.masked_conv2d(x, w, m, b, 2, 1, 1, 2),
                                    (x, w, b))
    wt = torch.randn(4, 3, 3, 3, device=device, dtype=torch.float64, requires_grad=True)
    bt = torch.randn(3, device=device, dtype=torch.float64, requires_grad=True)
    mt = _mask(wt.shape, device)
    assert torch.autograd.gradcheck(
        lambda x, w, b: ops.masked_conv_transpose2d(x, w, mt, b, 2, 1, 1, 1, 1), (x, wt, bt))
    xl = torch.randn(3, 5, device=device, dtype=torch.float64, requires_grad=True)
    wl = torch.randn(4, 5, device=device, dtype=torch.float64, requires_grad=True)
    bl = torch.randn(4, device=device, dtype=torch.float64, requires_grad=True)
    ml = _mask(wl.shape, device)
    assert torch.autograd.gradcheck(lambda x, w, b: ops.masked_linear(x, w, ml, b), (xl, wl, bl))


def test_no_mask_multiply_node_in_graph(device):
    x = torch.randn(2, 3, 6, 6, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    m = _mask(w.shape, device)
    out = ops.masked_conv2d(x, w, m, None, 1, 1, 1, 1)
    names = []
    stack = [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None:
            continue
        names.append(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    assert not any("Mul" in n for n in names), names
    assert sum("AccumulateGrad" in n for n in names) == 2


def test_autocast_bf16(device):
    x = torch.randn(4, 8, 12, 12, device=device)
    w = torch.randn(16, 8, 3, 3, device=device, requires_grad=True)
    b = torch.randn(16, device=device, requires_grad=True)
    m = _mask(w.shape, device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = ops.masked_conv2d(x, w, m, b, 1, 1, 1, 1)
        ref = F.conv2d(x, w * m, b, 1, 1)
        lin = ops.masked_linear(x.flatten(1)[:, :32], w.flatten(1)[:, :32].detach(),
                                _mask((16, 32), device), None)
    assert out.dtype == torch.bfloat16 and ref.dtype == torch.bfloat16
    assert lin.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), atol=0.1, rtol=0.02)
    gw, gb = torch.autograd.grad(out.float().square().mean(), [w, b])
    rgw, rgb = torch.autograd.grad(ref.float().square().mean(), [w, b])
    assert gw.dtype == torch.float32 and gb.dtype == torch.float32
    assert torch.all(gw[~m] == 0)
    torch.testing.assert_close(gw, rgw, atol=0.05, rtol=0.05)
    torch.testing.assert_close(gb, rgb, atol=0.05, rtol=0.05)


def test_mixed_dtype_input_casts_weight(device):
    x = torch.randn(2, 3, 6, 6, device=device, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    m = _mask(w.shape, device)
    out = ops.masked_conv2d(x, w, m, None, 1, 1, 1, 1)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, F.conv2d(x, (w * m).double(), None, 1, 1))
    (gw,) = torch.autograd.grad(out.sum(), [w])
    assert gw.dtype == torch.float32 and torch.all(gw[~m] == 0)


@pytest.mark.parametrize("fn", ["conv", "convt", "linear"])
def test_bad_inputs_give_clear_errors(device, fn):
    x = torch.randn(2, 4, 6, 6, device=device)
    w = torch.randn(4, 4, 3, 3, device=device)
    call = {
        "conv": lambda x, w, m: ops.masked_conv2d(x, w, m, None, 1, 1),
        "convt": lambda x, w, m: ops.masked_conv_transpose2d(x, w, m, None, 1, 1),
        "linear": lambda x, w, m: ops.masked_linear(x.flatten(1)[:, :9], w.flatten(1)[:4, :9], m),
    }[fn]
    wshape = w.shape if fn != "linear" else (4, 9)
    with pytest.raises(RuntimeError, match=r"mask must be a bool tensor, got dtype Float"):
        call(x, w, torch.ones(wshape, device=device))
    with pytest.raises(RuntimeError, match=r"mask has shape .* but weight has shape"):
        call(x, w, torch.ones(2, 2, dtype=torch.bool, device=device))
    if device.type == "cuda":
        with pytest.raises(RuntimeError, match="same device"):
            call(x, w, torch.ones(wshape, dtype=torch.bool))


def test_bad_int_args():
    x = torch.randn(1, 2, 4, 4)
    w = torch.randn(2, 2, 3, 3)
    m = torch.ones_like(w, dtype=torch.bool)
    with pytest.raises(ValueError, match="stride must be an int or a pair"):
        ops.masked_conv2d(x, w, m, None, stride=(1, 2, 3))
    with pytest.raises(TypeError, match="keep must be an int"):
        ops.global_topk_masks([w], [m], 2.5)


def _sample_inputs(device):
    x = torch.randn(2, 4, 7, 7, device=device, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, device=device, requires_grad=True)
    b = torch.randn(6, device=device, requires_grad=True)
    m = _mask(w.shape, device)
    yield torch.ops.lthgan.masked_conv2d.default, (x, w, m, b, [2, 2], [1, 1], [1, 1], 2)
    w4 = torch.randn(8, 1, 3, 3, device=device, requires_grad=True)
    yield torch.ops.lthgan.masked_conv2d.default, (x, w4, _mask(w4.shape, device), None, [1, 1], [0, 0], [2, 2], 4)
    wt = torch.randn(4, 3, 4, 4, device=device, requires_grad=True)
    yield torch.ops.lthgan.masked_conv_transpose2d.default, (x, wt, _mask(wt.shape, device), torch.randn(3, device=device, requires_grad=True), [2, 2], [1, 1], [1, 1], 1, [1, 1])
    wl = torch.randn(5, 7, device=device, requires_grad=True)
    yield torch.ops.lthgan.masked_linear.default, (torch.randn(3, 7, device=device, requires_grad=True), wl, _mask(wl.shape, device), torch.randn(5, device=device, requires_grad=True))
    go = torch.randn(2, 6, 4, 4, device=device)
    yield torch.ops.lthgan.masked_convolution_backward.default, (go, x.detach(), w.detach(), m, True, [2, 2], [1, 1], [1, 1], False, [0, 0], 2, [True, True, True])
    yield torch.ops.lthgan.masked_linear_backward.default, (torch.randn(3, 5, device=device), torch.randn(3, 7, device=device), wl.detach(), _mask(wl.shape, device), False, [True, False, False])
    ws = [torch.randn(3, 4, device=device), torch.randn(10, device=device)]
    yield torch.ops.lthgan.global_topk_masks.default, (ws, [_mask(t.shape, device, 0.3) for t in ws], 3)
    yield torch.ops.lthgan.rewind_.default, ([t.clone() for t in ws], [torch.randn_like(t) for t in ws], [_mask(ws[0].shape, device), None])


# opcheck's own test_aot_dispatch_dynamic reads .grad of a non-leaf it made: it warns so for
# torch.ops.aten.mul.Tensor too (torch 2.14), so that one warning is the harness's, not ours.
def test_opcheck(device):
    for op, args in _sample_inputs(device):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is "
                                    "not a leaf")
            torch.library.opcheck(op, args)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(8, 3, 3, 3) * 0.2)
        self.w2 = torch.nn.Parameter(torch.randn(8, 4, 4, 4) * 0.2)
        self.w3 = torch.nn.Parameter(torch.randn(5, 4 * 12 * 12) * 0.05)
        self.register_buffer("m1", torch.rand(8, 3, 3, 3) > 0.3)
        self.register_buffer("m2", torch.rand(8, 4, 4, 4) > 0.3)
        self.register_buffer("m3", torch.rand(5, 4 * 12 * 12) > 0.3)

    def forward(self, x):
        x = torch.relu(ops.masked_conv2d(x, self.w1, self.m1, None, 1, 1))
        x = torch.relu(ops.masked_conv_transpose2d(x, self.w2, self.m2, None, 2, 1))
        return ops.masked_linear(x.flatten(1), self.w3, self.m3)


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    net = _Net()
    x = torch.randn(2, 3, 6, 6)
    eager = net(x)
    geager = torch.autograd.grad(eager.sum(), list(net.parameters()))
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    gc = torch.autograd.grad(out.sum(), list(net.parameters()))
    for a, b in zip(gc, geager):
        torch.testing.assert_close(a, b)
    for g, m in zip(gc, [net.m1, net.m2, net.m3]):
        assert torch.all(g[~m] == 0)


def test_cpu_kernels_are_built_with_openmp():
    # at::parallel_for's `#pragma omp parallel` is compiled into the extension itself: built
    # without -fopenmp, every CPU kernel (top-k, rewind, the masking passes) would run on one
    # thread with no error. The parallel region's entry point shows it was compiled in.
    import shutil
    import subprocess

    import lthgan._C as ext

    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run([nm, "-D", "--undefined-only", ext.__file__], capture_output=True,
                         text=True, check=True).stdout
    assert "GOMP_parallel" in out, "lthgan._C was built without OpenMP"
