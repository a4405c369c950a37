"""Batch-wide layers of the modern variant: batch-norm, ReLU/tanh, max/average pooling, dropout.

Unlike the per-pattern layers of :mod:`.layers`, these see the whole batch ``(B, C, rows*W)``:
batch-norm needs its statistics, and the others are cheapest as one sweep. They run in
parallel (``prange``) over channels (batch-norm) or patterns (the rest); no two iterations
write the same value, so the results are those of one thread. Maps use the wide
layout of :mod:`.layers` (``rows`` rows of stride ``width``, the first ``valid`` columns
meaningful); a vector ``(B, F)`` is the case rows = width = valid = 1. Gradient maps carry
``off`` (``PAD``) leading zeros. Semantics follow :mod:`lenet5.scratch.layers` (PyTorch's).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .jit import jit, parallel_jit
from .layers import conv_backward, conv_forward, linear_forward, tanh
from .simd import vdot, vsum

RELU, TANH = 0, 1
MAX, AVG = 0, 1


# ---------------------------------------------------------------- batch-norm


@jit
def _junk_sum(a, rows, width, valid, square):
    """The sum of ``a`` (squared if ``square``) over the junk columns ``valid..width-1`` of
    rows ``0..rows-2`` (the last row ends at its last valid column)."""
    s = 0.0
    for r in range(rows - 1):
        for x in range(valid, width):
            e = a[r * width + x]
            s += e * e if square else e
    return s


@parallel_jit
def bn_act_forward(z, rows, width, valid, weight, bias, rmean, rvar, count, training, momentum,
                   eps, mean, invstd, act, y):
    """``y = act((z - mean) * invstd * weight + bias)`` per channel, statistics over (B,
    positions): the batch's (biased variance; running mean and unbiased running variance
    updated with ``momentum``, ``count`` incremented) in training, the running ones otherwise.

    Channels run in parallel. A map's sums run over its whole span (``(rows - 1) * width +
    valid`` values, eight or four lanes at a time, :mod:`.simd`) less the junk columns'
    share, and maps are added in float64; ``y`` is written over the whole span (junk too)."""
    t = z.dtype.type
    nb, nc = z.shape[0], z.shape[1]
    n = nb * rows * valid
    span = (rows - 1) * width + valid
    m = t(momentum)
    for c in prange(nc):
        if training:
            s = 0.0
            for b in range(nb):
                s += vsum(z[b, c], 0, span) - _junk_sum(z[b, c], rows, width, valid, False)
            mu = t(s / n)
            v = 0.0
            for b in range(nb):
                zb, yb = z[b, c], y[b, c]
                for k in range(span):
                    yb[k] = zb[k] - mu
                v += vdot(yb, 0, yb, 0, span) - _junk_sum(yb, rows, width, valid, True)
            var = t(v / n)
            rmean[c] = t(1 - momentum) * rmean[c] + m * mu
            rvar[c] = t(1 - momentum) * rvar[c] + m * var * t(n / max(n - 1, 1))
        else:
            mu, var = rmean[c], rvar[c]
        inv = t(1.0 / math.sqrt(var + eps))
        mean[c], invstd[c] = mu, inv
        w, bb = weight[c], bias[c]
        zero = t(0)
        for b in range(nb):
            zb, yb = z[b, c], y[b, c]
            if act == RELU:
                for k in range(span):
                    v = (zb[k] - mu) * inv * w + bb
                    yb[k] = v if v > zero else zero
            else:
                for k in range(span):
                    yb[k] = tanh((zb[k] - mu) * inv * w + bb)
    if training:
        count[0] += 1


@parallel_jit
def act_bn_backward(d, off, z, y, rows, width, valid, weight, mean, invstd, training, act, gw,
                    gb):
    """``d`` (gradient of ``y = act(bn(z))``, ``off`` leading pads, zero in the junk columns)
    becomes the gradient of ``z``, in place, junk still zero; ``gw, gb +=``. In training the
    batch statistics depend on every input. Channels in parallel, sums over whole spans as in
    :func:`bn_act_forward` (the junk's gradient is zero, so it adds nothing)."""
    t = z.dtype.type
    nb, nc = z.shape[0], z.shape[1]
    n = nb * rows * valid
    span = (rows - 1) * width + valid
    for c in prange(nc):
        mu, inv = mean[c], invstd[c]
        xh = np.empty(span, z.dtype)  # the normalised input of one map
        sw, sb = 0.0, 0.0  # maps added in float64
        for b in range(nb):
            db, zb = d[b, c], z[b, c]
            act_backward(act, db[off:off + span], y[b, c, :span])
            for k in range(span):
                xh[k] = (zb[k] - mu) * inv
            sw += vdot(db, off, xh, 0, span)
            sb += vsum(db, off, span)
        gw[c] += t(sw)
        gb[c] += t(sb)
        scale = weight[c] * inv
        mean_d, mean_dx = t(sb) / t(n), t(sw) / t(n)
        for b in range(nb):
            db, zb = d[b, c], z[b, c]
            g = db[off:off + span]
            if training:
                for k in range(span):
                    g[k] = (g[k] - mean_d - ((zb[k] - mu) * inv) * mean_dx) * scale
            else:
                for k in range(span):
                    g[k] = g[k] * scale
            for r in range(rows - 1):  # the junk columns' gradient stays zero
                for x in range(valid, width):
                    g[r * width + x] = 0


# ---------------------------------------------------------------- activations


@jit
def act_forward(kind, y):
    """In place over a flat array: ReLU, or tanh (the modern model's plain tanh)."""
    if kind == RELU:
        for i in range(y.shape[0]):
            y[i] = y[i] if y[i] > 0 else y.dtype.type(0)
    else:
        for i in range(y.shape[0]):
            y[i] = tanh(y[i])


@jit
def act_backward(kind, d, y):
    """``d *= f'`` from the outputs ``y``: 1 where y > 0 (ReLU), 1 - y^2 (tanh)."""
    t = y.dtype.type
    if kind == RELU:
        for i in range(d.shape[0]):
            d[i] = d[i] if y[i] > 0 else t(0)
    else:
        for i in range(d.shape[0]):
            d[i] *= (y[i] * y[i] - t(1)) * t(-1)


@parallel_jit
def act_maps_forward(kind, z, y):
    """``y = act(z)`` over a batch ``(B, C, n)``, patterns in parallel (no batch-norm)."""
    for b in prange(z.shape[0]):
        for c in range(z.shape[1]):
            y[b, c] = z[b, c]
            act_forward(kind, y[b, c])


@parallel_jit
def act_maps_backward(kind, d, off, y):
    """``d[:, :, off:off + n] *= f'`` from ``y (B, C, n)``, patterns in parallel."""
    n = y.shape[2]
    for b in prange(y.shape[0]):
        for c in range(y.shape[1]):
            act_backward(kind, d[b, c, off:off + n], y[b, c])


# ---------------------------------------------------------------- 2x2 pooling


@parallel_jit
def pool_forward(kind, y, width, size, out, arg):
    """``y (B, C, *)`` valid ``size x size`` maps -> ``out (B, C, (size/2)^2)``: the max (``arg``:
    the first maximal tap, row-major in the window, as PyTorch) or the mean of each window."""
    t = y.dtype.type
    half = size // 2
    for b in prange(y.shape[0]):
        for c in range(y.shape[1]):
            src, dst, which = y[b, c], out[b, c], arg[b, c]
            for r in range(half):
                top, bot = src[2 * r * width:], src[(2 * r + 1) * width:]
                for u in range(half):
                    v0, v1, v2, v3 = top[2 * u], top[2 * u + 1], bot[2 * u], bot[2 * u + 1]
                    k = r * half + u
                    if kind == AVG:
                        dst[k] = ((v0 + v1) + (v2 + v3)) / t(4)
                        continue
                    best, w = v0, 0
                    if v1 > best:
                        best, w = v1, 1
                    if v2 > best:
                        best, w = v2, 2
                    if v3 > best:
                        best, w = v3, 3
                    dst[k], which[k] = best, w


@parallel_jit
def pool_backward(kind, d, arg, width, half, dx):
    """``d (B, C, half^2)`` -> ``dx (B, C, PAD + 2*half*width + PAD)``: to the winning tap (max;
    the other three get 0) or a quarter to each tap (average). Every window's four taps are
    written and nothing else: the pads and junk columns of ``dx`` keep the zeros they were
    allocated with (no layer writes anything else there), so nothing is cleared first."""
    t = d.dtype.type
    zero = t(0)
    pad = (dx.shape[2] - 2 * half * width) // 2
    for b in prange(d.shape[0]):
        for c in range(d.shape[1]):
            g, which, dst = d[b, c], arg[b, c], dx[b, c]
            for r in range(half):
                top, bot = dst[pad + 2 * r * width:], dst[pad + (2 * r + 1) * width:]
                for u in range(half):
                    k = r * half + u
                    if kind == AVG:
                        v = g[k] * t(0.25)
                        top[2 * u] = v
                        top[2 * u + 1] = v
                        bot[2 * u] = v
                        bot[2 * u + 1] = v
                    else:
                        v, w = g[k], which[k]
                        top[2 * u] = v if w == 0 else zero
                        top[2 * u + 1] = v if w == 1 else zero
                        bot[2 * u] = v if w == 2 else zero
                        bot[2 * u + 1] = v if w == 3 else zero


# ---------------------------------------------------------------- convolutions (C1, C3)

# The patterns of a batch go into this many partial gradients of a convolution (``prange``),
# added in order at the end: the sums are the same whatever the number of threads.
SPLIT = 4


@parallel_jit
def conv_forward_batch(x, width, weight, bias, pair_out, pair_in, plan, out, n):
    """:func:`.layers.conv_forward` of patterns ``x[:n] -> out[:n]``, in parallel."""
    for b in prange(n):
        conv_forward(x[b], width, weight, bias, pair_out, pair_in, plan, out[b])


@parallel_jit
def conv_backward_batch(x, width, weight, d, pair_out, pair_in, plan, gw, gb, dx, n):
    """:func:`.layers.conv_backward` of patterns ``0..n-1`` (``x, d, dx`` indexed by pattern;
    ``dx`` empty for none) in :data:`SPLIT` chunks in parallel; ``gw, gb +=`` the chunks'
    partial sums in chunk order."""
    parts_w = np.zeros((SPLIT,) + gw.shape, gw.dtype)
    parts_b = np.zeros((SPLIT,) + gb.shape, gb.dtype)
    no_dx = np.zeros((0, 0), x.dtype)
    for t in prange(SPLIT):
        for b in range(t * n // SPLIT, (t + 1) * n // SPLIT):
            conv_backward(x[b], width, weight, d[b], pair_out, pair_in, plan, parts_w[t],
                          parts_b[t], dx[b] if dx.shape[0] else no_dx)
    for t in range(SPLIT):
        gw += parts_w[t]
        gb += parts_b[t]


# ---------------------------------------------------------------- fully connected (C5, F6, head)


@parallel_jit
def linear_forward_batch(weight, bias, x, out):
    """``out (B, Fout) = x (B, Fin) @ weight.T + bias`` (may be empty), patterns in parallel."""
    for b in prange(x.shape[0]):
        linear_forward(weight, bias, x[b], out[b])


@parallel_jit
def linear_backward_batch(weight, x, d, gw, gb, dx):
    """From ``d (B, Fout)``, dE/d(out) of ``out = x @ weight.T + bias`` over ``x (B, Fin)``:
    ``gw (Fout, Fin) +=`` and ``gb (Fout) +=`` (may be empty) with the output units in
    parallel, each summing the patterns in order (so a row of ``gw`` stays in cache); then
    ``dx (B, Fin) = d @ weight`` with the patterns in parallel."""
    nb, fin = x.shape[0], x.shape[1]
    for o in prange(weight.shape[0]):
        g = gw[o]
        for b in range(nb):
            do, xb = d[b, o], x[b]
            for k in range(fin):
                g[k] += do * xb[k]
        if gb.shape[0]:
            for b in range(nb):
                gb[o] += d[b, o]
    for b in prange(nb):
        row = dx[b]
        for k in range(fin):
            row[k] = 0
        for o in range(weight.shape[0]):
            wo, do = weight[o], d[b, o]
            for k in range(fin):
                row[k] += wo[k] * do


# ---------------------------------------------------------------- dropout


@jit
def dropout_forward(p, x, mask):
    """Inverted dropout in place over a flat array: zero with probability ``p``, scale the rest
    by 1/(1-p); ``mask`` keeps the factor for the backward pass. Numba's generator draws."""
    t = x.dtype.type
    keep = t(1.0 / (1.0 - p)) if p < 1 else t(0)
    for i in range(x.shape[0]):
        mask[i] = keep if np.random.random() >= p else t(0)
        x[i] *= mask[i]


@jit
def seed_generator(seed):
    """Seed Numba's generator (dropout masks, distortion draws)."""
    np.random.seed(seed)
