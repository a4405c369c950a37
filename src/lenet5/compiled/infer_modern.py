"""The modern variant in eval mode, compiled for throughput: its test- and training-set
evaluations, as :mod:`.infer_1998` is for the 1998 network.

``c1 -> act -> pool -> c3 -> act -> pool -> c5 -> act -> f6 -> act -> head`` for a block of
:data:`.simd.REGISTER_BYTES` / itemsize images held in SIMD lanes (:func:`.simd.lane_block`),
with the eval-mode batch-norms folded into the layer before them (:func:`fold`: each output
channel's weights times ``weight / sqrt(running var + eps)``, its bias moved likewise), so a
layer is one register-blocked multiply-add loop and its activation. Dropout is off in eval
mode. Outputs agree with :func:`.kernels_modern.forward` in eval mode (and the NumPy engine)
to float32 rounding (tests).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import conv_lanes, inputs
from .blocks import MAX, RELU
from .jit import fast_jit, parallel_jit
from .kernels_modern import EPS, stat_views, views
from .layers import tanh
from .simd import REGISTER_BYTES, lane_block, lane_max4

CONV1 = lane_block(6, 2)  # six C1 maps, two positions of a row (each input read once)
CONV1_ONE = lane_block(1, 7)  # one map, a quarter row (the maps past a multiple of six)
POOL2 = lane_block(1, 14)  # an average-pooled row of S2
POOL4 = lane_block(1, 5)  # ... of S4
DENSE6 = lane_block(6, 1)  # six units of a linear layer
DENSE1 = lane_block(1, 1)  # one unit (the rest of a layer whose width is not a multiple of 6)

C1_TAPS = np.array([ky * 32 + kx for ky in range(5) for kx in range(5)], np.int64)
POOL2_TAPS = np.array([0, 1, 28, 29], np.int64)
POOL4_TAPS = np.array([0, 1, 10, 11], np.int64)


def fold(theta, offs, widths, stats, bn: bool, dtype) -> tuple[np.ndarray, ...]:
    """``(c1w, c1b, c3w, c3b, c5w, c5b, f6w, f6b, hw, hb)`` flat, with each eval-mode
    batch-norm folded into the convolution or linear layer before it."""
    P = views(theta, offs, widths)
    layers = ((P.c1w, P.c1b, P.n1w, P.n1b), (P.c3w, P.c3b, P.n3w, P.n3b),
              (P.c5w, P.c5b, P.n5w, P.n5b), (P.f6w, P.f6b, P.n6w, P.n6b))
    out = []
    for k, (w, b, nw, nb) in enumerate(layers):
        units = int(widths[k])
        w = w.astype(np.float64).reshape(units, -1)
        b = b.astype(np.float64) if b.shape[0] else np.zeros(units)
        if bn:
            mean, var = (a.astype(np.float64) for a in stat_views(stats, widths, k))
            s = nw.astype(np.float64) / np.sqrt(var + EPS)
            w, b = w * s[:, None], (b - mean) * s + nb
        out += [w, b]
    out += [P.hw, P.hb]
    return tuple(np.ascontiguousarray(a, dtype).reshape(-1) for a in out)


@fast_jit
def activate(kind, y):
    """ReLU or tanh in place over a flat array (:func:`.blocks.act_forward`)."""
    if kind == RELU:
        for i in range(y.shape[0]):
            y[i] = y[i] if y[i] > 0 else y.dtype.type(0)
    else:
        for i in range(y.shape[0]):
            y[i] = tanh(y[i])


@fast_jit
def max_pool(y, maps, size, out):
    """2x2 max-pooling of ``maps`` lanes maps ``size x size`` into ``out``."""
    half = size // 2
    for c in range(maps):
        for r in range(half):
            for u in range(half):
                i0 = (c * size + 2 * r) * size + 2 * u  # registers, as lane_block
                lane_max4(y, i0, i0 + 1, i0 + size, i0 + size + 1, out, (c * half + r) * half + u)


@fast_jit
def dense(x, weight, bias, taps, out, units, fan_in):
    """``out = weight (units, fan_in) @ x + bias`` over lanes, six units a call."""
    g = 0
    while g + 6 <= units:
        DENSE6(x, 0, 0, taps, 0, fan_in, weight, g * fan_in, fan_in, bias, g, out, g, 1)
        g += 6
    while g < units:
        DENSE1(x, 0, 0, taps, 0, fan_in, weight, g * fan_in, 0, bias, g, out, g, 1)
        g += 1


@fast_jit
def evaluate(c1w, c1b, c3w, c3b, c5w, c5b, f6w, f6b, hw, hb, act, pool, images, idx, divisor,
             shift, scale, out):
    """``out (len(idx), 10)``: eval-mode logits of patterns ``images[idx]`` (raw pixels)."""
    t = c1w.dtype
    L = REGISTER_BYTES // c1w.itemsize  # images per block, one per lane
    w1, w3, w5, w6 = c1b.shape[0], c3b.shape[0], c5b.shape[0], f6b.shape[0]
    tmp = np.zeros(inputs.TMP_SIZE, t)
    one = np.zeros(32 * 32, t)
    x = np.zeros(32 * 32 * L, t)
    y1 = np.zeros(w1 * 28 * 28 * L, t)
    y2 = np.zeros(w1 * 14 * 14 * L, t)
    y3 = np.zeros(w3 * 10 * 10 * L, t)
    y4 = np.zeros(w3 * 5 * 5 * L, t)
    y5 = np.zeros(w5 * L, t)
    y6 = np.zeros(w6 * L, t)
    y7 = np.zeros(10 * L, t)
    quarter = np.full(4 * max(w1, w3), 0.25, t)  # average pooling's taps
    zero = np.zeros(max(w1, w3), t)
    taps = np.arange(max(w3 * 25, w5, w6), dtype=np.int64)  # a linear layer reads x in order
    c3_taps = conv_lanes.forward_taps(w1)
    n = idx.shape[0]
    for start in range(0, n, L):
        m = min(L, n - start)
        inputs.load_lanes(images, idx[start:], m, divisor, shift, scale, tmp, one, x)
        c = 0  # C1: 5x5 kernels over the 32x32 field
        while c + 6 <= w1:
            for y in range(28):
                for u in range(0, 28, 2):
                    CONV1(x, y * 32 + u, 1, C1_TAPS, 0, 25, c1w, c * 25, 25, c1b, c, y1,
                          (c * 28 + y) * 28 + u, 28 * 28)
            c += 6
        for k in range(c, w1):
            for y in range(28):
                for u in range(0, 28, 7):
                    CONV1_ONE(x, y * 32 + u, 1, C1_TAPS, 0, 25, c1w, k * 25, 0, c1b, k, y1,
                              (k * 28 + y) * 28 + u, 0)
        activate(act, y1)
        if pool == MAX:
            max_pool(y1, w1, 28, y2)
        else:
            for c in range(w1):
                for y in range(14):
                    POOL2(y1, (c * 28 + 2 * y) * 28, 2, POOL2_TAPS, 0, 4, quarter, c * 4, 0,
                          zero, c, y2, (c * 14 + y) * 14, 0)
        conv_lanes.forward_block(y2, c3_taps, c3w, c3b, y3, w1, w3)  # C3: every S2 map
        activate(act, y3)
        if pool == MAX:
            max_pool(y3, w3, 10, y4)
        else:
            for c in range(w3):
                for y in range(5):
                    POOL4(y3, (c * 10 + 2 * y) * 10, 2, POOL4_TAPS, 0, 4, quarter, c * 4, 0,
                          zero, c, y4, (c * 5 + y) * 5, 0)
        dense(y4, c5w, c5b, taps, y5, w5, w3 * 25)
        activate(act, y5)
        dense(y5, f6w, f6b, taps, y6, w6, w5)
        activate(act, y6)
        dense(y6, hw, hb, taps, y7, 10, w6)
        for b in range(m):
            for i in range(10):
                out[start + b, i] = y7[i * L + b]



@parallel_jit
def evaluate_parallel(c1w, c1b, c3w, c3b, c5w, c5b, f6w, f6b, hw, hb, act, pool, images, idx,
                      divisor, shift, scale, out, parts):
    """:func:`evaluate` with the patterns cut into ``parts`` runs of whole blocks, in parallel
    (each pattern's outputs are its own: the same whatever ``parts``)."""
    for t in prange(parts):
        lo, hi = inputs.block_run(idx.shape[0], REGISTER_BYTES // c1w.itemsize, parts, t)
        evaluate(c1w, c1b, c3w, c3b, c5w, c5b, f6w, f6b, hw, hb, act, pool, images,
                 idx[lo:hi], divisor, shift, scale, out[lo:hi])
