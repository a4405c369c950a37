"""Every NumPy layer against PyTorch autograd in float64, fixed seeds, 1e-10 relative.

Layers torch lacks as such (the RBF head, trainable subsampling, the C3 table) are checked
against the torch model's modules and also by central finite differences. The Gauss-Newton
backward of each trainable layer is checked against the torch ``gn_backward`` methods.
NumPy layers use channels-first, batch-last arrays; ``chwb``/``nchw`` convert.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lenet5.models import lenet5_1998 as T
from lenet5.scratch import layers as L
from lenet5.scratch import losses as NL
from lenet5.training.losses import cross_entropy, map_loss, mle_loss

torch.set_num_threads(1)
RTOL = 1e-10


def chwb(t: torch.Tensor) -> np.ndarray:
    a = t.detach().numpy()
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0) if a.ndim == 4 else a.T)


def nchw(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 0, 1, 2) if a.ndim == 4 else a.T


def close(got: np.ndarray, want, rtol: float = RTOL) -> None:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


def leaf(*shape, seed=0, scale=1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_()


def run_both(layer, fn, x: torch.Tensor, params: dict[str, torch.Tensor]):
    """Forward and backward through the NumPy ``layer`` and the torch ``fn(x)``; compare all."""
    for name, p in params.items():
        layer.params[name][...] = p.detach().numpy()
    want = fn(x)
    dout = torch.randn(want.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    want.backward(dout)
    close(nchw(layer.forward(chwb(x))), want)
    dx = layer.backward(chwb(dout))
    close(nchw(dx), x.grad)
    for name, p in params.items():
        close(layer.grads[name], p.grad)


def finite_diff_check(layer, x: np.ndarray, eps: float = 1e-6) -> None:
    """Central differences of sum(forward(x) * r) against backward, for x and every param."""
    r = np.random.default_rng(3).standard_normal(layer.forward(x).shape)
    dx = layer.backward(r)
    analytic = {"x": dx, **{k: g.copy() for k, g in layer.grads.items()}}
    for name, arr in {"x": x, **layer.params}.items():
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            up = (layer.forward(x) * r).sum()
            arr[i] = old - eps
            down = (layer.forward(x) * r).sum()
            arr[i] = old
            num[i] = (up - down) / (2 * eps)
        close(analytic[name], num, rtol=1e-7)


def test_im2col_col2im_adjoint():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 9, 8, 2)), rng.standard_normal((3 * 16, 6 * 5 * 2))
    cols = L.im2col(x, 4)
    assert cols.shape == (48, 60)
    assert np.isclose((cols * y).sum(), (x * L.col2im(y, x.shape, 4)).sum(), rtol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_conv2d(bias):
    layer = L.Conv2d(4, 5, 5, bias=bias, dtype=np.float64)
    x, w = leaf(3, 4, 12, 11), leaf(5, 4, 5, 5, seed=1, scale=0.2)
    params = {"weight": w} | ({"bias": leaf(5, seed=2)} if bias else {})
    run_both(layer, lambda x: F.conv2d(x, w, params.get("bias")), x, params)


def test_table_conv_matches_torch_and_finite_differences():
    torch.manual_seed(0)
    ref = T.TableConv(T.C3_TABLE, 6).double()
    layer = L.TableConv(T.C3_TABLE, 6, dtype=np.float64)
    x = leaf(2, 6, 14, 14)
    run_both(layer, ref, x, dict(ref.named_parameters()))
    small = L.TableConv(((0, 1), (1,), (0, 2)), 3, k=2, dtype=np.float64)
    rng = np.random.default_rng(1)
    for p in small.params.values():
        p[...] = rng.standard_normal(p.shape)
    finite_diff_check(small, rng.standard_normal((3, 4, 5, 2)))


@pytest.mark.parametrize("mode", ["sum", "average"])
def test_subsampling_matches_torch_and_finite_differences(mode):
    torch.manual_seed(0)
    ref = T.Subsampling(6, mode).double()
    layer = L.Subsampling(6, mode, np.float64)
    run_both(layer, ref, leaf(3, 6, 14, 14), dict(ref.named_parameters()))
    finite_diff_check(layer, np.random.default_rng(2).standard_normal((6, 4, 6, 2)))


@pytest.mark.parametrize("layer, fn", [
    (L.AvgPool(2), lambda x: F.avg_pool2d(x, 2)),
    (L.MaxPool(2), lambda x: F.max_pool2d(x, 2)),
    (L.ScaledTanh(), lambda x: T.squash(x)),
    (L.ScaledTanh(1.0, 1.0), torch.tanh),
    (L.ReLU(), torch.relu),
    (L.Sigmoid(), torch.sigmoid),
])
def test_parameter_free_layers(layer, fn):
    run_both(layer, fn, leaf(3, 4, 10, 8, scale=3.0), {})


def test_maxpool_ties_route_to_first_maximum():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64).repeat(2, 3, 2, 2)
    x = x.reshape(2, 3, 4, 4).relu().requires_grad_()  # many tied windows, as after a ReLU
    run_both(L.MaxPool(2), lambda x: F.max_pool2d(x, 2), x, {})
    x0 = torch.zeros(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    run_both(L.MaxPool(2), lambda x: F.max_pool2d(x, 2), x0, {})


@pytest.mark.parametrize("bias", [True, False])
def test_linear_and_flatten(bias):
    w, b = leaf(7, 12, seed=1), leaf(7, seed=2)
    layer = L.Linear(12, 7, bias, np.float64)
    params = {"weight": w} | ({"bias": b} if bias else {})
    run_both(layer, lambda x: F.linear(x, w, params.get("bias")), leaf(5, 12), params)
    flat = L.Flatten()
    x = leaf(3, 4, 2, 2)
    run_both(flat, lambda x: x.flatten(1), x, {})


def test_rbf_matches_torch_and_finite_differences():
    ref = T.EuclideanRBF().double()
    layer = L.EuclideanRBF(ref.prototypes.numpy())
    run_both(layer, ref, leaf(6, 84), {})
    small = L.EuclideanRBF(np.random.default_rng(0).choice([-1.0, 1.0], (3, 5)))
    finite_diff_check(small, np.random.default_rng(1).standard_normal((5, 4)))


@pytest.mark.parametrize("shape", [(4, 3, 6, 5), (8, 7)])
def test_batchnorm_train_and_eval(shape):
    c = shape[1]
    bn = torch.nn.BatchNorm2d(c) if len(shape) == 4 else torch.nn.BatchNorm1d(c)
    bn = bn.double()
    with torch.no_grad():
        bn.weight.normal_(), bn.bias.normal_()
    layer = L.BatchNorm(c, dtype=np.float64)
    for train in (True, True, False):
        bn.train(train)
        layer.training = train
        bn.zero_grad()
        run_both(layer, bn, leaf(*shape, seed=int(train), scale=2.0),
                 dict(bn.named_parameters()))
        for name, buf in bn.named_buffers():
            close(np.asarray(layer.buffers[name], float), buf.double())


def test_dropout():
    x = np.random.default_rng(0).standard_normal((30, 1000))
    layer = L.Dropout(0.25, seed=0)
    layer.training = True
    out = layer.forward(x)
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(out[kept], x[kept] / 0.75)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), kept / 0.75)
    layer.training = False
    assert layer.forward(x) is x and layer.backward(x) is x


@pytest.mark.parametrize("name", ["c1", "c3", "s2", "f6"])
def test_gauss_newton_backward_matches_torch(name):
    torch.manual_seed(0)
    ref = T.LeNet5().double()
    module = getattr(ref, name)
    layer = {"c1": L.Conv2d(1, 6, dtype=np.float64), "s2": L.Subsampling(6, ref.config.subsample, np.float64),
             "c3": L.TableConv(T.C3_TABLE, 6, dtype=np.float64),
             "f6": L.Linear(120, 84, dtype=np.float64)}[name]
    for pname, p in module.named_parameters():
        layer.params[pname][...] = p.detach().numpy()
    shape = {"c1": (3, 1, 32, 32), "s2": (3, 6, 28, 28), "c3": (3, 6, 14, 14), "f6": (3, 120)}
    x = leaf(*shape[name]).detach()
    d2 = leaf(*module(x).shape, seed=5).detach() ** 2
    d2x, h = module.gn_backward(x, d2)
    layer.forward(chwb(x))
    close(nchw(layer.gn_backward(chwb(d2))), d2x)
    for pname, val in h.items():
        close(layer.h[pname], val)


def test_squash_gn_backward():
    a, d2 = leaf(5, 7).detach(), leaf(5, 7, seed=1).detach() ** 2
    layer = L.ScaledTanh()
    layer.forward(a.numpy().T)
    close(layer.gn_backward(d2.numpy().T).T, d2 * T.squash_grad(a) ** 2)


@pytest.mark.parametrize("name", ["map", "mle", "ce", "ce-smooth"])
def test_losses_match_torch(name):
    out = leaf(16, 10, scale=5.0)
    target = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    ref = {"map": lambda o, t: map_loss(o, t, 0.1), "mle": mle_loss, "ce": cross_entropy,
           "ce-smooth": lambda o, t: F.cross_entropy(o, t, label_smoothing=0.1)}[name]
    ours = NL.make_loss(name.split("-")[0], 0.1, 0.1 if name.endswith("smooth") else 0.0)
    want = ref(out, target)
    want.backward()
    loss, dout = ours(out.detach().numpy(), target.numpy())
    close(np.array(loss), want)
    close(dout, out.grad)


def test_map_loss_is_per_sample_and_stable():
    out = np.array([[1e3] * 10, [0.0] * 10])  # huge distances must not overflow
    loss, dout = NL.map_loss(out, np.array([0, 0]), j=0.1)
    assert np.isfinite(loss) and np.isfinite(dout).all()
    l0, _ = NL.map_loss(out[:1], np.array([0]), 0.1)
    l1, _ = NL.map_loss(out[1:], np.array([0]), 0.1)
    assert np.isclose(loss, (l0 + l1) / 2)
