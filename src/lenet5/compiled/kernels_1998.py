"""LeNet-5 (1998) compiled per pattern: C1 -> S2 -> C3 -> S4 -> C5 -> F6 -> RBF (Section II-B).

All parameters live in one flat vector ``theta`` in the order and layouts of the NumPy model's
``params()`` (:data:`PARAMS`); :func:`views` cuts it into the layers' arrays. Activations of
pattern ``b`` of a batch are ``acts.<name>[b]`` (:class:`Acts`, shapes below). A batch is
processed one pattern at a time (forward, then backward adding into ``grad``), which is exact
because the weights only change between batches.

- :func:`forward_one`, :func:`backward_one`, :func:`gn_one`: one pattern's passes.
- :func:`forward`, :func:`backward`, :func:`gauss_newton`: a batch of normalised patterns.
- :func:`train_pass`: a whole pass (input, forward, loss, backward, update) in one call.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from ..models.spec import C3_TABLE, TANH_A, TANH_S
from . import inputs, layers, losses, updates
from .jit import jit
from .layers import PAD

A, S = TANH_A, TANH_S  # f(a) = A tanh(S a) (Appendix A)

PARAMS = (  # name, shape: the NumPy / torch model's params(), in order
    ("c1.weight", (6, 1, 5, 5)), ("c1.bias", (6,)),
    ("s2.weight", (6,)), ("s2.bias", (6,)),
    ("c3.weight", (sum(map(len, C3_TABLE)), 5, 5)), ("c3.bias", (16,)),
    ("s4.weight", (16,)), ("s4.bias", (16,)),
    ("c5.weight", (120, 16, 5, 5)), ("c5.bias", (120,)),
    ("f6.weight", (84, 120)), ("f6.bias", (84,)),
)
OFFSETS = tuple(int(v) for v in np.cumsum([0] + [int(np.prod(s)) for _, s in PARAMS]))
N_PARAMS = OFFSETS[-1]  # 60,000
# F6's width is read from the length of theta (84, the paper's; 10 for Lush's lenet5, whose
# last layer maps C5 straight to the 10 outputs): the offsets past C5 follow from it.

C1_OUT, C1_IN = np.arange(6), np.zeros(6, np.int64)  # the 6 (output, input) pairs of C1
C3_OUT = np.array([o for o, ins in enumerate(C3_TABLE) for _ in ins])  # Table I, packed order
C3_IN = np.array([i for ins in C3_TABLE for i in ins])
N_PAIRS3 = len(C3_OUT)  # 60
C1_PLAN = layers.pair_plan.py_func(C1_IN)  # kernels two at a time (see layers.pair_plan)
C3_PLAN = layers.pair_plan.py_func(C3_IN)

Params = namedtuple("Params", "c1w c1b s2w s2b c3w c3b s4w s4b c5w c5b f6w f6b")
# Per pattern: x (1024) 32x32 input; y1 (6, 28*32) C1 wide; p2, y2 (6, 196) S2 pooled and out;
# y3 (16, 10*14) C3 wide; p4 (16, 25), y4 (400) S4 pooled and out (= C5 input, torch's
# flatten order); y5 (120) C5; y6 (84) F6; out (10) RBF distances.
Acts = namedtuple("Acts", "x y1 p2 y2 y3 p4 y4 y5 y6 out")
# Per-pattern gradients: d_out (10), d6 (84), d5 (120), d4 (400), d3 (16, PAD+140+PAD),
# dy2 (6, 196), d1 (6, PAD+896+PAD); sq_x (1, 1024), sq_y2 (6, 196), w3sq (60, 25); no_dx
# (0, 0): C1 computes no image gradient.
Scratch = namedtuple("Scratch", "d_out d6 d5 d4 d3 dy2 d1 sq_x sq_y2 w3sq no_dx")


def new_acts(batch: int, dtype, f6: int = 84) -> Acts:
    e = lambda *shape: np.zeros((batch, *shape), dtype)  # noqa: E731
    return Acts(e(1024), e(6, 28 * 32), e(6, 196), e(6, 196), e(16, 10 * 14), e(16, 25),
                e(400), e(120), e(f6), e(10))


@jit
def f6_width(theta):
    """F6's units, from the length of ``theta`` (or of a vector shaped like it)."""
    return (theta.shape[0] - OFFSETS[10]) // 121


@jit
def new_scratch(dtype_like):
    t = dtype_like.dtype
    return Scratch(np.zeros(10, t), np.zeros(f6_width(dtype_like), t), np.zeros(120, t),
                   np.zeros(400, t),
                   np.zeros((16, PAD + 140 + PAD), t), np.zeros((6, 196), t),
                   np.zeros((6, PAD + 896 + PAD), t), np.zeros((1, 1024), t),
                   np.zeros((6, 196), t), np.zeros((N_PAIRS3, 25), t), np.zeros((0, 0), t))


@jit
def views(theta):
    """The layers' arrays, views of the flat ``theta`` (or of a gradient shaped like it)."""
    o = OFFSETS
    n6 = f6_width(theta)
    f6 = o[10] + n6 * 120  # F6's bias
    return Params(theta[o[0]:o[1]].reshape(6, 25), theta[o[1]:o[2]],
                  theta[o[2]:o[3]], theta[o[3]:o[4]],
                  theta[o[4]:o[5]].reshape(N_PAIRS3, 25),
                  theta[o[5]:o[6]], theta[o[6]:o[7]], theta[o[7]:o[8]],
                  theta[o[8]:o[9]].reshape(120, 400), theta[o[9]:o[10]],
                  theta[o[10]:f6].reshape(n6, 120), theta[f6:f6 + n6])


# ---------------------------------------------------------------- one pattern


@jit
def forward_one(P, protos, tap, a, b):
    """Pattern ``b`` of ``a.x`` through the network; every stage's output stays in ``a``."""
    x = a.x[b].reshape(1, 1024)
    y1, y3, y4 = a.y1[b], a.y3[b], a.y4[b]
    layers.conv_forward(x, 32, P.c1w, P.c1b, C1_OUT, C1_IN, C1_PLAN, y1)  # (6, 28*32) wide
    layers.tanh_forward(y1.reshape(-1), A, S)
    layers.subsample_forward(y1, 32, 28, P.s2w, P.s2b, tap, a.p2[b], a.y2[b])  # (6, 14*14)
    layers.tanh_forward(a.y2[b].reshape(-1), A, S)
    layers.conv_forward(a.y2[b], 14, P.c3w, P.c3b, C3_OUT, C3_IN, C3_PLAN, y3)  # (16, 10*14) wide
    layers.tanh_forward(y3.reshape(-1), A, S)
    layers.subsample_forward(y3, 14, 10, P.s4w, P.s4b, tap, a.p4[b], y4.reshape(16, 25))
    layers.tanh_forward(y4, A, S)  # (400,) = (16, 5, 5)
    layers.linear_forward(P.c5w, P.c5b, y4, a.y5[b])  # (120,): C5 covers all of S4
    layers.tanh_forward(a.y5[b], A, S)
    layers.linear_forward(P.f6w, P.f6b, a.y5[b], a.y6[b])  # (84,)
    layers.tanh_forward(a.y6[b], A, S)
    layers.rbf_forward(a.y6[b], protos, a.out[b])  # (10,) squared distances


@jit
def _tanh_maps(d, y, square):
    """d (C, PAD + n + PAD) *= f'(y (C, n)) (or its square), the padded gradient of a map."""
    n = y.shape[1]
    for c in range(y.shape[0]):
        layers.tanh_backward(d[c, PAD:PAD + n], y[c], A, S, square)


@jit
def backward_one(P, G, protos, tap, a, b, s):
    """Add pattern ``b``'s gradients (from ``s.d_out`` = dE/dout) into the views ``G``."""
    layers.rbf_backward(a.y6[b], protos, s.d_out, s.d6)
    layers.tanh_backward(s.d6, a.y6[b], A, S, False)
    layers.linear_backward(P.f6w, a.y5[b], s.d6, G.f6w, G.f6b, s.d5)
    layers.tanh_backward(s.d5, a.y5[b], A, S, False)
    layers.linear_backward(P.c5w, a.y4[b], s.d5, G.c5w, G.c5b, s.d4)
    _maps_backward(P, G, tap, a, b, s)


@jit
def step_one(P, G, protos, tap, a, b, s, inv_c5, inv_f6, lr):
    """Batch 1: :func:`backward_one`, but the C5 and F6 weights (58,080 of the 60,000) are
    updated as their gradients form (:func:`layers.linear_backward_step`); the gradients of the
    others go to ``G``, for the caller's update."""
    layers.rbf_backward(a.y6[b], protos, s.d_out, s.d6)
    layers.tanh_backward(s.d6, a.y6[b], A, S, False)
    layers.linear_backward_step(P.f6w, a.y5[b], s.d6, inv_f6, lr, G.f6b, s.d5)
    layers.tanh_backward(s.d5, a.y5[b], A, S, False)
    layers.linear_backward_step(P.c5w, a.y4[b], s.d5, inv_c5, lr, G.c5b, s.d4)
    _maps_backward(P, G, tap, a, b, s)


@jit
def _maps_backward(P, G, tap, a, b, s):
    """From ``s.d4`` (dE/d S4 output) down to C1's weights."""
    layers.tanh_backward(s.d4, a.y4[b], A, S, False)
    layers.subsample_backward(s.d4.reshape(16, 25), a.p4[b], P.s4w, tap, G.s4w, G.s4b, s.d3, 14,
                              5)
    _tanh_maps(s.d3, a.y3[b], False)
    s.dy2[:] = 0
    layers.conv_backward(a.y2[b], 14, P.c3w, s.d3, C3_OUT, C3_IN, C3_PLAN, G.c3w, G.c3b, s.dy2)
    layers.tanh_backward(s.dy2.reshape(-1), a.y2[b].reshape(-1), A, S, False)
    layers.subsample_backward(s.dy2, a.p2[b], P.s2w, tap, G.s2w, G.s2b, s.d1, 32, 14)
    _tanh_maps(s.d1, a.y1[b], False)
    layers.conv_backward(a.x[b].reshape(1, 1024), 32, P.c1w, s.d1, C1_OUT, C1_IN, C1_PLAN,
                         G.c1w, G.c1b, s.no_dx)


@jit
def gn_one(P, H, tap, a, b, s):
    """Add pattern ``b``'s Gauss-Newton diagonal into the views ``H`` (Appendix C): d2E/dy6^2
    = 2 for each F6 output, then back through squared weights and squared f'."""
    s.d6[:] = 2
    layers.tanh_backward(s.d6, a.y6[b], A, S, True)
    layers.linear_gn(P.f6w, a.y5[b], s.d6, H.f6w, H.f6b, s.d5)
    layers.tanh_backward(s.d5, a.y5[b], A, S, True)
    layers.linear_gn(P.c5w, a.y4[b], s.d5, H.c5w, H.c5b, s.d4)
    layers.tanh_backward(s.d4, a.y4[b], A, S, True)
    layers.subsample_gn(s.d4.reshape(16, 25), a.y3[b], 14, 5, P.s4w, tap, H.s4w, H.s4b, s.d3)
    _tanh_maps(s.d3, a.y3[b], True)
    layers.square(a.y2[b].reshape(-1), s.sq_y2.reshape(-1))
    s.dy2[:] = 0
    layers.conv_backward(s.sq_y2, 14, s.w3sq, s.d3, C3_OUT, C3_IN, C3_PLAN, H.c3w, H.c3b, s.dy2)
    layers.tanh_backward(s.dy2.reshape(-1), a.y2[b].reshape(-1), A, S, True)
    layers.subsample_gn(s.dy2, a.y1[b], 32, 14, P.s2w, tap, H.s2w, H.s2b, s.d1)
    _tanh_maps(s.d1, a.y1[b], True)
    layers.square(a.x[b], s.sq_x.reshape(-1))
    layers.conv_backward(s.sq_x, 32, P.c1w, s.d1, C1_OUT, C1_IN, C1_PLAN, H.c1w, H.c1b, s.no_dx)


# ---------------------------------------------------------------- batches


@jit
def forward(theta, protos, tap, a, n):
    """Patterns ``a.x[:n]`` (normalised) through the network; outputs in ``a.out[:n]``."""
    P = views(theta)
    for b in range(n):
        forward_one(P, protos, tap, a, b)


@jit
def backward(theta, grad, protos, tap, a, dout):
    """``grad = sum_b`` of the gradients from ``dout (n, 10)`` after :func:`forward`."""
    P, G = views(theta), views(grad)
    s = new_scratch(theta)
    grad[:] = 0
    for b in range(dout.shape[0]):
        s.d_out[:] = dout[b]
        backward_one(P, G, protos, tap, a, b, s)


@jit
def gauss_newton(theta, h, protos, tap, a, n):
    """``h = sum_b`` of the Gauss-Newton diagonals of patterns ``a.x[:n]``."""
    P, H = views(theta), views(h)
    s = new_scratch(theta)
    layers.square(P.c3w.reshape(-1), s.w3sq.reshape(-1))
    h[:] = 0
    for b in range(n):
        forward_one(P, protos, tap, a, b)
        gn_one(P, H, tap, a, b, s)


@jit
def curvature(theta, protos, tap, images, idx, divisor, shift, scale, a):
    """The mean Gauss-Newton diagonal over patterns ``images[idx]`` (undistorted), float64
    sums, as ``scratch.optim.estimate_curvature``; returns it in theta's dtype."""
    P = views(theta)
    h = np.zeros_like(theta)
    total = np.zeros(theta.shape[0])
    H = views(h)
    s = new_scratch(theta)
    layers.square(P.c3w.reshape(-1), s.w3sq.reshape(-1))
    tmp = np.zeros(inputs.TMP_SIZE, theta.dtype)
    none = np.zeros(0)
    for k in range(idx.shape[0]):
        inputs.load_pattern(images, idx[k], divisor, shift, scale, none, tmp, a.x[0])
        forward_one(P, protos, tap, a, 0)
        h[:] = 0
        gn_one(P, H, tap, a, 0, s)
        for i in range(h.shape[0]):
            total[i] += h[i]
    for i in range(h.shape[0]):
        h[i] = total[i] / idx.shape[0]
    return h


@jit
def small_ranges(theta):
    """The parameters a fused step leaves to the generic update: C1-S4, C5's and F6's biases."""
    n = theta.shape[0]
    return ((OFFSETS[0], OFFSETS[8]), (OFFSETS[9], OFFSETS[10]), (n - f6_width(theta), n))


@jit
def train_pass(theta, grad, protos, tap, images, labels, order, divisor, shift, scale, ranges,
               seed, batch, lrs, loss_kind, map_j, opt_kind, hyper, buf1, buf2, step, first, a):
    """Train on ``images[order]`` in batches of ``batch``: per batch, every pattern is loaded
    (distorted when ``ranges`` is not empty, with draws seeded by ``seed``), run forward, scored
    and run backward; then one update with rate ``lrs[k]`` (``lrs[0]`` when ``lrs`` has one
    value). ``step``: updates before this pass; ``first``: SGD momentum not yet seeded.
    At batch 1 with SDLM or plain SGD the C5/F6 weights are updated inside the backward pass
    (:func:`step_one`), the same arithmetic without a sweep over a 60,000-long gradient.
    Returns (loss summed over patterns, misclassified patterns, updates made)."""
    if ranges.shape[0]:
        np.random.seed(seed)
    P, G = views(theta), views(grad)
    s = new_scratch(theta)
    tmp = np.zeros(inputs.TMP_SIZE, theta.dtype)
    plain_sgd = (opt_kind == updates.SGD and hyper[updates.MOMENTUM] == 0
                 and hyper[updates.WEIGHT_DECAY] == 0)
    fuse = batch == 1 and (opt_kind == updates.SDLM or plain_sgd)
    none = np.zeros((0, 0), theta.dtype)
    inv = views(buf1) if opt_kind == updates.SDLM else views(theta)
    inv_c5 = inv.c5w if opt_kind == updates.SDLM else none
    inv_f6 = inv.f6w if opt_kind == updates.SDLM else none
    total, errors, k = 0.0, 0, 0
    small = small_ranges(theta)
    n = order.shape[0]
    for start in range(0, n, batch):
        size = min(batch, n - start)
        lr = lrs[k] if lrs.shape[0] > 1 else lrs[0]
        if fuse:
            for lo, hi in small:
                grad[lo:hi] = 0
        else:
            grad[:] = 0
        for b in range(size):
            idx = order[start + b]
            inputs.load_pattern(images, idx, divisor, shift, scale, ranges, tmp, a.x[0])
            forward_one(P, protos, tap, a, 0)
            target = labels[idx]
            total += losses.loss_grad(loss_kind, a.out[0], target, 1.0 / size, map_j, 0.0, s.d_out)
            errors += losses.wrong(loss_kind, a.out[0], target)
            if fuse:
                step_one(P, G, protos, tap, a, 0, s, inv_c5, inv_f6, lr)
            else:
                backward_one(P, G, protos, tap, a, 0, s)
        if fuse:
            for lo, hi in small:
                updates.apply(opt_kind, theta[lo:hi], grad[lo:hi], buf1[lo:hi], buf2[lo:hi], lr,
                              hyper, step + k + 1, first and k == 0)
        else:
            updates.apply(opt_kind, theta, grad, buf1, buf2, lr, hyper, step + k + 1,
                          first and k == 0)
        k += 1
    return total, errors, k
