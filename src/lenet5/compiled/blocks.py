"""Batch-wide layers of the modern variant: batch-norm, ReLU/tanh, max/average pooling, dropout.

Unlike the per-pattern layers of :mod:`.layers`, these see the whole batch ``(B, C, rows*W)``:
batch-norm needs its statistics, and the others are cheapest as one sweep. Maps use the wide
layout of :mod:`.layers` (``rows`` rows of stride ``width``, the first ``valid`` columns
meaningful); a vector ``(B, F)`` is the case rows = width = valid = 1. Gradient maps carry
``off`` (``PAD``) leading zeros. Semantics follow :mod:`lenet5.scratch.layers` (PyTorch's).
"""

from __future__ import annotations

import math

import numpy as np

from .jit import jit
from .layers import tanh

RELU, TANH = 0, 1
MAX, AVG = 0, 1


# ---------------------------------------------------------------- batch-norm


@jit
def bn_forward(z, rows, width, valid, weight, bias, rmean, rvar, count, training, momentum, eps,
               mean, invstd, y):
    """``y = (z - mean) * invstd * weight + bias`` per channel, statistics over (B, positions):
    the batch's (biased variance; running mean and unbiased running variance updated with
    ``momentum``, ``count`` incremented) in training, the running ones otherwise."""
    t = z.dtype.type
    nb, nc = z.shape[0], z.shape[1]
    n = nb * rows * valid
    m = t(momentum)
    for c in range(nc):
        if training:
            s = 0.0
            for b in range(nb):
                for r in range(rows):
                    for x in range(valid):
                        s += z[b, c, r * width + x]
            mu = t(s / n)
            v = 0.0
            for b in range(nb):
                for r in range(rows):
                    for x in range(valid):
                        e = z[b, c, r * width + x] - mu
                        v += e * e
            var = t(v / n)
            rmean[c] = t(1 - momentum) * rmean[c] + m * mu
            rvar[c] = t(1 - momentum) * rvar[c] + m * var * t(n / max(n - 1, 1))
        else:
            mu, var = rmean[c], rvar[c]
        inv = t(1.0 / math.sqrt(var + eps))
        mean[c], invstd[c] = mu, inv
        w, bb = weight[c], bias[c]
        for b in range(nb):
            for r in range(rows):
                for x in range(valid):
                    k = r * width + x
                    y[b, c, k] = (z[b, c, k] - mu) * inv * w + bb
    if training:
        count[0] += 1


@jit
def bn_backward(d, off, z, rows, width, valid, weight, mean, invstd, training, gw, gb):
    """``d`` (gradient of the output, ``off`` leading pads) becomes the gradient of ``z``, in
    place; ``gw, gb +=``. In training the batch statistics depend on every input."""
    t = z.dtype.type
    nb, nc = z.shape[0], z.shape[1]
    n = nb * rows * valid
    for c in range(nc):
        mu, inv = mean[c], invstd[c]
        sw, sb = 0.0, 0.0  # sums over up to B * 784 terms: in float64
        for b in range(nb):
            for r in range(rows):
                for x in range(valid):
                    k = r * width + x
                    g = d[b, c, off + k]
                    sw += g * ((z[b, c, k] - mu) * inv)
                    sb += g
        gw[c] += t(sw)
        gb[c] += t(sb)
        scale = weight[c] * inv
        mean_d, mean_dx = t(sb) / t(n), t(sw) / t(n)
        for b in range(nb):
            for r in range(rows):
                for x in range(valid):
                    k = r * width + x
                    g = d[b, c, off + k]
                    if training:
                        g = g - mean_d - ((z[b, c, k] - mu) * inv) * mean_dx
                    d[b, c, off + k] = g * scale


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


# ---------------------------------------------------------------- 2x2 pooling


@jit
def pool_forward(kind, y, width, size, out, arg):
    """``y (B, C, *)`` valid ``size x size`` maps -> ``out (B, C, (size/2)^2)``: the max (``arg``:
    the first maximal tap, row-major in the window, as PyTorch) or the mean of each window."""
    t = y.dtype.type
    half = size // 2
    for b in range(y.shape[0]):
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


@jit
def pool_backward(kind, d, arg, width, half, dx):
    """``d (B, C, half^2)`` -> ``dx (B, C, PAD + 2*half*width + PAD)`` (zeroed first): to the
    winning tap (max) or a quarter to each tap (average)."""
    t = d.dtype.type
    dx[:] = 0
    pad = (dx.shape[2] - 2 * half * width) // 2
    for b in range(d.shape[0]):
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
                    elif which[k] < 2:
                        top[2 * u + which[k]] = g[k]
                    else:
                        bot[2 * u + which[k] - 2] = g[k]


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
