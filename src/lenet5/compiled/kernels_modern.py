"""The modern variant compiled: conv/[BN]/act -> pool -> conv/[BN]/act -> pool -> C5 -> F6 -> head.

``c1 (w1, 28, 28) -> s2 (w1, 14, 14) -> c3 (w3, 10, 10) -> s4 (w3, 5, 5) -> c5 (w5) -> f6 (w6)
-> head (10)``, each convolution or linear layer followed by optional batch-norm and the
activation (ReLU or tanh), dropout before F6 and before the head: the layers of
``scratch.model.build_modern``. Parameters live in one flat vector ``theta``; ``offs (18, 2)``
gives the [start, end) of each of :data:`SLOTS` in it (empty where the config has no such
parameter), in the order of the NumPy model's ``params()``. Running statistics live in
``stats`` (mean and variance of each of the 4 batch-norms, :func:`stat_views`) and their batch
counts in ``counts (4,)``.

The batch goes layer by layer (batch-norm needs the whole batch); C1 and the linear
layers run pattern by pattern with the kernels of :mod:`.layers`, C3 over blocks of patterns
in SIMD lanes (:mod:`.conv_lanes`), all in parallel on Numba's threads (:mod:`.blocks`).
``Work`` holds every activation and gradient of a batch of up to B patterns, allocated once.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import blocks, conv_lanes, inputs, losses, updates
from .jit import jit
from .layers import PAD, pair_plan

SLOTS = ("c1.0.weight", "c1.0.bias", "c1.1.weight", "c1.1.bias",
         "c3.0.weight", "c3.0.bias", "c3.1.weight", "c3.1.bias",
         "c5.0.weight", "c5.0.bias", "c5.1.weight", "c5.1.bias",
         "f6.0.weight", "f6.0.bias", "f6.1.weight", "f6.1.bias",
         "head.weight", "head.bias")
BN_LAYERS = ("c1.1", "c3.1", "c5.1", "f6.1")
MOMENTUM, EPS = 0.1, 1e-5  # BatchNorm's

Net = namedtuple("Net", "c1w c1b n1w n1b c3w c3b n3w n3b c5w c5b n5w n5b f6w f6b n6w n6b hw hb")
# x (B, 1024); z1, y1 (B, w1, 28*32) conv / activation (wide); p1, a1 (B, w1, 196) pooled,
# argmax; z3, y3 (B, w3, 10*14); p3, a3 (B, w3, 25); z5, y5, m5, u5 (B, w5) linear, activation,
# dropout mask and output; z6, y6, m6, u6 (B, w6); out (B, 10); bn (4, 2, max width): the
# mean and 1/std each batch-norm used. Gradients: dout (B, 10), d6 (B, w6), d5 (B, w5),
# dp3 (B, w3*25), dy3 (B, w3, PAD+140+PAD), dp1 (B, w1, 196), dy1 (B, w1, PAD+896+PAD).
Work = namedtuple("Work", "x z1 y1 p1 a1 z3 y3 p3 a3 z5 y5 m5 u5 z6 y6 m6 u6 out bn "
                          "dout d6 d5 dp3 dy3 dp1 dy1 no_dx")


def new_work(batch: int, widths, dtype) -> Work:
    w1, w3, w5, w6 = widths
    e = lambda *shape: np.zeros((batch, *shape), dtype)  # noqa: E731
    i8 = lambda *shape: np.zeros((batch, *shape), np.int8)  # noqa: E731
    return Work(e(1024), e(w1, 896), e(w1, 896), e(w1, 196), i8(w1, 196),
                e(w3, 140), e(w3, 140), e(w3, 25), i8(w3, 25),
                e(w5), e(w5), e(w5), e(w5), e(w6), e(w6), e(w6), e(w6), e(10),
                np.zeros((4, 2, max(widths)), dtype),
                e(10), e(w6), e(w5), e(w3 * 25), e(w3, PAD + 140 + PAD), e(w1, 196),
                e(w1, PAD + 896 + PAD), np.zeros((0, 0), dtype))


@jit
def views(theta, offs, widths):
    """The layers' arrays, views of ``theta`` (or of a gradient shaped like it)."""
    w1, w3, w5, w6 = widths[0], widths[1], widths[2], widths[3]

    def cut(k):
        return theta[offs[k, 0]:offs[k, 1]]

    return Net(cut(0).reshape(w1, 25), cut(1), cut(2), cut(3),
               cut(4).reshape(w3 * w1, 25), cut(5), cut(6), cut(7),
               cut(8).reshape(w5, w3 * 25), cut(9), cut(10), cut(11),
               cut(12).reshape(w6, w5), cut(13), cut(14), cut(15),
               cut(16).reshape(10, w6), cut(17))


@jit
def stat_views(stats, widths, k):
    """Running mean and variance of batch-norm ``k`` (0-3: c1, c3, c5, f6) in ``stats``."""
    start = 0
    for i in range(k):
        start += 2 * widths[i]
    c = widths[k]
    return stats[start:start + c], stats[start + c:start + 2 * c]


@jit
def _pairs(cout, cin):
    """(output, input) maps of every kernel of a dense convolution (``weight`` row order) and
    their :func:`layers.pair_plan`."""
    p = np.arange(cout * cin)
    return p // cin, p % cin, pair_plan(p % cin)


@jit
def _norm_act(z, y, rows, width, valid, weight, bias, stats, counts, k, widths, act, bn,
              training, bnbuf):
    """``y = act(bn(z))`` (or ``act(z)``) over a batch of maps or vectors."""
    if bn:
        rm, rv = stat_views(stats, widths, k)
        blocks.bn_act_forward(z, rows, width, valid, weight, bias, rm, rv, counts[k:k + 1],
                              training, MOMENTUM, EPS, bnbuf[k, 0], bnbuf[k, 1], act, y)
    else:
        blocks.act_maps_forward(act, z, y)


@jit
def _act_norm_back(d, off, z, y, rows, width, valid, weight, G_w, G_b, k, act, bn, training,
                   bnbuf):
    """``d`` from dE/d(activation output) to dE/dz, in place (``off``: leading pads of d)."""
    if bn:
        blocks.act_bn_backward(d, off, z, y, rows, width, valid, weight, bnbuf[k, 0],
                               bnbuf[k, 1], training, act, G_w, G_b)
    else:
        blocks.act_maps_backward(act, d, off, y)


@jit
def forward(theta, offs, widths, stats, counts, act, pool, bn, p, training, w, n):
    """Patterns ``w.x[:n]`` (normalised) through the network; outputs in ``w.out[:n]``."""
    P = views(theta, offs, widths)
    w1, w3, w5, w6 = widths[0], widths[1], widths[2], widths[3]
    o1, i1, plan1 = _pairs(w1, 1)
    blocks.conv_forward_batch(w.x.reshape(w.x.shape[0], 1, 1024), 32, P.c1w, P.c1b, o1, i1,
                              plan1, w.z1, n)
    _norm_act(w.z1[:n], w.y1[:n], 28, 32, 28, P.n1w, P.n1b, stats, counts, 0, widths, act, bn,
              training, w.bn)
    blocks.pool_forward(pool, w.y1[:n], 32, 28, w.p1[:n], w.a1[:n])  # (n, w1, 14*14)
    conv_lanes.conv3_forward(w.p1, P.c3w, P.c3b, w.z3, n)  # (n, w3, 10*14) wide
    _norm_act(w.z3[:n], w.y3[:n], 10, 14, 10, P.n3w, P.n3b, stats, counts, 1, widths, act, bn,
              training, w.bn)
    blocks.pool_forward(pool, w.y3[:n], 14, 10, w.p3[:n], w.a3[:n])  # (n, w3, 5*5)
    blocks.linear_forward_batch(P.c5w, P.c5b, w.p3[:n].reshape(n, w3 * 25), w.z5[:n])  # all S4
    _norm_act(w.z5[:n].reshape(n, w5, 1), w.y5[:n].reshape(n, w5, 1), 1, 1, 1, P.n5w, P.n5b,
              stats, counts, 2, widths, act, bn, training, w.bn)
    w.u5[:n] = w.y5[:n]
    if training and p > 0:
        blocks.dropout_forward(p, w.u5[:n].reshape(-1), w.m5[:n].reshape(-1))
    blocks.linear_forward_batch(P.f6w, P.f6b, w.u5[:n], w.z6[:n])
    _norm_act(w.z6[:n].reshape(n, w6, 1), w.y6[:n].reshape(n, w6, 1), 1, 1, 1, P.n6w, P.n6b,
              stats, counts, 3, widths, act, bn, training, w.bn)
    w.u6[:n] = w.y6[:n]
    if training and p > 0:
        blocks.dropout_forward(p, w.u6[:n].reshape(-1), w.m6[:n].reshape(-1))
    blocks.linear_forward_batch(P.hw, P.hb, w.u6[:n], w.out[:n])  # (10,) logits


@jit
def backward(theta, grad, offs, widths, act, pool, bn, p, training, w, n):
    """``grad`` = gradients of the batch from ``w.dout[:n]`` after :func:`forward`."""
    P, G = views(theta, offs, widths), views(grad, offs, widths)
    w1, w3, w5, w6 = widths[0], widths[1], widths[2], widths[3]
    o1, i1, plan1 = _pairs(w1, 1)
    grad[:] = 0
    drop = training and p > 0
    blocks.linear_backward_batch(P.hw, w.u6[:n], w.dout[:n], G.hw, G.hb, w.d6[:n])
    if drop:
        w.d6[:n] *= w.m6[:n]
    _act_norm_back(w.d6[:n].reshape(n, w6, 1), 0, w.z6[:n].reshape(n, w6, 1),
                   w.y6[:n].reshape(n, w6, 1), 1, 1, 1, P.n6w, G.n6w, G.n6b, 3, act, bn,
                   training, w.bn)
    blocks.linear_backward_batch(P.f6w, w.u5[:n], w.d6[:n], G.f6w, G.f6b, w.d5[:n])
    if drop:
        w.d5[:n] *= w.m5[:n]
    _act_norm_back(w.d5[:n].reshape(n, w5, 1), 0, w.z5[:n].reshape(n, w5, 1),
                   w.y5[:n].reshape(n, w5, 1), 1, 1, 1, P.n5w, G.n5w, G.n5b, 2, act, bn,
                   training, w.bn)
    blocks.linear_backward_batch(P.c5w, w.p3[:n].reshape(n, w3 * 25), w.d5[:n], G.c5w, G.c5b,
                                 w.dp3[:n])
    blocks.pool_backward(pool, w.dp3[:n].reshape(n, w3, 25), w.a3[:n], 14, 5, w.dy3[:n])
    _act_norm_back(w.dy3[:n], PAD, w.z3[:n], w.y3[:n], 10, 14, 10, P.n3w, G.n3w, G.n3b, 1, act,
                   bn, training, w.bn)
    conv_lanes.conv3_backward(w.p1, P.c3w, w.dy3, G.c3w, G.c3b, w.dp1, n)
    blocks.pool_backward(pool, w.dp1[:n], w.a1[:n], 32, 14, w.dy1[:n])
    _act_norm_back(w.dy1[:n], PAD, w.z1[:n], w.y1[:n], 28, 32, 28, P.n1w, G.n1w, G.n1b, 0, act,
                   bn, training, w.bn)
    blocks.conv_backward_batch(w.x.reshape(w.x.shape[0], 1, 1024), 32, P.c1w, w.dy1, o1, i1,
                               plan1, G.c1w, G.c1b, w.no_dx.reshape(0, 0, 0), n)


@jit
def train_pass(theta, grad, offs, widths, stats, counts, act, pool, bn, p, images, labels, order,
               divisor, shift, scale, ranges, seed, batch, lrs, loss_kind, smoothing, opt_kind,
               hyper, buf1, buf2, step, first, w):
    """A whole pass over ``images[order]`` in batches of ``batch`` (at most ``w``'s B), as
    :func:`kernels_1998.train_pass`. Returns (loss sum, misclassified, updates made)."""
    np.random.seed(seed)
    tmp = np.zeros(inputs.TMP_SIZE, theta.dtype)
    total, errors, k = 0.0, 0, 0
    for start in range(0, order.shape[0], batch):
        n = min(batch, order.shape[0] - start)
        for b in range(n):
            inputs.load_pattern(images, order[start + b], divisor, shift, scale, ranges, tmp,
                                w.x[b])
        forward(theta, offs, widths, stats, counts, act, pool, bn, p, True, w, n)
        for b in range(n):
            target = labels[order[start + b]]
            total += losses.loss_grad(loss_kind, w.out[b], target, 1.0 / n, 0.0, smoothing,
                                      w.dout[b])
            errors += losses.wrong(loss_kind, w.out[b], target)
        backward(theta, grad, offs, widths, act, pool, bn, p, True, w, n)
        lr = lrs[k] if lrs.shape[0] > 1 else lrs[0]
        updates.apply_parallel(opt_kind, theta, grad, buf1, buf2, lr, hyper, step + k + 1,
                               first and k == 0)
        k += 1
    return total, errors, k
