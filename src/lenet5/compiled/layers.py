"""Per-pattern layers of the compiled engine: forward, backward and Gauss-Newton side by side.

The same layers as :mod:`lenet5.scratch.layers` (paper Section II-B, Appendix C), written as
loops over one pattern for Numba. Maps are 2-D ``(C, H*W)`` arrays, flat per channel.

A 5x5 convolution writes its output in the *wide* layout ``(Cout, Ho*W)``: output row ``y``
starts at ``y*W``, as in the input, so output ``q`` reads inputs ``q + i*W + j`` and every tap
is one long contiguous multiply-add over ``L = (Ho-1)*W + Wo`` values, which LLVM vectorises.
The last ``W - Wo`` columns of each row are junk: forward they are never read, backward their
gradient is kept at zero. Gradients of a convolution's output carry ``PAD`` zeros on both sides
(``(Cout, PAD + Ho*W + PAD)``) so that the input gradient is one fused loop per kernel row.

Parameter gradients and curvatures are *added* into their arrays (a batch sums its patterns).
"""

from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

from .jit import jit
from .simd import vdot, vdot5, vdot5x2, vsum

K = 5  # every LeNet-5 convolution is 5x5
PAD = K - 1  # zeros on each side of a convolution-output gradient


# ---------------------------------------------------------------- tanh


def tanh(x):
    """``tanh`` for one scalar; in float32 a vectorisable rational approximation (below)."""
    return math.tanh(x)


# Eigen's float32 tanh: odd degree-13 / even degree-6 rational on [-7.9053, 7.9053], error
# below 4e-7 relative (measured against float64 tanh).
_CLAMP = np.float32(7.90531110763549805)
_ALPHA = tuple(np.float32(v) for v in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_BETA = tuple(np.float32(v) for v in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06))
A1, A3, A5, A7, A9, A11, A13 = _ALPHA
B0, B2, B4, B6 = _BETA


@overload(tanh, inline="always")
def _tanh(x):
    if x == types.float32:
        def tanh32(x):  # Horner's scheme: no power of x below c^2 (Estrin's c^8 goes denormal)
            c = min(max(x, -_CLAMP), _CLAMP)
            c2 = c * c
            p = ((((((A13 * c2 + A11) * c2 + A9) * c2 + A7) * c2 + A5) * c2 + A3) * c2 + A1) * c
            q = ((B6 * c2 + B4) * c2 + B2) * c2 + B0
            return p / q
        return tanh32
    return lambda x: math.tanh(x)


@jit
def tanh_forward(x, a, s):
    """``x = a * tanh(s * x)`` in place over a flat array (Appendix A: a = 1.7159, s = 2/3)."""
    t = x.dtype.type
    a, s = t(a), t(s)
    for i in range(x.shape[0]):
        x[i] = tanh(x[i] * s) * a


@jit
def tanh_backward(d, y, a, s, square):
    """``d *= f'(a)``, or ``d *= f'(a)**2`` (Gauss-Newton), with f'(a) = (s/a)(a^2 - y^2)."""
    t = y.dtype.type
    aa, k = t(a * a), t(-s / a)  # as the NumPy layer: (y^2 - a^2) * (-s/a)
    if square:
        for i in range(d.shape[0]):
            f = (y[i] * y[i] - aa) * k
            d[i] *= f * f
    else:
        for i in range(d.shape[0]):
            d[i] *= (y[i] * y[i] - aa) * k


# ---------------------------------------------------------------- 5x5 convolutions (C1, C3)
# A convolution is a list of kernels ("pairs"): kernel p reads input map pair_in[p] into output
# map pair_out[p] (all Cout*Cin pairs for a dense convolution, the 60 of Table I for C3).
# ``plan`` (from :func:`pair_plan`) takes them two at a time when they read the same input map,
# so each load of an input row (forward, weight gradient) or of an input-gradient row (backward)
# serves two kernels: LLVM keeps both kernels' weights in registers.


@jit
def pair_plan(pair_in):
    """``(M, 2)`` pair indices, two pairs reading the same input map per row (-1: alone)."""
    n = pair_in.shape[0]
    plan = np.full((n, 2), -1, np.int64)
    m = 0
    for c in range(pair_in.max() + 1 if n else 0):
        pending = -1
        for p in range(n):
            if pair_in[p] != c:
                continue
            if pending < 0:
                pending = p
            else:
                plan[m, 0], plan[m, 1] = pending, p
                m += 1
                pending = -1
        if pending >= 0:
            plan[m, 0] = pending
            m += 1
    return plan[:m]


@jit
def _rows_forward(src, width, w, dst, n):
    for i in range(K):
        w0, w1, w2, w3, w4 = w[i * K], w[i * K + 1], w[i * K + 2], w[i * K + 3], w[i * K + 4]
        s = src[i * width:]
        for q in range(n):
            dst[q] += w0 * s[q] + w1 * s[q + 1] + w2 * s[q + 2] + w3 * s[q + 3] + w4 * s[q + 4]


@jit
def _rows_forward2(src, width, w, v, dst, dst2, n):
    for i in range(K):
        w0, w1, w2, w3, w4 = w[i * K], w[i * K + 1], w[i * K + 2], w[i * K + 3], w[i * K + 4]
        v0, v1, v2, v3, v4 = v[i * K], v[i * K + 1], v[i * K + 2], v[i * K + 3], v[i * K + 4]
        s = src[i * width:]
        for q in range(n):
            x0, x1, x2, x3, x4 = s[q], s[q + 1], s[q + 2], s[q + 3], s[q + 4]
            dst[q] += w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3 + w4 * x4
            dst2[q] += v0 * x0 + v1 * x1 + v2 * x2 + v3 * x3 + v4 * x4


@jit
def conv_forward(x, width, weight, bias, pair_out, pair_in, plan, out):
    """``x (Cin, H*W) -> out (Cout, Ho*W)`` (wide); ``weight (P, 25)``, ``bias`` may be empty."""
    ho = x.shape[1] // width - K + 1
    n = (ho - 1) * width + width - K + 1
    for o in range(out.shape[0]):
        b = bias[o] if bias.shape[0] else out.dtype.type(0)
        row = out[o]
        for q in range(row.shape[0]):
            row[q] = b
    for m in range(plan.shape[0]):
        p, p2 = plan[m, 0], plan[m, 1]
        if p2 < 0:
            _rows_forward(x[pair_in[p]], width, weight[p], out[pair_out[p]], n)
        else:
            _rows_forward2(x[pair_in[p]], width, weight[p], weight[p2], out[pair_out[p]],
                           out[pair_out[p2]], n)


@jit
def _rows_backward(src, src2, w, v, dst, width, n, two):
    """``dst`` (an input map's gradient) += the kernel rows applied backwards to ``src`` (and
    to ``src2`` with ``v`` when ``two``): input r gets sum_j w_j d[r - j], d padded by PAD."""
    for i in range(K):
        w0, w1, w2, w3, w4 = w[i * K], w[i * K + 1], w[i * K + 2], w[i * K + 3], w[i * K + 4]
        t = dst[i * width:]
        if two:
            v0, v1, v2, v3, v4 = v[i * K], v[i * K + 1], v[i * K + 2], v[i * K + 3], v[i * K + 4]
            for r in range(n + K - 1):
                t[r] += ((w0 * src[r + 4] + w1 * src[r + 3] + w2 * src[r + 2] + w3 * src[r + 1]
                          + w4 * src[r])
                         + (v0 * src2[r + 4] + v1 * src2[r + 3] + v2 * src2[r + 2]
                            + v3 * src2[r + 1] + v4 * src2[r]))
        else:
            for r in range(n + K - 1):
                t[r] += (w0 * src[r + 4] + w1 * src[r + 3] + w2 * src[r + 2] + w3 * src[r + 1]
                         + w4 * src[r])


@jit
def conv_backward(x, width, weight, d, pair_out, pair_in, plan, gw, gb, dx):
    """From ``d (Cout, PAD + Ho*W + PAD)``, dE/d(output) with zero junk: ``gw (P, 25) +=``,
    ``gb (Cout) +=`` (may be empty), and ``dx (Cin, H*W) +=`` unless ``dx`` is empty.

    With ``x**2``, ``weight**2`` and d2E/d(output)^2 the same code is the Gauss-Newton pass
    (``h = d2 @ (cols**2).T``, ``d2x = col2im((W**2).T @ d2)``, as the NumPy layer)."""
    ho = x.shape[1] // width - K + 1
    n = (ho - 1) * width + width - K + 1
    for m in range(plan.shape[0]):
        p, p2 = plan[m, 0], plan[m, 1]
        src = x[pair_in[p]]
        for i in range(K):
            if p2 < 0:
                s0, s1, s2, s3, s4 = vdot5(d[pair_out[p]], PAD, src, i * width, n)
            else:
                (s0, s1, s2, s3, s4, u0, u1, u2, u3, u4) = vdot5x2(
                    d[pair_out[p]], d[pair_out[p2]], PAD, src, i * width, n)
                g = gw[p2]
                g[i * K] += u0
                g[i * K + 1] += u1
                g[i * K + 2] += u2
                g[i * K + 3] += u3
                g[i * K + 4] += u4
            g = gw[p]
            g[i * K] += s0
            g[i * K + 1] += s1
            g[i * K + 2] += s2
            g[i * K + 3] += s3
            g[i * K + 4] += s4
    if gb.shape[0]:
        for o in range(d.shape[0]):
            gb[o] += vsum(d[o], PAD, n)
    if dx.shape[0] == 0:
        return
    for m in range(plan.shape[0]):
        p, p2 = plan[m, 0], plan[m, 1]
        two = p2 >= 0
        q = p2 if two else p
        _rows_backward(d[pair_out[p]], d[pair_out[q]], weight[p], weight[q], dx[pair_in[p]],
                       width, n, two)


@jit
def square(x, out):
    """``out = x * x`` over flat arrays."""
    for i in range(x.shape[0]):
        out[i] = x[i] * x[i]


# ---------------------------------------------------------------- trainable subsampling (S2, S4)


@jit
def subsample_forward(x, width, size, coef, bias, tap, pooled, out):
    """``x (C, *)`` rows of ``width`` holding valid ``size x size`` maps -> ``out (C, (size/2)^2)``:
    coef * tap * (2x2 sum) + bias; ``pooled`` keeps tap * (2x2 sum) for the backward pass."""
    t = x.dtype.type
    tap = t(tap)
    half = size // 2
    for c in range(x.shape[0]):
        for y in range(half):
            top, bot = x[c, 2 * y * width:], x[c, (2 * y + 1) * width:]
            for u in range(half):
                s = (top[2 * u] + top[2 * u + 1]) + (bot[2 * u] + bot[2 * u + 1])
                pooled[c, y * half + u] = s * tap
                out[c, y * half + u] = pooled[c, y * half + u] * coef[c] + bias[c]


@jit
def subsample_backward(d, pooled, coef, tap, gw, gb, dx, width, half):
    """From ``d (C, half*half)``: ``gw, gb +=``; ``dx (C, PAD + 2*half*width + PAD)`` (wide, junk
    and pads zero) = d * coef * tap spread over each 2x2 window."""
    t = d.dtype.type
    dx[:] = 0
    for c in range(d.shape[0]):
        sw, sb = t(0), t(0)
        k = coef[c] * t(tap)
        for y in range(half):
            top, bot = dx[c, PAD + 2 * y * width:], dx[c, PAD + (2 * y + 1) * width:]
            for u in range(half):
                g = d[c, y * half + u]
                sw += g * pooled[c, y * half + u]
                sb += g
                v = g * k
                top[2 * u] = v
                top[2 * u + 1] = v
                bot[2 * u] = v
                bot[2 * u + 1] = v
        gw[c] += sw
        gb[c] += sb


@jit
def subsample_gn(d2, x, width, half, coef, tap, hw, hb, d2x):
    """Gauss-Newton pass: each output has 4 connections of weight tap * coef to its window."""
    t = d2.dtype.type
    tap2 = t(tap * tap)
    d2x[:] = 0
    for c in range(d2.shape[0]):
        sw, sb = t(0), t(0)
        k = coef[c] * t(tap)
        k = k * k
        for y in range(half):
            top, bot = x[c, 2 * y * width:], x[c, (2 * y + 1) * width:]
            gtop, gbot = d2x[c, PAD + 2 * y * width:], d2x[c, PAD + (2 * y + 1) * width:]
            for u in range(half):
                g = d2[c, y * half + u]
                a, b, e, f = top[2 * u], top[2 * u + 1], bot[2 * u], bot[2 * u + 1]
                sw += g * ((a * a + b * b) + (e * e + f * f))
                sb += g
                v = g * k
                gtop[2 * u] = v
                gtop[2 * u + 1] = v
                gbot[2 * u] = v
                gbot[2 * u + 1] = v
        hw[c] += sw * tap2
        hb[c] += sb


# ---------------------------------------------------------------- fully connected (C5, F6, head)


@jit
def linear_forward(weight, bias, x, out):
    """``out = weight @ x + bias``; ``weight (Fout, Fin)``, ``bias`` may be empty."""
    for o in range(weight.shape[0]):
        s = vdot(weight[o], 0, x, 0, x.shape[0])
        out[o] = s + bias[o] if bias.shape[0] else s


@jit
def linear_backward(weight, x, d, gw, gb, dx):
    """``gw += outer(d, x)``, ``gb += d`` (may be empty), ``dx = weight.T @ d`` (if not empty)."""
    for o in range(weight.shape[0]):
        g, row, do = gw[o], weight[o], d[o]
        for k in range(x.shape[0]):
            g[k] += do * x[k]
        if gb.shape[0]:
            gb[o] += do
    if dx.shape[0]:
        dx[:] = 0
        for o in range(weight.shape[0]):
            row, do = weight[o], d[o]
            for k in range(dx.shape[0]):
                dx[k] += row[k] * do


@jit
def linear_backward_step(weight, x, d, inv, lr, gb, dx):
    """:func:`linear_backward` fused with the update of ``weight`` at batch 1: ``dx`` from the
    old weights, then ``weight -= (lr * inv) * outer(d, x)`` (SDLM) or, when ``inv`` is empty,
    ``weight -= lr * outer(d, x)`` (SGD), the NumPy rules' order of operations. ``gb +=`` d.
    One sweep over the weights instead of three (gradient, input gradient, update)."""
    t = weight.dtype.type
    lr = t(lr)
    dx[:] = 0
    for o in range(weight.shape[0]):
        row, do = weight[o], d[o]
        if inv.shape[0]:
            scale = inv[o]
            for k in range(x.shape[0]):
                dx[k] += row[k] * do
                row[k] -= lr * scale[k] * (do * x[k])
        else:
            for k in range(x.shape[0]):
                dx[k] += row[k] * do
                row[k] -= lr * (do * x[k])
        gb[o] += do


@jit
def linear_gn(weight, x, d2, hw, hb, d2x):
    """``hw += outer(d2, x**2)``, ``hb += d2``, ``d2x = (weight**2).T @ d2`` (if not empty)."""
    for o in range(weight.shape[0]):
        h, do = hw[o], d2[o]
        for k in range(x.shape[0]):
            h[k] += do * (x[k] * x[k])
        hb[o] += do
    if d2x.shape[0]:
        d2x[:] = 0
        for o in range(weight.shape[0]):
            row, do = weight[o], d2[o]
            for k in range(d2x.shape[0]):
                d2x[k] += (row[k] * row[k]) * do


# ---------------------------------------------------------------- the Euclidean RBF head


@jit
def rbf_forward(x, prototypes, out):
    """``out[i] = sum_j (x_j - w_ij)^2`` against the fixed ``(10, 84)`` prototypes (Fig. 3)."""
    for i in range(prototypes.shape[0]):
        s = x.dtype.type(0)
        for j in range(x.shape[0]):
            e = x[j] - prototypes[i, j]
            s += e * e
        out[i] = s


@jit
def rbf_backward(x, prototypes, dout, dx):
    """``dx_j = 2 sum_i dout_i (x_j - w_ij)``."""
    t = x.dtype.type
    for j in range(x.shape[0]):
        s = t(0)
        for i in range(prototypes.shape[0]):
            s += dout[i] * (x[j] - prototypes[i, j])
        dx[j] = t(2) * s
