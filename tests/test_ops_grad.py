"""Higher-order autograd and torch.func over the masked ops, against F.conv2d / F.linear on
``weight * mask``: gradgradcheck, a WGAN-GP discriminator step, an R1 penalty, grad, vmap and
vmap(grad). Warnings are errors here: no "autograd kernel was not registered", no vmap
fallback."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from lthgan import ops

pytestmark = pytest.mark.filterwarnings("error")

f64 = torch.float64


def _mask(shape, device, p=0.4):
    return torch.rand(shape, device=device) > p


def _rand(*shape, device, dtype=f64, rg=True):
    return torch.randn(*shape, device=device, dtype=dtype, requires_grad=rg)


# ---- gradgradcheck --------------------------------------------------------------------------


def test_gradgradcheck_conv2d(device):
    x = _rand(2, 4, 5, 5, device=device)
    w = _rand(6, 2, 3, 3, device=device)
    b = _rand(6, device=device)
    m = _mask(w.shape, device)
    fn = lambda x, w, b: ops.masked_conv2d(x, w, m, b, 2, 1, 1, 2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_gradgradcheck_conv_transpose2d(device):
    x = _rand(2, 4, 4, 4, device=device)
    w = _rand(4, 3, 3, 3, device=device)
    b = _rand(3, device=device)
    m = _mask(w.shape, device)
    fn = lambda x, w, b: ops.masked_conv_transpose2d(x, w, m, b, 2, 1, 1, 1, 1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 5), (5,)])
def test_gradgradcheck_linear(device, shape):
    x = _rand(*shape, device=device)
    w = _rand(4, 5, device=device)
    b = _rand(4, device=device)
    m = _mask(w.shape, device)
    fn = lambda x, w, b: ops.masked_linear(x, w, m, b)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_third_order_matches_reference(device):
    # d^3/dx^3 of sum(tanh(conv(x))) through the masked op and the dense reference.
    x = _rand(1, 2, 5, 5, device=device)
    w = _rand(3, 2, 3, 3, device=device)
    m = _mask(w.shape, device)

    def third(conv):
        y = torch.tanh(conv(x)).sum()
        (g1,) = torch.autograd.grad(y, x, create_graph=True)
        (g2,) = torch.autograd.grad(g1.square().sum(), x, create_graph=True)
        return torch.autograd.grad(g2.sin().sum(), [x, w])

    a = third(lambda t: ops.masked_conv2d(t, w, m, None, 1, 1))
    r = third(lambda t: F.conv2d(t, w * m, None, 1, 1))
    for u, v in zip(a, r):
        torch.testing.assert_close(u, v, atol=1e-9, rtol=1e-9)
    assert torch.all(a[1][~m] == 0)


# ---- gradient penalties -----------------------------------------------------------------------


class _D:
    """A small discriminator over explicit tensors: conv -> lrelu -> conv -> tanh -> linear."""

    def __init__(self, device):
        self.w1 = _rand(8, 3, 3, 3, device=device)
        self.b1 = _rand(8, device=device)
        self.w2 = _rand(6, 8, 4, 4, device=device)
        self.w3 = _rand(1, 6 * 3 * 3, device=device)
        self.b3 = _rand(1, device=device)
        self.m1, self.m2, self.m3 = (_mask(t.shape, device) for t in (self.w1, self.w2, self.w3))
        self.params = [self.w1, self.b1, self.w2, self.w3, self.b3]
        self.masks = {0: self.m1, 2: self.m2, 3: self.m3}

    def masked(self, x):
        h = F.leaky_relu(ops.masked_conv2d(x, self.w1, self.m1, self.b1, 1, 1), 0.2)
        h = torch.tanh(ops.masked_conv2d(h, self.w2, self.m2, None, 2, 1))
        return ops.masked_linear(h.flatten(1), self.w3, self.m3, self.b3)

    def dense(self, x):
        h = F.leaky_relu(F.conv2d(x, self.w1 * self.m1, self.b1, 1, 1), 0.2)
        h = torch.tanh(F.conv2d(h, self.w2 * self.m2, None, 2, 1))
        return F.linear(h.flatten(1), self.w3 * self.m3, self.b3)


def _check_penalty(d, loss_of):
    got = torch.autograd.grad(loss_of(d.masked), d.params)
    ref = torch.autograd.grad(loss_of(d.dense), d.params)
    for i, (a, r) in enumerate(zip(got, ref)):
        torch.testing.assert_close(a, r, atol=1e-9, rtol=1e-7)
        if i in d.masks:
            assert torch.all(a[~d.masks[i]] == 0), "gradient reached pruned entries"
    assert all(ref[i].abs().sum() > 0 for i in d.masks)  # (in WGAN-GP the last bias cancels)


def test_wgan_gp_discriminator_step_matches_dense(device):
    d = _D(device)
    real = torch.randn(4, 3, 6, 6, device=device, dtype=f64)
    fake = torch.randn(4, 3, 6, 6, device=device, dtype=f64)
    alpha = torch.rand(4, 1, 1, 1, device=device, dtype=f64)

    def loss_of(D):
        interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (g,) = torch.autograd.grad(D(interp).sum(), interp, create_graph=True)
        gp = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
        return D(fake).mean() - D(real).mean() + 10.0 * gp

    _check_penalty(d, loss_of)


def test_r1_penalty_matches_dense(device):
    d = _D(device)
    real = torch.randn(4, 3, 6, 6, device=device, dtype=f64)

    def loss_of(D):
        x = real.clone().requires_grad_(True)
        out = D(x)
        (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        return F.softplus(-out).mean() + 5.0 * g.square().flatten(1).sum(1).mean()

    _check_penalty(d, loss_of)


def test_penalty_through_transposed_conv_matches_dense(device):
    # a generator-side penalty (path-length style): grad of G(z) w.r.t. z, through convT.
    w = _rand(4, 3, 4, 4, device=device)
    b = _rand(3, device=device)
    m = _mask(w.shape, device)
    z = torch.randn(2, 4, 3, 3, device=device, dtype=f64)
    y = torch.randn(2, 3, 6, 6, device=device, dtype=f64)

    def loss_of(convt):
        zz = z.clone().requires_grad_(True)
        out = torch.tanh(convt(zz))
        (g,) = torch.autograd.grad((out * y).sum(), zz, create_graph=True)
        return g.square().sum() + out.square().mean()

    got = torch.autograd.grad(loss_of(lambda t: ops.masked_conv_transpose2d(t, w, m, b, 2, 1)),
                              [w, b])
    ref = torch.autograd.grad(loss_of(lambda t: F.conv_transpose2d(t, w * m, b, 2, 1)), [w, b])
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r, atol=1e-9, rtol=1e-7)
    assert torch.all(got[0][~m] == 0)


def test_float32_gradient_penalty_matches_dense(device):
    d = _D(device)
    for t in d.params:
        t.data = t.data.float()
    real = torch.randn(4, 3, 6, 6, device=device)

    def loss_of(D):
        x = real.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        return g.square().sum()

    got = torch.autograd.grad(loss_of(d.masked), d.params[:4])  # the last bias has no say
    ref = torch.autograd.grad(loss_of(d.dense), d.params[:4])
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-4)


# ---- torch.func ---------------------------------------------------------------------------


CASES = {
    "conv": (lambda x, w, m, b: ops.masked_conv2d(x, w, m, b, 2, 1),
             lambda x, w, m, b: F.conv2d(x, w * m, b, 2, 1),
             (3, 7, 7), (5, 3, 3, 3)),
    "convt": (lambda x, w, m, b: ops.masked_conv_transpose2d(x, w, m, b, 2, 1, 1),
              lambda x, w, m, b: F.conv_transpose2d(x, w * m, b, 2, 1, 1),
              (3, 4, 4), (3, 5, 3, 3)),
    "linear": (lambda x, w, m, b: ops.masked_linear(x, w, m, b),
               lambda x, w, m, b: F.linear(x, w * m, b),
               (7,), (5, 7)),
}


def _case(name, device):
    op, ref, xs, ws = CASES[name]
    w = torch.randn(ws, device=device, dtype=f64)
    m = _mask(ws, device)
    b = torch.randn(5, device=device, dtype=f64)
    return op, ref, xs, w, m, b


@pytest.mark.parametrize("name", list(CASES))
def test_func_grad(device, name):
    op, ref, xs, w, m, b = _case(name, device)
    x = torch.randn(2, *xs, device=device, dtype=f64)
    for argnums in (0, 1, 3, (0, 1, 3)):
        got = grad(lambda x, w, m, b: torch.tanh(op(x, w, m, b)).sum(), argnums)(x, w, m, b)
        exp = grad(lambda x, w, m, b: torch.tanh(ref(x, w, m, b)).sum(), argnums)(x, w, m, b)
        torch.testing.assert_close(got, exp, atol=1e-10, rtol=1e-10)
    gw = grad(lambda w: op(x, w, m, b).square().sum())(w)
    assert torch.all(gw[~m] == 0)


@pytest.mark.parametrize("name", list(CASES))
def test_func_vmap(device, name):
    op, ref, xs, w, m, b = _case(name, device)
    # the input batched (per-sample unbatched, and per-sample batched)
    X = torch.randn(4, *xs, device=device, dtype=f64)
    torch.testing.assert_close(vmap(op, (0, None, None, None))(X, w, m, b),
                               vmap(ref, (0, None, None, None))(X, w, m, b))
    X2 = torch.randn(3, 2, *xs, device=device, dtype=f64)
    torch.testing.assert_close(vmap(op, (1, None, None, None))(X2, w, m, b),
                               vmap(ref, (1, None, None, None))(X2, w, m, b))
    # the vmapped dimension last
    X3 = torch.randn(*xs, 3, device=device, dtype=f64)
    torch.testing.assert_close(vmap(op, (-1, None, None, None))(X3, w, m, b),
                               vmap(ref, (-1, None, None, None))(X3, w, m, b))
    # weights, masks and biases batched: one layer per sample
    W = torch.randn(3, *w.shape, device=device, dtype=f64)
    M = _mask(W.shape, device)
    B = torch.randn(3, 5, device=device, dtype=f64)
    x = torch.randn(2, *xs, device=device, dtype=f64)
    torch.testing.assert_close(vmap(op, (None, 0, 0, 0))(x, W, M, B),
                               vmap(ref, (None, 0, 0, 0))(x, W, M, B))


@pytest.mark.parametrize("name", list(CASES))
def test_func_vmap_grad_per_sample(device, name):
    op, ref, xs, w, m, b = _case(name, device)
    X = torch.randn(5, *xs, device=device, dtype=f64)

    def loss(f):
        return lambda w, b, x: torch.tanh(f(x.unsqueeze(0), w, m, b)).square().sum()

    got = vmap(grad(loss(op), (0, 1)), (None, None, 0))(w, b, X)
    exp = vmap(grad(loss(ref), (0, 1)), (None, None, 0))(w, b, X)
    for a, r in zip(got, exp):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=1e-10)
    assert torch.all(got[0][:, ~m] == 0)
    # and against a plain loop of autograd over the dense reference
    for i in range(X.shape[0]):
        wi = w.clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(loss(ref)(wi, b, X[i]), wi)
        torch.testing.assert_close(got[0][i], gi, atol=1e-10, rtol=1e-10)


def test_func_grad_of_grad(device):
    op, ref, xs, w, m, b = _case("conv", device)
    x = torch.randn(2, *xs, device=device, dtype=f64)

    def inner(f):
        return lambda x: grad(lambda x: torch.tanh(f(x, w, m, b)).sum())(x).square().sum()

    torch.testing.assert_close(grad(inner(op))(x), grad(inner(ref))(x), atol=1e-10, rtol=1e-10)


def test_torch_export_keeps_the_ops():
    from test_ops import _Net

    net = _Net()
    x = torch.randn(2, 3, 6, 6)
    ep = torch.export.export(net, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {"lthgan.masked_conv2d.default", "lthgan.masked_conv_transpose2d.default",
            "lthgan.masked_linear.default"} <= targets
    torch.testing.assert_close(ep.module()(x), net(x))


def test_autograd_node_is_the_cpp_function():
    # the autograd of the ops is the C++ one (csrc/autograd), not a Python autograd.Function
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    out = ops.masked_conv2d(x, w, _mask(w.shape, "cpu"), None, 1, 1)
    assert "CppNode<lthgan::" in out.grad_fn.name() and "MaskedConvFunction" in out.grad_fn.name()
    assert not hasattr(out.grad_fn, "_forward_cls")
